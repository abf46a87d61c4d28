"""The ``neurocomp`` command line: parses arguments and calls the API; no logic lives here.

Every neurocomp error is printed as one line (``error: <where>: <what> (hint: ...)``) with a
non-zero exit status; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

from neurocomp import memory, signals
from neurocomp._quiet import import_spikingjelly
from neurocomp.errors import NeurocompError, escape


class _Parser(argparse.ArgumentParser):
    """argparse with neurocomp's error format: one ``error: ...`` line with a hint, exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {escape(self.prog)}: {escape(message)} (hint: see `{self.prog} --help`)\n")


def _number(kind, low, strict):
    """An argparse type: ``kind`` (int/float), finite, ``> low`` (strict) or ``>= low``."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(v) or (v <= low if strict else v < low):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>' if strict else '>='} {low}")
        return v
    parse.__name__ = f"{kind.__name__} {'>' if strict else '>='} {low}"
    return parse


POSITIVE_INT, NONNEGATIVE_INT, POSITIVE_FLOAT = _number(int, 0, True), _number(int, 0, False), _number(float, 0, True)


def _cmd_compile(a):
    from neurocomp.api import compile as compile_
    out = a.output or os.path.splitext(os.path.basename(a.model))[0] + ".neurocomp"
    door_kw = {"dt": a.dt, "reset": a.reset, "timesteps": 100 if a.timesteps is None else a.timesteps} \
        if a.model.lower().endswith(".nir") else \
        {"calib": a.calib, "calib_samples": a.calib_samples, "chips": a.chips, **_model_kw(a)}
    path = compile_(a.model, out, target=a.target, trust_pickle=a.trust_pickle, weight_bits=a.weight_bits,
                    attention=a.attention, overwrite=a.overwrite, device=a.device, **door_kw)
    if not a.quiet:
        from neurocomp.artifact import Artifact
        from neurocomp.ir import table
        art = Artifact(path)
        print(table(art.fixed_graph))
        al = art.manifest["alignment"]
        print(f"\nwrote {escape(path)}  (T={al['timesteps']}, Lava latency {al['depth']} steps, "
              f"{al['steps_single_sample']} steps per sample alone)")
        mp = art.manifest.get("mapping")
        if mp:
            per_layer = ", ".join(f"{escape(l['layer'])}: {l['cores']}" for l in mp["layers"])
            print(f"mapped on {escape(mp['target'])}: {mp['cores']} cores on {mp['chips']} chip(s) "
                  f"(cores per layer: {per_layer})")
            if mp["chips"] > 1:
                from neurocomp.inspect import partition_lines
                print("\n".join(escape(line) for line in partition_lines(mp)))
        att = art.manifest.get("attention")
        if att:
            folds = {r["layer"]: r for p in art.manifest["passes"] if p["pass"] == "fold_attention" for r in p["maps"]}
            print(f"attention ({att['mode']}, calibrated on {escape(att['calibration']['source'])}):")
            for name, st in att["maps"].items():
                fr = folds.get(name, {})
                cls = "n/a" if st["class_explained"] is None else f"{100 * st['class_explained']:.0f}%"
                how = (f"folded: {fr.get('rule', '?')}, error {fr.get('error', 0):.3g}" if att["mode"] != "dynamic"
                       else "kept dynamic: attention process, +T steps")
                print(f"  {escape(name):>6} {escape(st['module']):<5} on {escape(st['acts_on']):<13} "
                      f"varies {100 * st['variation']:5.1f}% "
                      f"(class explains {cls}); {how}")
                if st.get("warning"):
                    print(f"         warning: {escape(st['warning'])}")
    return 0


def _model_kw(a) -> dict:
    """What a pickled module or a state dict does not record, and the user's code (compile, inspect)."""
    return {"input_shape": a.input_shape, "timesteps": a.timesteps, "encoding": a.encoding, "dataset": a.dataset,
            "model_code": a.model_code, "model_args": a.model_args, "code_path": a.code_path or ()}


def _add_model_flags(c, timesteps_help: str):
    """The flags of a model file or NIR graph that does not record everything (``compile``, ``inspect``):
    a model saved without neurocomp (torch.save of a module or of a state dict), a NIR graph's dt/reset."""
    c.add_argument("--trust-pickle", action="store_true",
                   help="allow a fully pickled module (unpickling can run code, and imports the model's classes "
                        "from the current folder or --code-path: only for files you trust)")
    c.add_argument("--dt", type=POSITIVE_FLOAT, help="NIR input: seconds per step (default: the graph's metadata)")
    c.add_argument("--reset", choices=["zero", "subtract"], default="zero",
                   help="NIR input: reset mode, which NIR does not store (default: zero)")
    c.add_argument("--timesteps", type=POSITIVE_INT, help=timesteps_help)
    c.add_argument("--input-shape", metavar="C,H,W", help="pickled module / state dict: one time step of one "
                   "sample, C,H,W or N")
    c.add_argument("--encoding", choices=["bernoulli", "current", "events"],
                   help="pickled module / state dict: how samples become input spikes")
    c.add_argument("--dataset", help="pickled module / state dict: the dataset it was trained on (calibration, "
                                     "`simulate` without --inputs)")
    c.add_argument("--model", dest="model_code", metavar="FILE.py:NAME",
                   help="a state dict: the class or function in FILE.py that builds the model (a pickle from a "
                        "script: the script that defines its classes). This IMPORTS AND RUNS FILE.py: pass only "
                        "your own code")
    c.add_argument("--model-args", metavar="JSON", help="arguments for --model's NAME: a JSON object (or list)")
    c.add_argument("--code-path", metavar="DIR", action="append",
                   help="folder to import the model's own classes from (repeatable; the current folder is "
                        "searched too). Importing runs that code: only with --trust-pickle or --model")


def _cmd_simulate(a):
    from neurocomp.api import format_result, simulate
    r = simulate(a.artifact, backend=a.backend, samples=a.samples, inputs=a.inputs, json_path=a.json,
                 progress=not a.quiet, timeout=a.timeout, workers=a.workers, ray=a.ray, device=a.device,
                 batch=a.batch_size)
    print(format_result(r))
    return 0


def _cmd_report(a):
    from neurocomp.measure import report
    paths = report(a.artifact, samples=a.samples, lava_samples=a.lava_samples, progress=not a.quiet,
                         attention_modes=a.attention_modes, finetuned=a.finetuned, workers=a.workers, ray=a.ray,
                         device=a.device, batch=a.batch_size)
    for p in paths:
        print(escape(p))
    return 0


def _cmd_inspect(a):
    from neurocomp.inspect import inspect_path
    kw = _model_kw(a)
    kw.pop("timesteps")
    print(inspect_path(a.path, trust_pickle=a.trust_pickle, dt=a.dt, reset=a.reset, timesteps=a.timesteps, **kw))
    return 0


def _cmd_train(a):
    from neurocomp.training.train import main as train_main
    return train_main([a.recipe] + a.rest) or 0


def _cmd_finetune(a):
    from neurocomp.training.config import FinetuneConfig
    cfg = FinetuneConfig(epochs=a.epochs, lr=a.lr, gain_lr=a.gain_lr, weights=a.weights, gains=a.gains, loss=a.loss,
                         batch_size=a.batch_size, seed=a.seed, limit=a.train_samples, val_fraction=a.val_fraction,
                         select=a.select, distill=a.distill, ema=a.ema, augment=a.augment)
    from neurocomp.training.finetune import finetune, format_record
    rec = finetune(a.artifact, a.output, cfg, overwrite=a.overwrite, progress=not a.quiet)
    print(format_record(rec))
    print(f"wrote {escape(a.output)}")
    return 0


def _cmd_lava_env(a):
    from neurocomp.backends.lava import env
    env.make(a.path, python=a.python, torch_index=a.torch_index, dry_run=a.dry_run,
             out=lambda line: print(escape(line), flush=True))
    return 0


def _add_shard_flags(c, what: str):
    c.add_argument("--workers", type=POSITIVE_INT, default=1,
                   help=f"split {what} over N independent workers, processes on this host (default 1); the "
                        "results are the same")
    c.add_argument("--ray", metavar="ADDRESS",
                   help=f"run {what} as tasks on a Ray cluster: local (a private head on 127.0.0.1), auto or "
                        "HOST:PORT (needs neurocomp[ray]); --workers N shards (default: one per cluster CPU)")


def _add_device_flag(c, what: str, default: str = "auto"):
    why = ("cpu: a build is the same on every machine, since float calibration can round differently on a GPU"
           if default == "cpu" else "auto: cuda when torch sees a GPU, else cpu; the fixed-point reference is "
                                    "bit-identical on both")
    c.add_argument("--device", default=default, metavar="cpu|cuda|auto", help=f"where {what} (default {why})")
def _size(text):
    try:
        return memory.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _add_memory_flags(c, batch: bool):
    c.add_argument("--max-memory", type=_size, metavar="SIZE",
                   help="memory budget (4G, 512M, bytes; default: NEUROCOMP_MAX_MEMORY, else the memory available): "
                        "a job estimated above it stops before it allocates, naming the layer")
    if batch:
        c.add_argument("--batch-size", type=POSITIVE_INT,
                       help="samples per batch of the reference runs (default: the largest that fits the budget)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="neurocomp", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compile a checkpoint or a NIR file into an artifact folder")
    c.add_argument("model", help="model.pt written by neurocomp.save_checkpoint, torch.save(model) (with "
                                 "--trust-pickle), torch.save(model.state_dict()) (with --model), or a NIR graph FILE.nir")
    c.add_argument("--target", default="lava", help="hardware target: lava (= loihi2), loihi1, loihi2 or a targets/*.json file (default: lava)")
    c.add_argument("-o", "--output", help="artifact folder to create (default: <model>.neurocomp)")
    c.add_argument("--weight-bits", type=POSITIVE_INT, default=8, help="signed weight bits, 2..8 (default 8)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    c.add_argument("--attention", default="static", choices=["static", "portable", "dynamic"],
                   help="how attention maps are lowered (default static: calibrated maps folded into weights "
                        "and gain-scheduled neurons; portable: stock Lava LIF only)")
    c.add_argument("--calib", help="calibration data for attention: DATASET:START:END or FILE.npy "
                                   "(default: the first --calib-samples of the model's training split)")
    c.add_argument("--calib-samples", type=POSITIVE_INT, default=512)
    c.add_argument("--chips", type=POSITIVE_INT, help="map onto at most N chips (default: the fewest that hold "
                                                     "the cores); a network that needs more is refused naming "
                                                     "the first layer that does not fit")
    _add_model_flags(c, "steps per sample: for a NIR graph (default 100), a pickled module or a state dict")
    _add_device_flag(c, "attention calibration runs the model", default="cpu")
    _add_memory_flags(c, batch=False)
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(func=_cmd_compile)

    s = sub.add_parser("simulate", help="run an artifact and cross-check float / reference / Lava")
    s.add_argument("artifact")
    s.add_argument("--backend", default="lava", choices=["lava", "reference"])
    s.add_argument("--samples", type=POSITIVE_INT, help="first N samples of the model's test split (default: all)")
    s.add_argument("--inputs", help=".npy of inputs shaped [N, T, *input_shape]")
    s.add_argument("--json", help="write the result as JSON here")
    s.add_argument("--timeout", type=POSITIVE_FLOAT, help="stop the Lava run after this many seconds")
    _add_shard_flags(s, "the Lava run")
    _add_device_flag(s, "the torch models and the reference simulator run")
    _add_memory_flags(s, batch=True)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_simulate)

    r = sub.add_parser("report", help="write report.md, report.json and plots into the artifact")
    r.add_argument("artifact")
    r.add_argument("--samples", type=POSITIVE_INT, help="samples for full-split figures (reference simulator)")
    r.add_argument("--lava-samples", type=NONNEGATIVE_INT, default=50, help="samples for the Lava exactness check")
    r.add_argument("--finetuned", metavar="ARTIFACT",
                   help="a `neurocomp finetune` result of this artifact: fills 'static after fine-tuning'")
    r.add_argument("--no-attention-modes", dest="attention_modes", action="store_false",
                   help="attention models: skip recompiling and measuring the static and dynamic modes")
    _add_shard_flags(r, "the Lava runs and the bit-width sweep")
    _add_device_flag(r, "the torch models, the reference simulator and the bit-width sweep run")
    _add_memory_flags(r, batch=True)
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=_cmd_report)

    i = sub.add_parser("inspect", help="print a model, NIR file or artifact as a table")
    i.add_argument("path")
    _add_model_flags(i, "steps per sample: a NIR graph (default: the graph's own), a pickled module or a state dict")
    i.set_defaults(func=_cmd_inspect)

    t = sub.add_parser("train", help="train a zoo recipe (models/<name>/recipe.json)")
    t.add_argument("recipe")
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=_cmd_train)

    f = sub.add_parser("finetune", help="fine-tune an artifact's weights and gain tables against 8-bit fixed point")
    f.add_argument("artifact", help="artifact folder written by `neurocomp compile`")
    f.add_argument("-o", "--output", required=True, help="artifact folder to create with the fine-tuned model")
    from neurocomp.training.config import FinetuneConfig
    D = FinetuneConfig()                     # the defaults, without importing torch
    f.add_argument("--epochs", type=NONNEGATIVE_INT, default=D.epochs,
                   help=f"epochs over the training split (default {D.epochs})")
    f.add_argument("--lr", type=POSITIVE_FLOAT, default=D.lr,
                   help=f"Adam learning rate, cosine-annealed (default {D.lr:g})")
    f.add_argument("--val-fraction", type=float, default=D.val_fraction,
                   help=f"fraction of the training split held out for validation, stratified per class "
                        f"(default {D.val_fraction:g}; 0: train on all of it)")
    f.add_argument("--select", choices=["best", "last"],
                   help="keep the epoch with the best emulated fixed-point validation accuracy (best, the default "
                        "with a validation split) or the last epoch")
    f.add_argument("--distill", type=float, default=D.distill,
                   help="weight in [0, 1] of the distillation term: MSE between the output firing rates and those "
                        f"of the original float model with its per-sample attention (default {D.distill:g})")
    f.add_argument("--ema", type=float, default=D.ema,
                   help="decay per step of an exponential moving average of the trained parameters, used for "
                        f"validation and the result (default {D.ema:g})")
    f.add_argument("--augment", action="store_true",
                   help="events dataset: label-preserving augmentation of the training batches (random sensor "
                        "transpose, 1-pixel shifts); the distillation teacher sees the same inputs")
    f.add_argument("--gain-lr", type=POSITIVE_FLOAT, help="learning rate of the gain tables (default: --lr)")
    f.add_argument("--weights", action=argparse.BooleanOptionalAction, default=D.weights,
                   help="train weights and biases too (default); --no-weights trains only the gain tables")
    f.add_argument("--gains", action=argparse.BooleanOptionalAction, default=D.gains,
                   help="train the static attention gain tables (default, when the model has any)")
    f.add_argument("--loss", choices=["smse", "tet"], default=D.loss)
    f.add_argument("--batch-size", type=POSITIVE_INT, default=D.batch_size)
    f.add_argument("--seed", type=int, default=D.seed)
    f.add_argument("--train-samples", type=POSITIVE_INT, help="use only the first N training samples")
    f.add_argument("--overwrite", action="store_true", help="replace an existing output artifact")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-epoch lines")
    f.set_defaults(func=_cmd_finetune)

    v = sub.add_parser("lava-env", help="make the Python 3.10 environment Lava runs in when this Python has no Lava")
    v.add_argument("--path", help="folder to make it in (default: ~/.cache/neurocomp/lava-env, where it is found "
                                  "without NEUROCOMP_LAVA_PYTHON)")
    v.add_argument("--python", help="the Python 3.10 to make it from (default: this one if 3.10, else python3.10)")
    v.add_argument("--torch-index", metavar="URL",
                   help="package index to take torch 2.3.1 from (e.g. https://download.pytorch.org/whl/cpu for the "
                        "CPU build; default: PyPI, whose Linux build carries CUDA, about 5 GB installed)")
    v.add_argument("--dry-run", action="store_true", help="print the commands it would run and stop")
    v.set_defaults(func=_cmd_lava_env)
    return p


def main(argv=None) -> int:
    # SIGTERM and SIGHUP end a command as Ctrl-C does (cleanup runs, exit 128 + signal); the whole
    # start-up (imports included) is inside, so an early Ctrl-C is a one-line "interrupted" too
    with signals.handled():
        try:
            code = _main(argv)
            signals.check()          # an interrupt whose exception a finalizer swallowed still counts
        except KeyboardInterrupt as e:
            signals.finishing()
            print(signals.describe(e), file=sys.stderr)
            return signals.exit_status(e)
        except Exception:
            # a library that catches BaseException around an optional import (SpikingJelly does) can
            # swallow the interrupt mid-import and leave a half-imported module whose next use fails:
            # what happened is the interrupt, not that failure
            e = signals.received()
            if e is None:
                raise
            signals.finishing()
            print(signals.describe(e), file=sys.stderr)
            return signals.exit_status(e)
        return code


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import_spikingjelly()
    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {escape(message)}\n"   # one line each
    memory.set_budget(getattr(args, "max_memory", None))     # None: NEUROCOMP_MAX_MEMORY or MemAvailable
    try:
        return args.func(args)
    except NeurocompError as e:
        if args.debug:
            raise
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
