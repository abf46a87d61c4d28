"""torch <-> Lava layout, in one place (no Lava import).

Lava tensors are ``(W, H, C)`` (torch's ``(C, H, W)`` reversed) and 1-D vectors stay as they are;
the same reversal maps Lava back to torch. Conv kernels become ``(C_out, kW, kH, C_in)`` with both
spatial axes flipped (Lava convolves, torch cross-correlates), and 2-D conv parameters (stride,
padding, dilation) are given ``(x, y)``. A Dense after a flattened ``(W, H, C)`` layer gets its
columns permuted to torch's flatten order. Lava 0.10's Conv models keep ``groups`` (and kernel,
stride, padding, dilation) in int8: a conv with more than 127 groups is emitted with fewer groups and
block-diagonal weights (``regroup_conv_weight``; 128 groups would wrap to -128 and output zeros).

Running a dataset, samples go back to back through one runtime (``source_data``): ``T`` steps each,
plus ``depth`` zero steps at the end so the last sample reaches the output layer.
"""
from __future__ import annotations

import numpy as np

from neurocomp.errors import UnsupportedLayer

LAVA_CONV_PARAM_MAX = 127   # Lava 0.10's Conv models hold groups, kernel, stride, padding, dilation as int8


def lava_shape(shape) -> tuple:
    """A torch per-sample shape ``(C, H, W)`` as Lava's ``(W, H, C)``; 1-D shapes stay."""
    return tuple(reversed(tuple(shape))) if len(shape) == 3 else tuple(shape)


def lava_xy(pair) -> tuple:
    """A torch ``(y, x)`` conv parameter (stride, padding, dilation) as Lava's ``(x, y)``."""
    return tuple(reversed(tuple(pair)))


def _reverse_last3(a: np.ndarray, lead: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim - lead != 3:
        return a
    return np.transpose(a, tuple(range(lead)) + (lead + 2, lead + 1, lead))


def to_lava_layout(a, lead: int = 0) -> np.ndarray:
    """Array in torch layout ``(*lead axes, C, H, W)`` -> Lava layout ``(*lead axes, W, H, C)``;
    per-neuron vectors (one axis after the ``lead`` ones) stay as they are."""
    return _reverse_last3(a, lead)


def to_torch_layout(a, lead: int = 0) -> np.ndarray:
    """Array in Lava layout ``(*lead axes, W, H, C)`` -> torch layout ``(*lead axes, C, H, W)``."""
    return _reverse_last3(a, lead)


def source_data(x: np.ndarray, depth: int) -> np.ndarray:
    """Samples ``x`` ``[T, B, *torch_shape]`` back to back as a Lava source's data ``(*lava_shape, steps)``,
    ``steps = B*T + depth`` (the last ``depth`` steps are zeros)."""
    x = np.asarray(x)
    T, B = x.shape[:2]
    frames = np.swapaxes(x, 0, 1).reshape((B * T,) + x.shape[2:])        # sample b's step t at b*T + t
    frames = np.concatenate([frames, np.zeros((depth,) + x.shape[2:], frames.dtype)], axis=0)
    return np.moveaxis(to_lava_layout(frames, lead=1), 0, -1)


def conv_weight_to_lava(w: np.ndarray) -> np.ndarray:
    """torch (C_out, C_in, kH, kW) cross-correlation -> Lava (C_out, kW, kH, C_in) convolution."""
    return np.ascontiguousarray(np.transpose(w[:, :, ::-1, ::-1], (0, 3, 2, 1)))


def regroup_conv_weight(w: np.ndarray, groups: int, limit: int = LAVA_CONV_PARAM_MAX):
    """A grouped conv weight (torch layout ``(C_out, C_in/groups, kH, kW)``) as the same convolution
    with at most ``limit`` groups; returns ``(weight, groups')``.

    Lava 0.10's ``PyConvModelFixed``/``Float`` store ``groups`` as ``np.int8``, so 128 groups become
    -128 and the conv outputs zeros (200 wraps to -56, 256 to 0). ``groups'`` is the largest divisor
    of ``groups`` within ``limit``; each new group merges ``groups / groups'`` old groups with a
    block-diagonal weight (zeros between them), which computes the identical integer sums."""
    groups = int(groups)
    if groups <= limit:
        return w, groups
    g2 = max(d for d in range(1, limit + 1) if groups % d == 0)
    m = groups // g2                        # old groups per new group
    co, ci = w.shape[0], w.shape[1]         # ci: input channels per old group
    co_g = co // groups
    out = np.zeros((co, ci * m) + tuple(w.shape[2:]), dtype=w.dtype)
    for o in range(co):
        j = (o // co_g) % m                 # position of o's old group inside its new group
        out[o, j * ci:(j + 1) * ci] = w[o]
    return out, g2


def check_conv_params(node, kernel, stride, padding, dilation) -> None:
    """Refuse conv geometry Lava's int8 Conv parameters would wrap (one-line error)."""
    for field, vals in (("kernel", kernel), ("stride", stride), ("padding", padding), ("dilation", dilation)):
        if max(int(v) for v in vals) > LAVA_CONV_PARAM_MAX:
            raise UnsupportedLayer(f"{field} {tuple(int(v) for v in vals)} exceeds Lava's int8 Conv parameter "
                                   f"range (<= {LAVA_CONV_PARAM_MAX})", where=f"layer '{node.name}'",
                                   hint=f"use a {field} of at most {LAVA_CONV_PARAM_MAX}")


def flatten_permutation(shape) -> np.ndarray:
    """For each position of Lava's flattened (W, H, C) vector, the torch (C, H, W) flat index."""
    C, H, W = shape
    return np.arange(C * H * W).reshape(C, H, W).transpose(2, 1, 0).ravel()
