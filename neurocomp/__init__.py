"""neurocomp: compile (attention) spiking neural networks from PyTorch/SpikingJelly to Loihi-style
hardware through Lava, and prove every step exact or say what it cost."""
from neurocomp._version import __version__


def compile(*args, **kwargs):  # noqa: A001 - mirrors the CLI verb
    from neurocomp.api import compile as _compile
    return _compile(*args, **kwargs)


def simulate(*args, **kwargs):
    from neurocomp.api import simulate as _simulate
    return _simulate(*args, **kwargs)


def save_checkpoint(*args, **kwargs):
    from neurocomp.frontends.checkpoint import save_checkpoint as _save
    return _save(*args, **kwargs)


def load_checkpoint(*args, **kwargs):
    from neurocomp.frontends.checkpoint import load_checkpoint as _load
    return _load(*args, **kwargs)


__all__ = ["compile", "simulate", "save_checkpoint", "load_checkpoint", "__version__"]
