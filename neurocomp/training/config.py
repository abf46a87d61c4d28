"""The recipe of ``neurocomp finetune``: one frozen :class:`FinetuneConfig`, its defaults and its checks.

No heavy imports: the CLI's parser reads the defaults (``FinetuneConfig()``) without importing torch.

The defaults were chosen on events_tcja's held-out validation split (never on the test split): lr 2e-3
(the zoo's training rate) with distillation 0.5 and weight averaging 0.99 had the highest validation
accuracy of the recipes tried; see docs/finetune.md for the sweep."""
from __future__ import annotations

import dataclasses

from neurocomp.errors import BadInput


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """What fine-tuning trains and how (the ``neurocomp finetune`` flags; checked on construction,
    each bad value a one-line :class:`~neurocomp.errors.BadInput` naming its flag).

    ``gain_lr`` None: ``lr``. ``limit``: only the first N training samples. ``val_fraction`` of them
    (stratified, seeded) is held out for validation. ``select`` None: ``"best"`` (the epoch with the
    best emulated fixed-point validation accuracy) when there is a validation split, else ``"last"``.
    ``distill``: weight of the distillation term; ``ema``: decay of the weight average (0: none);
    ``augment``: event augmentation of the training batches."""
    epochs: int = 20
    lr: float = 2e-3
    gain_lr: float | None = None
    weights: bool = True
    gains: bool = True
    loss: str = "smse"
    batch_size: int = 32
    seed: int = 0
    limit: int | None = None
    val_fraction: float = 0.1
    select: str | None = None
    distill: float = 0.5
    ema: float = 0.99
    augment: bool = False

    def __post_init__(self):
        if self.epochs < 0:
            raise BadInput(f"--epochs {self.epochs}", where="--epochs", hint="give 0 or more")
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise BadInput(f"--batch-size {b!r}", where="--batch-size", hint="give a positive integer")
        if not self.lr > 0:
            raise BadInput(f"--lr {self.lr}", where="--lr", hint="a positive learning rate")
        if not 0.0 <= self.distill <= 1.0:
            raise BadInput(f"--distill {self.distill}", where="--distill",
                           hint="a weight in [0, 1] (0: no distillation)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise BadInput(f"--val-fraction {self.val_fraction}", where="--val-fraction",
                           hint="give a fraction in [0, 1)")
        if not 0.0 <= self.ema < 1.0:
            raise BadInput(f"--ema {self.ema}", where="--ema", hint="a decay in [0, 1) (0: no averaging)")
        if self.select not in (None, "best", "last"):
            raise BadInput(f"--select {self.select}", where="--select", hint="best or last")
        if self.select == "best" and self.val_fraction == 0:
            raise BadInput("--select best needs a validation split", where="--select",
                           hint="give --val-fraction > 0, or --select last")
        if self.limit is not None and self.limit < 1:
            raise BadInput(f"--train-samples {self.limit}", where="--train-samples", hint="give at least 1")

    @property
    def selection(self) -> str:
        """``select``, resolved: ``"best"`` with a validation split, else ``"last"``, unless given."""
        return self.select or ("best" if self.val_fraction > 0 else "last")

    @property
    def gain_rate(self) -> float:
        """The gain tables' learning rate (``gain_lr``, else ``lr``)."""
        return self.lr if self.gain_lr is None else self.gain_lr
