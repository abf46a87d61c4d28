"""Frontends: torch/SpikingJelly modules and checkpoints -> IR, NIR graphs -> IR."""
