"""The reference simulator: one walk over the IR with float or Loihi fixed-point arithmetic."""
from neurocomp.results import SimResult, predict
from neurocomp.sim.reference import run_float, run_fixed

__all__ = ["run_float", "run_fixed", "predict", "SimResult"]
