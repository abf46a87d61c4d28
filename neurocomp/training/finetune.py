"""Fine-tuning a compiled artifact to win back what static folding and 8-bit quantization lost.

``neurocomp finetune ARTIFACT -o NEW_ARTIFACT`` (API: :func:`finetune`):

1. **The network that runs on the chip, as a torch model.** The artifact's float IR goes through
   the same folding passes as ``neurocomp compile`` (BatchNorm, static attention, average pooling;
   everything but ``quantize``) and the folded graph is rebuilt as a SpikingJelly ``Sequential``
   (:func:`graph_to_module`): one Conv2d/Linear per neuron layer with BatchNorm and pooling
   already folded in (MA-SNN's Conv→AvgPool becomes one stride-2 conv, PFA's AvgPool→Conv one
   stride-2 conv of a k·K kernel), MaxPool over spikes, LIF / MALIF neurons, and the gain tables as
   ``StaticMap`` modules: a gain on the input current (MA-SNN: ``[T, C, H, W]``, with MA's ReLU)
   sits right before its neuron, a per-step gain on spikes (TCJA, PFA: ``g[t]`` of the rank-1
   fold, whose other factor ``B`` is already in the next layer's weights, or for PFA's spatial
   ``B`` a fixed ``StaticMap`` of the quantizer's graded payload values) right before the
   consuming synapse. This model compiles back to the same folded graph: BN is **folded** (not
   frozen) and the rank-1 spike maps are exact by construction, so no folding error is left.
2. **Quantization-aware training** on the model's training split, with straight-through
   estimators that reproduce ``neurocomp.passes.quantize`` layer by layer: the scale
   ``s = (vth + 1/64) / theta`` with ``vth`` chosen by the quantizer's own rule
   (``neurocomp.fixedpoint.choose_vth``, recomputed from the current weights at every step), weights
   ``round(s * w_eff)`` clipped to ``weight_bits`` (``w_eff = w / tau`` for decay-input LIFs),
   biases as the 13-bit mantissa / 3-bit exponent the quantizer stores, gains as the quantizer's
   ``mantissa / 2**shift``. The forward pass uses the dequantized values, the backward pass the
   identity. ``--weights`` (default) trains weights, biases and gains; ``--no-weights`` only the
   gain tables (static attention models). Spike gains are kept at mean 1 over time (the rank-1
   fold's normalisation), gains are kept non-negative.
   Training (:func:`train_qat`): Adam with cosine annealing; a stratified ``--val-fraction`` of the
   training split is held out (:func:`split_train_val`) and the epoch with the best emulated
   fixed-point validation accuracy is kept (``--select best``; the test split is never used to
   choose); ``--distill`` adds an MSE between the output firing rates and those of the original
   float model with its per-sample attention (the teacher, :func:`load_teacher`); ``--ema`` keeps
   an exponential moving average of the trained parameters, used for validation and the result;
   ``--augment`` (event data) transposes / shifts the training recordings (:func:`augment_events`).
3. The fine-tuned model is saved as a neurocomp checkpoint and compiled with
   :func:`neurocomp.api.compile` into ``NEW_ARTIFACT``; its manifest records ``finetune``
   (accuracies before and after on the full test split with the reference simulator, the recipe,
   the kept epoch and its validation accuracy, what was trained, per-epoch metrics) and keeps the
   source's ``attention`` block.

Not emulated: Loihi's truncations of the voltage decay and of the gain product (sub-LSB of a
voltage that counts in units of ``1/(64 s)``), 24-bit wrap (recorded by the quantizer).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurocomp import fixedpoint as fx
from neurocomp.training._finetune_defaults import DEFAULT_DISTILL, DEFAULT_EMA, DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_VAL_FRACTION
from neurocomp.errors import BadInput, UnsupportedLayer


# ---- the folded graph as a torch model ----------------------------------------------------------

def folded_graph(float_graph, attention: str = "static"):
    """The float IR after every pass of :func:`neurocomp.passes.pipeline.lower` except ``quantize``."""
    from neurocomp.passes import pipeline
    return pipeline.fold(float_graph, attention=attention)


def _lif(node, surrogate_alpha: float = 2.0):
    from spikingjelly.activation_based import neuron, surrogate
    kw = dict(v_threshold=float(node.v_threshold), v_reset=None if node.v_reset is None else float(node.v_reset),
              surrogate_function=surrogate.ATan(alpha=surrogate_alpha), detach_reset=True,
              step_mode="m", backend="torch")
    if node.tau is None:
        return neuron.IFNode(**kw)
    return neuron.LIFNode(tau=float(node.tau), decay_input=bool(node.decay_input), **kw)


def graph_to_module(graph, lens: float = 0.25):
    """Rebuild a folded float IR graph as a SpikingJelly ``nn.Sequential``.

    Returns ``(model, layers)``; ``layers`` lists, per neuron layer, the indices (in ``model``) of
    its synapse, its neuron and its gain ``StaticMap`` (or None), the gain kind and the quantizer's
    inputs (``theta``, ``gain`` = 1/tau for decay-input LIFs). Surrogates: ATan(2) for LIF (the
    zoo's), MA's rectangle with ``lens`` for MALIF (the IR does not store surrogates)."""
    from spikingjelly.activation_based import layer
    from neurocomp.ir import Conv2d, Dense, Flatten, GradedSpikes, Input, LIF, Linear, MALIF, SumPool2d, Threshold
    from neurocomp.nn import MALIFNode, StaticMap
    T = int(graph.meta["timesteps"])
    nodes = list(graph.nodes)
    mods, layers, syn_at = [], [], None
    flat = False          # the torch tensor is already 1-D (after a Dense rebuilt as Flatten + Linear)
    i = 0
    while i < len(nodes):
        n = nodes[i]
        where = f"layer '{n.name}'"
        if isinstance(n, Input):
            pass
        elif isinstance(n, Conv2d):
            if flat:
                raise UnsupportedLayer("a convolution after an unrolled (Dense) layer cannot be rebuilt", where=where)
            m = layer.Conv2d(n.in_shape[0], n.weight.shape[0], tuple(n.weight.shape[2:]), stride=tuple(n.stride),
                             padding=tuple(n.padding), dilation=tuple(n.dilation), groups=int(n.groups),
                             bias=n.bias is not None, step_mode="m")
            _set(m, n)
            syn_at, syn_node = len(mods), n
            mods.append(m)
        elif isinstance(n, (Linear, Dense)):
            if isinstance(n, Dense) and len(n.in_shape) > 1 and not flat:
                mods.append(layer.Flatten(step_mode="m"))     # a Dense (unrolled conv) = Flatten + Linear
            flat = flat or isinstance(n, Dense)
            m = layer.Linear(n.weight.shape[1], n.weight.shape[0], bias=n.bias is not None, step_mode="m")
            _set(m, n)
            syn_at, syn_node = len(mods), n
            mods.append(m)
        elif isinstance(n, GradedSpikes):      # payload factor B: a fixed StaticMap, as the quantizer rounds it
            got = fx.quantize_payload(n.scale)
            if got is None:
                raise UnsupportedLayer("graded spike payloads must be non-negative", where=where)
            b = np.broadcast_to(got[0] / float(1 << got[1]), (T,) + tuple(n.out_shape)).astype(np.float32)
            sm = StaticMap(shape=list(b.shape), source="finetune:payload")
            sm.map.copy_(torch.as_tensor(b))
            mods.append(sm)
        elif isinstance(n, Flatten):
            if not flat:
                mods.append(layer.Flatten(step_mode="m"))
            flat = True
        elif isinstance(n, SumPool2d):
            if flat:
                raise UnsupportedLayer("pooling after an unrolled (Dense) layer cannot be rebuilt", where=where)
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            if not (isinstance(nxt, Threshold) and float(nxt.threshold) == 0.0):
                raise UnsupportedLayer("sum pooling that is not a MaxPool over spikes cannot be fine-tuned",
                                       where=where)
            mods.append(layer.MaxPool2d(tuple(n.kernel), tuple(n.stride), tuple(n.padding), step_mode="m"))
            i += 2
            continue
        elif isinstance(n, (LIF, MALIF)):
            if syn_at is None:
                raise UnsupportedLayer("neuron without a synapse in front", where=where)
            gain_at, gain_kind, theta, w_gain = None, None, None, 1.0
            G = getattr(n, "input_gain", None)
            if G is not None:
                G = np.asarray(G, np.float32)
                if n.gain_on_bias:             # current map: StaticMap right before the neuron
                    gain_at, gain_kind = len(mods), "current"
                    sm = StaticMap(shape=list(G.shape), rectify=bool(n.rectify_input), source="finetune:current")
                    sm.map.copy_(torch.as_tensor(G))
                    mods.append(sm)
                else:                          # per-step spike gain g[t]: StaticMap before the synapse
                    rows = G.reshape(G.shape[0], -1)
                    if not np.all(rows == rows[:, :1]) or n.rectify_input:
                        raise UnsupportedLayer("a spike gain that varies across neurons cannot be rebuilt",
                                               where=where)
                    g = rows[:, 0]
                    nd = 1 if flat else len(syn_node.in_shape)
                    sm = StaticMap(shape=[T] + [1] * nd, source="finetune:spikes")
                    sm.map.copy_(torch.as_tensor(g.reshape([T] + [1] * nd)))
                    mods.insert(syn_at, sm)
                    gain_at, gain_kind = syn_at, "spikes"
                    syn_at += 1
            if isinstance(n, MALIF):
                if n.beta != 0:
                    raise UnsupportedLayer(f"MA-SNN cell with beta={n.beta}", where=where)
                mods.append(MALIFNode(v_threshold=float(n.v_threshold), alpha=float(n.alpha), beta=float(n.beta),
                                      lens=lens))
                theta = float(n.v_threshold)
            else:
                if n.v_reset is None:
                    raise UnsupportedLayer("soft reset has no Loihi equivalent", where=where)
                mods.append(_lif(n))
                theta = float(n.v_threshold) - float(n.v_reset)
                if n.tau is not None and n.decay_input:
                    w_gain = 1.0 / float(n.tau)
            layers.append({"name": n.name, "synapse": syn_at, "sparse": isinstance(syn_node, Dense), "neuron": len(mods) - 1, "gain": gain_at,
                           "gain_kind": gain_kind, "theta": theta, "w_gain": w_gain})
            syn_at = None
        else:
            raise UnsupportedLayer(f"'{n.kind}' cannot be fine-tuned", where=where,
                                   hint="finetune supports Conv2d/Linear, MaxPool over spikes, LIF/IF and MA-SNN cells")
        i += 1
    return nn.Sequential(*mods), layers


def _set(m, n):
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(np.asarray(n.weight, np.float32)))
        if n.bias is not None:
            m.bias.copy_(torch.as_tensor(np.asarray(n.bias, np.float32)))


# ---- straight-through fake quantization, the quantizer's rules ----------------------------------

def layer_scale(weight: torch.Tensor, theta: float, w_gain: float, weight_bits: int) -> float:
    """The quantizer's scale :func:`neurocomp.fixedpoint.lif_scale` of the threshold
    :func:`neurocomp.fixedpoint.choose_vth` for these weights."""
    w_eff = weight.detach().cpu().numpy().astype(np.float32).astype(np.float64) * w_gain
    return fx.lif_scale(fx.choose_vth(w_eff, theta, fx.weight_max(weight_bits)), theta)


def _fake_gain(g: torch.Tensor) -> torch.Tensor:
    """The gain table as the quantizer stores it, dequantized (:func:`neurocomp.fixedpoint.gain_mantissa`)."""
    g64 = g.detach().double()
    if not float(g64.max()) > 0:
        return torch.zeros_like(g64)
    mant, shift = fx.gain_mantissa(g64)
    return mant / (1 << shift)


def _ste(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return x + (value.to(x.dtype) - x).detach()


class QSynapse(nn.Module):
    """A Conv2d/Linear whose forward uses the fixed-point weights and bias (dequantized), STE backward."""

    def __init__(self, syn, theta: float, w_gain: float, weight_bits: int, sparse: bool = False):
        super().__init__()
        self.syn, self.theta, self.w_gain, self.weight_bits = syn, theta, w_gain, weight_bits
        self.enabled = True
        # an unrolled conv keeps its zeros (its connectivity); the scale of a large layer is
        # recomputed every few steps only (always in eval mode and at the last step of an epoch)
        self.register_buffer("mask", (syn.weight.detach() != 0).to(syn.weight.dtype) if sparse else None)
        self.every = max(1, syn.weight.numel() // 200_000)
        self._calls, self._s, self._stale = 0, None, True

    def scale(self, w) -> float:
        if self.training:
            if self._s is None or self._calls % self.every == 0:
                self._s = layer_scale(w, self.theta, self.w_gain, self.weight_bits)
            self._calls += 1
            self._stale = True
        elif self._s is None or self._stale:
            self._s = layer_scale(w, self.theta, self.w_gain, self.weight_bits)
            self._stale = False
        return self._s

    def fake_weights(self):
        w, b = self.syn.weight, self.syn.bias
        if self.mask is not None:
            w = w * self.mask
        if not self.enabled:
            return w, b
        s = self.scale(w)
        q, _ = fx.round_weights(w.detach().double() * self.w_gain, s, fx.weight_max(self.weight_bits))
        wq = _ste(w, q / (s * self.w_gain))
        bq = None
        if b is not None:
            mant, exp, _ = fx.bias_mant_exp(fx.voltage_units(b.detach().double() * self.w_gain, s))
            bq = _ste(b, fx.effective_bias(mant, exp) / fx.voltage_units(self.w_gain, s))
        return wq, bq

    def forward(self, x_seq):
        w, b = self.fake_weights()
        x = x_seq.flatten(0, 1)
        if isinstance(self.syn, nn.Conv2d):
            y = F.conv2d(x, w, b, self.syn.stride, self.syn.padding, self.syn.dilation, self.syn.groups)
        else:
            y = F.linear(x, w, b)
        return y.reshape(x_seq.shape[:2] + y.shape[1:])


class QGain(nn.Module):
    """A StaticMap with a trainable table ``g``; forward uses the quantizer's gain mantissas (STE).

    ``kind="spikes"``: the per-step gain of a rank-1 spike map, used as ``g / mean_t(g)`` (the fold's
    normalisation, so the next weights are not rescaled at compile time)."""

    def __init__(self, sm, kind: str, quantized: bool = True):
        super().__init__()
        self.sm, self.kind, self.quantized = sm, kind, quantized
        self.g = nn.Parameter(sm.map.detach().clone())

    def table(self):
        g = self.g
        if self.kind == "spikes":
            g = g / g.mean()
        return _ste(g, _fake_gain(g)) if self.quantized else g

    def forward(self, x_seq):
        y = x_seq * self.table().unsqueeze(1)
        return torch.relu(y) if self.sm.rectify else y

    @torch.no_grad()
    def write_back(self):
        g = self.g / self.g.mean() if self.kind == "spikes" else self.g
        self.sm.map.copy_(g.detach())


def qat_model(model, layers, weight_bits: int = 8, quantized: bool = True):
    """A training view of ``model``: synapses and gains wrapped (sharing the parameters)."""
    mods = list(model)
    qsyn, qgain = [], []
    for L in layers:
        q = QSynapse(mods[L["synapse"]], L["theta"], L["w_gain"], weight_bits, sparse=L.get("sparse", False))
        q.enabled = quantized
        mods[L["synapse"]] = q
        qsyn.append(q)
        if L["gain"] is not None:
            qg = QGain(mods[L["gain"]], L["gain_kind"], quantized)
            mods[L["gain"]] = qg
            qgain.append(qg)
    return nn.Sequential(*mods), qsyn, qgain


# ---- data, training loop ------------------------------------------------------------------------

def _data(dataset: str, T: int, encoding: str, seed: int):
    from neurocomp.training.train import DEFAULTS, Data
    if dataset not in ("digits", "events"):
        raise BadInput(f"the model's dataset is {dataset!r}", where="finetune",
                       hint="finetune trains on a named dataset's training split (digits, events)")
    recipe = dict(DEFAULTS, name="finetune", dataset=dataset, timesteps=T, encoding=encoding, seed=seed)
    return Data(recipe)


def _forward(model, xb):
    from spikingjelly.activation_based import functional
    functional.reset_net(model)
    out = model(xb)
    return out


def split_train_val(y, val_fraction: float, seed: int):
    """Indices ``(train, val)`` of a stratified split of the training labels ``y``: per class, a
    seeded permutation, the first ``round(val_fraction * n_class)`` samples go to validation. The
    two sets are disjoint and cover ``range(len(y))``; ``val_fraction=0`` gives an empty ``val``."""
    y = np.asarray(y)
    n = len(y)
    if not 0.0 <= val_fraction < 1.0:
        raise BadInput(f"--val-fraction {val_fraction}", where="--val-fraction", hint="give a fraction in [0, 1)")
    if val_fraction == 0.0:
        return np.arange(n), np.zeros(0, np.int64)
    rng = np.random.default_rng([int(seed), 0x5A1])      # its own stream, independent of torch's
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        val.extend(idx[:int(round(val_fraction * len(idx)))].tolist())
    val = np.sort(np.asarray(val, np.int64))
    train = np.setdiff1d(np.arange(n), val)
    if len(val) == 0 or len(train) == 0:
        raise BadInput(f"--val-fraction {val_fraction} of {n} training samples leaves an empty "
                       f"{'validation' if len(val) == 0 else 'training'} set", where="--val-fraction",
                       hint="use more training samples or another fraction")
    return train, val


def augment_events(x: np.ndarray, rng: np.random.Generator, max_shift: int = 1) -> np.ndarray:
    """Label-preserving augmentation of event recordings ``[T, B, C, H, W]`` (the synthetic motion
    set, :mod:`neurocomp.data.events`): per sample, with probability 1/2 a transpose of the sensor
    (a horizontal motion becomes a vertical one in the same "forward"/"backward" sense: right <-> down,
    left <-> up; speed unchanged), then a translation by up to ``max_shift`` pixels along each axis
    with zero fill (the position is a nuisance variable). The original events_pfa model keeps its
    test accuracy on inputs augmented so (99.6 % vs 99.4 %; with 2-pixel shifts it drops to 96.8 %:
    objects get cut at the border)."""
    T, B = x.shape[:2]
    H, W = x.shape[-2:]
    out = np.zeros_like(x)
    for b in range(B):
        s = x[:, b]
        if H == W and rng.random() < 0.5:
            s = s.swapaxes(-1, -2)
        dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
        xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        out[:, b, ..., yd, xd] = s[..., ys, xs]
    return out


def load_teacher(path):
    """The original (float, per-sample attention) torch model of a checkpoint, multi-step, eval mode."""
    from spikingjelly.activation_based import functional
    from neurocomp.frontends.checkpoint import load_checkpoint
    model = load_checkpoint(path).model.eval()
    functional.set_step_mode(model, "m")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def teacher_rates(teacher, x: np.ndarray, batch_size: int = 128) -> torch.Tensor:
    """Output firing rates ``[N, K]`` (spike count / T) of ``teacher`` on time-major inputs ``x``."""
    import warnings
    from spikingjelly.activation_based import functional
    out = []
    for i in range(0, x.shape[1], batch_size):
        functional.reset_net(teacher)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # torch warns about TCJA's 'same' padding with even kernels
            out.append(teacher(torch.as_tensor(x[:, i:i + batch_size])).mean(0))
    functional.reset_net(teacher)
    return torch.cat(out)


@torch.no_grad()
def evaluate_split(model, x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int = 128) -> dict:
    """Accuracy (argmax of spike counts, ties to the lowest class as :func:`neurocomp.training.train.evaluate`)
    and SMSE loss of ``model`` on time-major inputs ``x``."""
    from spikingjelly.activation_based import functional
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        functional.reset_net(model)
        out = model(torch.as_tensor(x[:, i:i + batch_size]))
        yb = torch.as_tensor(y[i:i + batch_size])
        correct += int((out.sum(0).argmax(1) == yb).sum())
        loss += float(F.mse_loss(out.mean(0), F.one_hot(yb, num_classes).to(out.dtype), reduction="sum"))
    functional.reset_net(model)
    return {"acc": correct / len(y), "loss": loss / (len(y) * num_classes)}


def _snapshot(qat) -> dict:
    return {k: v.detach().clone() for k, v in qat.state_dict().items()}


def _invalidate(qat) -> None:
    """Weights changed outside the optimizer: recompute every layer's scale on next use."""
    for m in qat.modules():
        if isinstance(m, QSynapse):
            m._s, m._stale = None, True


def _restore(qat, state) -> None:
    qat.load_state_dict(state)
    _invalidate(qat)


@torch.no_grad()
def _swap(qat, params, shadow) -> None:
    """Exchange the values of ``params`` and their EMA ``shadow`` in place."""
    for p, e in zip(params, shadow):
        tmp = p.detach().clone()
        p.copy_(e)
        e.copy_(tmp)
    _invalidate(qat)


def train_qat(qat, params_w, params_g, data, epochs: int, lr: float, gain_lr: float, loss: str = "smse",
              batch_size: int = 32, seed: int = 0, limit: int | None = None, progress: bool = True,
              qgains=(), name: str = "finetune", eval_test: bool = True, train_idx=None, val_idx=None,
              teacher=None, distill: float = 0.0, select: str = "last", info: dict | None = None,
              ema: float = 0.0, augment: bool = False) -> list:
    """Adam + cosine annealing over ``epochs``; returns per-epoch metrics (train loss/accuracy of the
    emulated fixed-point model, its validation and test accuracy).

    ``train_idx``/``val_idx``: indices into the training split (default: the first ``limit``
    samples, no validation). ``teacher`` with ``distill = a > 0``: the loss is
    ``(1 - a) * task + a * MSE(student rates, teacher rates)`` on the output firing rates.
    ``select="best"``: after training, the weights of the epoch (0 = before training) with the
    best emulated fixed-point validation accuracy (ties: lower validation SMSE, then the later epoch)
    are restored; ``info`` receives ``selected_epoch`` and the validation record.
    ``ema = d > 0``: an exponential moving average of the trained parameters (decay ``d`` per step)
    is kept; validation, test and the returned model use the averaged parameters.
    ``augment``: training batches go through :func:`augment_events` (the teacher, if any, sees the
    same augmented inputs)."""
    from tqdm import tqdm
    from neurocomp.training.train import loss_fn, seed_everything
    if select not in ("best", "last"):
        raise BadInput(f"--select {select}", where="--select", hint="best or last")
    if train_idx is None:
        train_idx = np.arange(len(data.y_train) if limit is None else min(limit, len(data.y_train)))
    train_idx = np.asarray(train_idx, np.int64)
    val_idx = np.zeros(0, np.int64) if val_idx is None else np.asarray(val_idx, np.int64)
    if select == "best" and len(val_idx) == 0:
        raise BadInput("--select best needs a validation split", where="--select",
                       hint="give --val-fraction > 0, or --select last")
    if not 0.0 <= ema < 1.0:
        raise BadInput(f"--ema {ema}", where="--ema", hint="a decay in [0, 1) (0: no averaging)")
    if distill and teacher is None:
        raise BadInput("distillation needs the teacher model", where="--distill", hint="give a teacher or --distill 0")
    aug_rng = np.random.default_rng([int(seed), 0xA06])
    seed_everything(seed)
    groups = [g for g in ({"params": params_w, "lr": lr}, {"params": params_g, "lr": gain_lr}) if g["params"]]
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    y_all = data.y_train
    y_train = y_all[train_idx]
    n, metrics = len(train_idx), []
    x_val, y_val = data.x_train[:, val_idx], y_all[val_idx]     # the fixed (epoch-0) encoding
    best = None
    trained = [p for p in list(params_w) + list(params_g)]
    shadow = [p.detach().clone() for p in trained] if ema else None

    def consider(epoch, v):
        nonlocal best
        key = (v["acc"], -v["loss"], epoch)
        if best is None or key > best[0]:
            best = (key, epoch, dict(v), _snapshot(qat))

    if len(val_idx):
        v0 = evaluate_split(qat, x_val, y_val, data.num_classes)
        if info is not None:
            info["val_before"] = {"acc_emulated_fixed": v0["acc"], "smse": v0["loss"]}
        if select == "best":
            consider(0, v0)
    t_cache = (None, None)
    for epoch in range(epochs):
        t0 = time.time()
        x_epoch = data.train_inputs(epoch)
        x_train = x_epoch[:, train_idx]
        t_rate = None
        if distill and not augment:
            if t_cache[0] is not x_epoch:          # events: once; digits: its Bernoulli spikes change per epoch
                t_cache = (x_epoch, teacher_rates(teacher, x_train))
            t_rate = t_cache[1]
        qat.train()
        order = torch.randperm(n, generator=gen).numpy()
        total, correct = 0.0, 0
        bar = tqdm(range(0, n, batch_size), desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, file=sys.stderr)
        for i in bar:
            idx = order[i:i + batch_size]
            xnp = x_train[:, idx]
            if augment:
                xnp = augment_events(xnp, aug_rng)
            xb, yb = torch.as_tensor(xnp), torch.as_tensor(y_train[idx])
            out = _forward(qat, xb)
            lo = loss_fn(out, yb, loss, data.num_classes)
            if distill:
                tr_b = teacher_rates(teacher, xnp) if augment else t_rate[idx]
                lo = (1.0 - distill) * lo + distill * F.mse_loss(out.mean(0), tr_b)
            opt.zero_grad()
            lo.backward()
            opt.step()
            with torch.no_grad():
                for qg in qgains:
                    qg.g.clamp_(min=0.0)
                if shadow is not None:
                    for p, e in zip(trained, shadow):
                        e.lerp_(p.detach(), 1.0 - ema)
            total += lo.item() * len(idx)
            correct += int((out.sum(0).argmax(1) == yb).sum())
            bar.set_postfix(loss=f"{lo.item():.4f}")
        row = {"epoch": epoch + 1, "train_loss": total / n, "train_acc": correct / n,
               "lr": opt.param_groups[0]["lr"]}
        sched.step()
        if shadow is not None:
            _swap(qat, trained, shadow)          # evaluate (and snapshot) the averaged model
        if len(val_idx):
            v = evaluate_split(qat, x_val, y_val, data.num_classes)
            row["val_acc_emulated_fixed"], row["val_smse"] = v["acc"], v["loss"]
            if select == "best":
                consider(epoch + 1, v)
        if eval_test:      # reported only: never used to choose anything
            row["test_acc_emulated_fixed"] = evaluate_split(qat, data.x_test, data.y_test, data.num_classes)["acc"]
        if shadow is not None:
            _swap(qat, trained, shadow)
        row["seconds"] = round(time.time() - t0, 2)
        metrics.append(row)
        if progress:
            print(json.dumps(row), file=sys.stderr)
    if shadow is not None and select == "last":
        _swap(qat, trained, shadow)
    if select == "best":
        _restore(qat, best[3])
        selected = best[1]
        sel_val = {"acc_emulated_fixed": best[2]["acc"], "smse": best[2]["loss"]}
    else:
        selected = epochs
        sel_val = ({"acc_emulated_fixed": metrics[-1]["val_acc_emulated_fixed"], "smse": metrics[-1]["val_smse"]}
                   if len(val_idx) and metrics else None)
    if info is not None:
        info["selected_epoch"] = selected
        info["val_selected"] = sel_val
    from spikingjelly.activation_based import functional
    functional.reset_net(qat)
    qat.eval()
    return metrics


# ---- the command --------------------------------------------------------------------------------

def _accuracies(artifact, progress: bool = False) -> dict:
    from neurocomp.api import simulate
    r = simulate(artifact, backend="reference", progress=progress)
    return {"samples": r["samples"], "inputs": r["inputs"], **{k: v for k, v in r["accuracy"].items()}}


def finetune(artifact, out, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR, gain_lr: float | None = None,
             weights: bool = True, gains: bool = True, loss: str = "smse", batch_size: int = 32, seed: int = 0,
             limit: int | None = None, overwrite: bool = False, progress: bool = True,
             measure: bool = True, val_fraction: float = DEFAULT_VAL_FRACTION, select: str | None = None,
             distill: float = DEFAULT_DISTILL, ema: float = DEFAULT_EMA, augment: bool = False) -> dict:
    """Fine-tune the compiled ``artifact`` and compile the result into ``out``; returns the
    manifest's ``finetune`` record (``measure=False`` skips the before/after reference runs).

    ``val_fraction`` of the training split (stratified, seeded) is held out; ``select="best"``
    (the default when there is a validation split) keeps the epoch with the best emulated
    fixed-point validation accuracy. ``distill``: weight of the distillation term (MSE between the
    output firing rates and those of the original model, run in torch with its per-sample attention)."""
    from neurocomp.artifact import Artifact, OutputClaim
    if epochs < 0:
        raise BadInput(f"--epochs {epochs}", where="--epochs", hint="give 0 or more")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInput(f"--batch-size {batch_size!r}", where="--batch-size", hint="give a positive integer")
    if not lr > 0:
        raise BadInput(f"--lr {lr}", where="--lr", hint="a positive learning rate")
    if not 0.0 <= distill <= 1.0:
        raise BadInput(f"--distill {distill}", where="--distill", hint="a weight in [0, 1] (0: no distillation)")
    if not 0.0 <= val_fraction < 1.0:
        raise BadInput(f"--val-fraction {val_fraction}", where="--val-fraction", hint="give a fraction in [0, 1)")
    if not 0.0 <= ema < 1.0:
        raise BadInput(f"--ema {ema}", where="--ema", hint="a decay in [0, 1) (0: no averaging)")
    if select is None:
        select = "best" if val_fraction > 0 else "last"
    if select not in ("best", "last"):
        raise BadInput(f"--select {select}", where="--select", hint="best or last")
    if select == "best" and val_fraction == 0:
        raise BadInput("--select best needs a validation split", where="--select",
                       hint="give --val-fraction > 0, or --select last")
    src = Artifact(artifact)
    claim = OutputClaim(str(out), overwrite=overwrite)   # refuse an existing -o before training, not after
    try:
        return _finetune(src, claim, artifact, out, epochs, lr, gain_lr, weights, gains, loss, batch_size, seed,
                         limit, progress, measure, val_fraction, select, distill, ema, augment)
    finally:
        claim.release()                                  # a claim that was not filled (after an error)


def _finetune(src, claim, artifact, out, epochs, lr, gain_lr, weights, gains, loss, batch_size, seed, limit,
              progress, measure, val_fraction, select, distill, ema, augment):
    from neurocomp.api import compile as compile_
    from neurocomp.artifact import Artifact, write_atomically, write_manifest
    from neurocomp.frontends.checkpoint import save_checkpoint
    from neurocomp.training.train import seed_everything
    man = src.manifest
    T, shape, enc, dataset = man["timesteps"], man["input_shape"], man["encoding"], man.get("dataset")
    if not dataset:
        raise BadInput("the artifact names no dataset to train on", where=str(artifact),
                       hint="compile a checkpoint that records its dataset")
    if augment and dataset != "events":
        raise BadInput(f"--augment is defined for the events dataset, not {dataset!r}", where="--augment",
                       hint="leave it off (a transposed or shifted digit is not the same digit)")
    att = man.get("attention")
    mode = (att or {}).get("mode", "static")
    weight_bits = int(man.get("weight_bits", 8))
    teacher, teacher_path = None, None
    if distill > 0:
        # a fine-tuned artifact's model.pt is the folded model; its source_model.pt is the original
        for cand in (os.path.join(src.path, "source_model.pt"), src.checkpoint):
            if os.path.exists(cand):
                teacher_path = cand
                break
        if teacher_path is None:
            raise BadInput("--distill needs the original torch model, and the artifact has none "
                           "(compiled from NIR?)", where=str(artifact), hint="give --distill 0")
        teacher = load_teacher(teacher_path)
    seed_everything(seed)
    model, layers = graph_to_module(folded_graph(src.float_graph, attention=mode))
    has_gains = any(L["gain"] is not None for L in layers)
    gains = gains and has_gains
    if not (weights or gains):
        raise BadInput("nothing to train: the model has no attention gain tables and --no-weights was given",
                       where="--no-weights", hint="train the weights (--weights)")
    qat, qsyn, qgain = qat_model(model, layers, weight_bits)
    params_w = [p for q in qsyn for p in q.syn.parameters()] if weights else []
    params_g = [q.g for q in qgain] if gains else []
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params_w:
        p.requires_grad_(True)
    for q in qgain:
        q.g.requires_grad_(gains)
    before = _accuracies(artifact) if measure else None
    data = _data(dataset, T, enc, seed)
    name = os.path.basename(os.path.normpath(str(artifact)))
    pool = len(data.y_train) if limit is None else min(limit, len(data.y_train))
    if limit is not None and limit < 1:
        raise BadInput(f"--train-samples {limit}", where="--train-samples", hint="give at least 1")
    train_idx, val_idx = split_train_val(data.y_train[:pool], val_fraction, seed)
    info = {}
    t_start = time.time()
    metrics = train_qat(qat, params_w, params_g, data, epochs, lr, gain_lr if gain_lr is not None else lr, loss,
                        batch_size, seed, None, progress, qgains=qgain, name=name, train_idx=train_idx,
                        val_idx=val_idx, teacher=teacher, distill=distill, select=select, info=info,
                        ema=ema, augment=augment)
    train_seconds = round(time.time() - t_start, 1)
    for q in qgain:
        q.write_back()
    trained = (["weights", "biases"] if weights else []) + (["gain tables"] if gains else [])
    rec = {"source": os.path.abspath(str(artifact)), "epochs": epochs, "lr": lr,
           "gain_lr": gain_lr if gain_lr is not None else lr, "loss": loss, "batch_size": batch_size,
           "seed": seed, "train_samples": int(len(train_idx)), "val_samples": int(len(val_idx)),
           "val_fraction": val_fraction,
           "val_split": "stratified per class, seeded by --seed, held out of the training split; never trained on",
           "select": select, "selected_epoch": info["selected_epoch"],
           "selection": ("the epoch (0 = before training) with the best emulated fixed-point validation accuracy"
                         if select == "best" else "the last epoch"),
           "val_before": info.get("val_before"), "val_selected": info.get("val_selected"),
           "distill": distill, "ema": ema,
           "augment": ("events: random sensor transpose (p 0.5) and shift up to 1 px per training sample"
                       if augment else None),
           "teacher": None if teacher is None else {
               "checkpoint": os.path.basename(teacher_path),
               "what": "the original float model with its per-sample attention, run in torch",
               "loss": "(1 - distill) * task loss + distill * MSE(student output rates, teacher output rates)"},
           "train_seconds": train_seconds,
           "trained": trained, "bn": "folded into the conv/linear weights before training",
           "quantization": f"straight-through {weight_bits}-bit fake quantization with neurocomp's per-layer "
                           "scale rule (weights, bias mantissa/exponent, gain mantissa/shift)",
           "metrics": metrics, "before": before}
    parent = os.path.dirname(os.path.abspath(str(out)))
    if not os.path.isdir(parent):
        raise BadInput("parent folder does not exist", where=parent, hint="create it first")
    work = tempfile.mkdtemp(prefix=".finetune-", dir=parent)
    try:
        ckpt = os.path.join(work, "model.pt")
        save_checkpoint(model.eval(), ckpt, input_shape=shape, timesteps=T, encoding=enc, dataset=dataset,
                        extra={"note": "fine-tuned by neurocomp finetune: BN, pooling and attention folded; "
                                       "gain tables as StaticMap", "source_artifact": rec["source"]})
        try:
            compiled = compile_(ckpt, os.path.join(work, "artifact"), target=src.target_spec(),
                                weight_bits=weight_bits, attention=mode)
        except BaseException:   # keep the training: the checkpoint can be compiled by hand
            kept = _keep_checkpoint(ckpt, os.path.abspath(str(out)).rstrip(os.sep) + ".finetuned.pt")
            if kept:
                from neurocomp.errors import escape
                print(f"finetune: compiling failed; the fine-tuned checkpoint is kept at {escape(kept)}",
                      file=sys.stderr)
            raise
        if measure:
            rec["after"] = _accuracies(compiled)
        m2 = Artifact(compiled).manifest
        m2["finetune"] = rec
        if att is not None:
            m2["attention"] = {**att, "note": "calibrated in the source artifact, then fine-tuned (finetune)"}
        if os.path.exists(src.checkpoint):
            shutil.copyfile(src.checkpoint, os.path.join(compiled, "source_model.pt"))
        write_manifest(compiled, m2)

        def fill(tmp):
            for entry in os.listdir(compiled):
                shutil.move(os.path.join(compiled, entry), os.path.join(tmp, entry))

        write_atomically(claim.path, fill, claim=claim)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rec


def _keep_checkpoint(src, dest):
    """Copy ``src`` to ``dest`` only if nothing is there (never replaces a file); the path or None."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as fh, open(src, "rb") as fin:
            shutil.copyfileobj(fin, fh)
    except OSError:
        os.unlink(dest)
        return None
    return dest


def format_record(rec: dict) -> str:
    """A short before/after table of a finetune record."""
    def pct(v):
        return "   n/a " if v is None else f"{100 * v:6.2f} %"
    lines = [f"trained: {', '.join(rec['trained'])}; {rec['epochs']} epochs, lr {rec['lr']}, "
             f"{rec['train_samples']} training samples"
             + (f", distill {rec['distill']}" if rec.get("distill") else "")]
    if rec.get("val_samples"):
        v = rec.get("val_selected") or {}
        acc = v.get("acc_emulated_fixed")
        lines.append(f"kept epoch {rec['selected_epoch']} ({rec['select']}; validation {rec['val_samples']} held-out "
                     f"training samples: {'n/a' if acc is None else f'{100 * acc:.2f} %'} emulated fixed point)")
    b, a = rec.get("before"), rec.get("after")
    if b and a:
        lines.append(f"on {a['samples']} samples from {a['inputs']} (reference simulator):")
        lines.append(f"  original float model          {pct(b.get('float_torch'))}")
        if b.get("float_static_attention") is not None:
            lines.append(f"  static-attention float model  {pct(b.get('float_static_attention'))}")
        lines.append(f"  fixed point before            {pct(b.get('fixed_reference'))}")
        lines.append(f"  fine-tuned float model        {pct(a.get('float_torch'))}")
        lines.append(f"  fixed point after             {pct(a.get('fixed_reference'))}")
    from neurocomp.errors import escape
    return "\n".join(escape(line) for line in lines)      # names and paths come from files
