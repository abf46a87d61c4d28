"""``neurocomp finetune ARTIFACT -o NEW_ARTIFACT`` (API: :func:`finetune`): fine-tuning a compiled
artifact to win back what static folding and 8-bit quantization lost.

1. **The network that runs on the chip, as a torch model**: the artifact's float IR goes through the
   same folding passes as ``neurocomp compile``, everything but ``quantize``
   (:func:`neurocomp.passes.pipeline.fold`), and is rebuilt as a SpikingJelly model
   (:mod:`neurocomp.training.rebuild`).
2. **Quantization-aware training** (:mod:`neurocomp.training.qat`) of that model with straight-through
   estimators that reproduce ``neurocomp.passes.quantize`` layer by layer through its own number
   formats (:mod:`neurocomp.training.fakequant`). ``--weights`` (default) trains weights, biases and
   gains; ``--no-weights`` only the gain tables (static attention models). The recipe is one
   :class:`~neurocomp.training.config.FinetuneConfig`.
3. The fine-tuned model is saved as a neurocomp checkpoint and compiled with
   :func:`neurocomp.api.compile` into ``NEW_ARTIFACT``; its manifest records ``finetune``
   (accuracies before and after on the full test split with the reference simulator, the recipe,
   the kept epoch and its validation accuracy, what was trained, per-epoch metrics) and keeps the
   source's ``attention`` block.

Not emulated: Loihi's truncations of the voltage decay and of the gain product (sub-LSB of a
voltage that counts in units of ``1/(64 s)``), 24-bit wrap (recorded by the quantizer).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from neurocomp.data.registry import NUM_CLASSES
from neurocomp.errors import BadInput
from neurocomp.training.config import FinetuneConfig
from neurocomp.training.fakequant import qat_model
from neurocomp.training.qat import _data, load_teacher, split_train_val, train_qat
from neurocomp.training.rebuild import graph_to_module


def _accuracies(artifact, progress: bool = False) -> dict:
    from neurocomp.api import simulate
    r = simulate(artifact, backend="reference", progress=progress)
    return {"samples": r["samples"], "inputs": r["inputs"], **{k: v for k, v in r["accuracy"].items()}}


def finetune(artifact, out, config: FinetuneConfig | None = None, *, overwrite: bool = False,
             progress: bool = True, measure: bool = True, **options) -> dict:
    """Fine-tune the compiled ``artifact`` and compile the result into ``out``; returns the
    manifest's ``finetune`` record (``measure=False`` skips the before/after reference runs).

    ``config``: the recipe (default :class:`FinetuneConfig`'s), ``options``: fields of it to replace
    (``finetune(a, o, epochs=1, lr=1e-3)``). ``val_fraction`` of the training split (stratified,
    seeded) is held out; ``select="best"`` (the default when there is a validation split) keeps the
    epoch with the best emulated fixed-point validation accuracy. ``distill``: weight of the
    distillation term (MSE between the output firing rates and those of the original model, run in
    torch with its per-sample attention)."""
    from neurocomp.artifact import Artifact, OutputClaim
    cfg = dataclasses.replace(config or FinetuneConfig(), **options)    # checked here, before anything is read
    src = Artifact(artifact)
    claim = OutputClaim(str(out), overwrite=overwrite)   # refuse an existing -o before training, not after
    try:
        return _finetune(src, claim, artifact, out, cfg, progress, measure)
    finally:
        claim.release()                                  # a claim that was not filled (after an error)


def _teacher(src, artifact):
    """``(teacher model, its checkpoint path)``: the original torch model of ``src`` (a fine-tuned
    artifact's model.pt is the folded model; its source_model.pt is the original)."""
    for cand in (os.path.join(src.path, "source_model.pt"), src.checkpoint):
        if os.path.exists(cand):
            return load_teacher(cand), cand
    raise BadInput("--distill needs the original torch model, and the artifact has none "
                   "(compiled from NIR?)", where=str(artifact), hint="give --distill 0")


def _trainable(src, cfg: FinetuneConfig, mode: str, weight_bits: int):
    """The rebuilt model, its QAT view and what trains: ``(model, qat, qgain, params_w, params_g, gains)``."""
    from neurocomp.passes.pipeline import fold
    model, layers = graph_to_module(fold(src.float_graph, attention=mode))
    has_gains = any(L["gain"] is not None for L in layers)
    gains = cfg.gains and has_gains
    if not (cfg.weights or gains):
        raise BadInput("nothing to train: the model has no attention gain tables and --no-weights was given",
                       where="--no-weights", hint="train the weights (--weights)")
    qat, qsyn, qgain = qat_model(model, layers, weight_bits)
    params_w = [p for q in qsyn for p in q.syn.parameters()] if cfg.weights else []
    params_g = [q.g for q in qgain] if gains else []
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params_w:
        p.requires_grad_(True)
    for q in qgain:
        q.g.requires_grad_(gains)
    return model, qat, qgain, params_w, params_g, gains


def _finetune(src, claim, artifact, out, cfg: FinetuneConfig, progress: bool, measure: bool) -> dict:
    from neurocomp.training.train import seed_everything
    man = src.manifest
    T, enc, dataset = man["timesteps"], man["encoding"], man.get("dataset")
    if not dataset:
        raise BadInput("the artifact names no dataset to train on", where=str(artifact),
                       hint="compile a checkpoint that records its dataset")
    if cfg.augment and dataset != "events":
        raise BadInput(f"--augment is defined for the events dataset, not {dataset!r}", where="--augment",
                       hint="leave it off (a transposed or shifted digit is not the same digit)")
    outputs = int(np.prod(src.float_graph.output_node.out_shape))
    if outputs != NUM_CLASSES.get(dataset, outputs):
        raise BadInput(f"the model has {outputs} output neurons but dataset {dataset!r} has "
                       f"{NUM_CLASSES[dataset]} classes", where=str(artifact),
                       hint="finetune trains one output neuron per class: give the model's last layer "
                            f"{NUM_CLASSES[dataset]} outputs")
    mode = (man.get("attention") or {}).get("mode", "static")
    weight_bits = int(man.get("weight_bits", 8))
    teacher, teacher_path = _teacher(src, artifact) if cfg.distill > 0 else (None, None)
    seed_everything(cfg.seed)
    model, qat, qgain, params_w, params_g, gains = _trainable(src, cfg, mode, weight_bits)
    before = _accuracies(artifact) if measure else None
    data = _data(dataset, T, enc, cfg.seed)
    pool = len(data.y_train) if cfg.limit is None else min(cfg.limit, len(data.y_train))
    train_idx, val_idx = split_train_val(data.y_train[:pool], cfg.val_fraction, cfg.seed)
    info = {}
    t_start = time.time()
    metrics = train_qat(qat, params_w, params_g, data, cfg, qgains=qgain,
                        name=os.path.basename(os.path.normpath(str(artifact))), train_idx=train_idx,
                        val_idx=val_idx, teacher=teacher, info=info, progress=progress)
    train_seconds = round(time.time() - t_start, 1)
    for q in qgain:
        q.write_back()
    trained = (["weights", "biases"] if cfg.weights else []) + (["gain tables"] if gains else [])
    select = info["select"]
    rec = {"source": os.path.abspath(str(artifact)), "epochs": cfg.epochs, "lr": cfg.lr,
           "gain_lr": cfg.gain_rate, "loss": cfg.loss, "batch_size": cfg.batch_size,
           "seed": cfg.seed, "train_samples": int(len(train_idx)), "val_samples": int(len(val_idx)),
           "val_fraction": cfg.val_fraction,
           "val_split": "stratified per class, seeded by --seed, held out of the training split; never trained on",
           "select": select, "selected_epoch": info["selected_epoch"],
           "selection": ("the epoch (0 = before training) with the best emulated fixed-point validation accuracy"
                         if select == "best" else "the last epoch"),
           "val_before": info.get("val_before"), "val_selected": info.get("val_selected"),
           "distill": cfg.distill, "ema": cfg.ema,
           "augment": ("events: random sensor transpose (p 0.5) and shift up to 1 px per training sample"
                       if cfg.augment else None),
           "teacher": None if teacher is None else {
               "checkpoint": os.path.basename(teacher_path),
               "what": "the original float model with its per-sample attention, run in torch",
               "loss": "(1 - distill) * task loss + distill * MSE(student output rates, teacher output rates)"},
           "train_seconds": train_seconds,
           "trained": trained, "bn": "folded into the conv/linear weights before training",
           "quantization": f"straight-through {weight_bits}-bit fake quantization with neurocomp's per-layer "
                           "scale rule (weights, bias mantissa/exponent, gain mantissa/shift)",
           "metrics": metrics, "before": before}
    _compile_into(src, claim, out, model.eval(), rec, mode, weight_bits, measure)
    return rec


def _compile_into(src, claim, out, model, rec: dict, mode: str, weight_bits: int, measure: bool) -> None:
    """Save ``model`` as a checkpoint, compile it like ``src`` into the claimed ``out``; the manifest
    gets ``rec`` (with the accuracies after, when ``measure``) and the source's attention block."""
    from neurocomp.api import compile as compile_
    from neurocomp.artifact import Artifact, write_atomically, write_manifest
    from neurocomp.frontends.checkpoint import save_checkpoint
    man = src.manifest
    att = man.get("attention")
    parent = os.path.dirname(os.path.abspath(str(out)))
    if not os.path.isdir(parent):
        raise BadInput("parent folder does not exist", where=parent, hint="create it first")
    work = tempfile.mkdtemp(prefix=".finetune-", dir=parent)
    try:
        ckpt = os.path.join(work, "model.pt")
        save_checkpoint(model, ckpt, input_shape=man["input_shape"], timesteps=man["timesteps"],
                        encoding=man["encoding"], dataset=man.get("dataset"),
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
