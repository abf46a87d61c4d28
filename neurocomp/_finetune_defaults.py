"""Default recipe of ``neurocomp finetune`` (no heavy imports: the CLI's parser reads it).

Chosen on events_tcja's held-out validation split (never on the test split); see docs/finetune.md."""
DEFAULT_EPOCHS = 10
DEFAULT_LR = 5e-4
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_DISTILL = 0.0
DEFAULT_EMA = 0.0
