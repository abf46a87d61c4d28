"""Load user event frames from ``.npy`` / ``.npz`` files as time-major input spikes.

Accepted contents:

- ``.npy``: one array, either one sample ``[T, C, H, W]`` or a batch ``[N, T, C, H, W]``
  (``layout="NT"``, the default for 5-D arrays) or ``[T, N, C, H, W]`` (``layout="TN"``).
- ``.npz``: the frames under ``x`` (or ``frames`` / ``events``), optional labels under ``y``
  (or ``labels``), same shapes as above.

Frames may hold event counts or booleans; with ``binarize=True`` (default) any positive count
becomes one spike, as the compiler expects binary (0/1) input spikes. Negative values are
rejected (store polarities as separate channels). The result is always float32
``[T, N, C, H, W]`` plus labels (int64 ``[N]``) or ``None``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FRAME_KEYS = ("x", "frames", "events")
LABEL_KEYS = ("y", "labels")


def load_event_frames(path, layout: str = "NT", binarize: bool = True, timesteps: int | None = None,
                      input_shape=None):
    """Return ``(x float32 [T, N, C, H, W], y int64 [N] or None)`` from a ``.npy``/``.npz`` file.

    ``timesteps`` and ``input_shape`` (``(C, H, W)``), when given, are checked against the data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    y = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            key = next((k for k in FRAME_KEYS if k in f.files), None)
            if key is None:
                raise ValueError(f"{path}: no frames found (expected one of the keys {FRAME_KEYS}, "
                                 f"found {f.files})")
            x = f[key]
            lkey = next((k for k in LABEL_KEYS if k in f.files), None)
            if lkey is not None:
                y = np.asarray(f[lkey]).astype(np.int64).reshape(-1)
    elif path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
    else:
        raise ValueError(f"{path}: expected a .npy or .npz file")

    x = np.asarray(x)
    if x.ndim == 4:
        x = x[:, None]                       # one sample: [T, 1, C, H, W]
    elif x.ndim == 5:
        if layout == "NT":
            x = x.transpose(1, 0, 2, 3, 4)
        elif layout != "TN":
            raise ValueError(f"layout must be 'NT' or 'TN', not {layout!r}")
    else:
        raise ValueError(f"{path}: frames must be [T, C, H, W] or a batch of them (5-D), "
                         f"got shape {x.shape}")
    if x.dtype == bool:
        x = x.astype(np.uint8)
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{path}: frames must be numeric, got {x.dtype}")
    if (x < 0).any():
        raise ValueError(f"{path}: negative values; store ON and OFF events as separate channels")
    x = (x > 0) if binarize else x
    x = x.astype(np.float32)
    if not binarize and not np.isin(x, (0.0, 1.0)).all():
        raise ValueError(f"{path}: frames are not binary; pass binarize=True")
    if y is not None and len(y) != x.shape[1]:
        raise ValueError(f"{path}: {len(y)} labels for {x.shape[1]} samples")
    if timesteps is not None and x.shape[0] != timesteps:
        raise ValueError(f"{path}: {x.shape[0]} time steps, the model expects {timesteps}")
    if input_shape is not None and tuple(x.shape[2:]) != tuple(input_shape):
        raise ValueError(f"{path}: frames of shape {tuple(x.shape[2:])}, the model expects "
                         f"{tuple(input_shape)}")
    return x, y
