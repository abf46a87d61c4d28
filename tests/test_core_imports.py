"""The core needs no Lava: every neurocomp module imports with Lava and lava-dl blocked, except the Lava
wing's process modules (which define Lava processes and so subclass Lava's classes at import).

Runs in a fresh interpreter: ``sys.modules["lava"] = None`` makes every ``import lava...`` (lava-nc's
``lava.magma`` / ``lava.proc`` and lava-dl's ``lava.lib.dl``) raise ImportError, as where neither is installed.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import importlib, json, pkgutil, sys
sys.modules["lava"] = None
import neurocomp
failed, imported = {}, []
for m in pkgutil.walk_packages(neurocomp.__path__, "neurocomp."):
    if m.name == "neurocomp.__main__":          # runs the CLI
        continue
    try:
        importlib.import_module(m.name)
        imported.append(m.name)
    except ImportError as e:
        failed[m.name] = str(e)
lava = sorted(k for k in sys.modules if (k == "lava" or k.startswith("lava.")) and sys.modules[k] is not None)
print(json.dumps({"failed": failed, "imported": imported, "lava_loaded": lava}))
"""


def test_every_core_module_imports_without_lava():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    failed, imported = got["failed"], set(got["imported"])
    # only the Lava wing may need Lava, and only because of Lava itself
    assert all(name.startswith("neurocomp.backends.lava.") for name in failed), failed
    assert all("lava" in why for why in failed.values()), failed
    # the core itself, the Lava package's own entry (emit, run, shard, runtime: Lava imported when a net runs)
    # and the netx writer (lava-dl imported when it loads a file) are all there
    for name in ("neurocomp.api", "neurocomp.cli", "neurocomp.sim.reference", "neurocomp.frontends.official",
                 "neurocomp.passes.pipeline", "neurocomp.report", "neurocomp.training.finetune",
                 "neurocomp.backends.nir", "neurocomp.backends.netx", "neurocomp.backends.lava",
                 "neurocomp.backends.lava.run", "neurocomp.crosscheck", "neurocomp.demo"):
        assert name in imported, (name, failed.get(name))
    assert got["lava_loaded"] == []
