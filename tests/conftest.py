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
