"""Registry of neurocomp.nn module classes, so checkpoints can rebuild them.

A checkpoint stores, for each neurocomp.nn module, its registered name and its constructor
kwargs (``module.config``, plain JSON types only). Rebuilding is
``REGISTRY[name](**config)`` followed by ``load_state_dict``.
"""
from __future__ import annotations

import inspect
import json

REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: add ``cls`` to :data:`REGISTRY` under its class name."""
    name = cls.__name__
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise ValueError(f"neurocomp.nn: '{name}' is already registered")
    REGISTRY[name] = cls
    return cls


def store_config(module, frame_locals: dict) -> None:
    """Store the constructor arguments found in ``frame_locals`` as ``module.config``.

    Call as ``store_config(self, locals())`` first thing in ``__init__``. Only the parameters
    named in the signature of ``type(module).__init__`` are kept; they must be JSON-serialisable.
    """
    params = inspect.signature(type(module).__init__).parameters
    config = {k: frame_locals[k] for k in params if k != "self" and k in frame_locals}
    json.dumps(config)  # raises TypeError early if a value is not plain JSON
    module.config = config
