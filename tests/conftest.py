"""Test session set-up."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Lava's runtime fixes the multiprocessing start method ('fork') when first imported; import it
# before any other library can fix it first.
from neurocomp.backends.lava import ensure_lava_runtime  # noqa: E402

ensure_lava_runtime()
