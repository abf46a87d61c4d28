"""Test session set-up."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import importlib.util  # noqa: E402

# Lava's runtime fixes the multiprocessing start method ('fork') when first imported; import it
# before any other library can fix it first. The core environment has no Lava: there the tests marked
# `lava` are deselected (`-m "not lava"`, see pyproject.toml).
if importlib.util.find_spec("lava") is not None:
    from neurocomp.backends.lava import ensure_lava_runtime

    ensure_lava_runtime()

# SpikingJelly as the CLI imports it (neurocomp._quiet): without lava-dl's slayer, which SpikingJelly 0.0.0.0.14
# would otherwise pull in (with torchvision) for the first test module that imports SpikingJelly directly
from neurocomp._quiet import import_spikingjelly  # noqa: E402

import_spikingjelly()
