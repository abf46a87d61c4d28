"""The memory guard: sizes known from a header or a declaration are checked against a budget
*before* anything that large is allocated.

The budget is, in this order: the environment variable ``NEUROCOMP_MAX_MEMORY`` (``4G``, ``512M``,
``1.5GiB``, ``1000000`` bytes), or the kernel's estimate of memory available without swapping
(``MemAvailable`` in ``/proc/meminfo``), or 8 GiB where neither exists. ``set_budget`` overrides
both (the ``--max-memory`` flag of compile / simulate / report calls it).

    from neurocomp import memory
    memory.check(n_bytes, what="weights of layer '3'", where="model.pt: architecture.3")

raises :class:`neurocomp.errors.OutOfBudget` naming ``where``, ``what`` and the estimate.
:func:`plan_batch` picks the batch size of a batched run (calibration, the reference simulator, the
cross-check) from an estimate per sample and per layer, or refuses the job in one line.
"""
from __future__ import annotations

import os
import re

from neurocomp.errors import OutOfBudget

ENV = "NEUROCOMP_MAX_MEMORY"
FALLBACK = 8 << 30
_override: int | None = None

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text) -> int:
    """``'4G'`` -> 4 GiB in bytes; ``'512M'``, ``'1.5GiB'``, ``'100k'``, ``'12345'`` (bytes). Units
    are binary (K = 1024). Raises ``ValueError`` on anything else."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 4G, 512M or a number of bytes)")
    n = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not n >= 1:
        raise ValueError(f"size {text!r} is below one byte")
    return int(n)


def human(n: float) -> str:
    """Bytes as a short human-readable figure (``40.0 GiB``)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"   # pragma: no cover


def available() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes (``None`` where there is none)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def set_budget(n_bytes) -> None:
    """Fix the budget for this process (``None`` returns to the environment / MemAvailable)."""
    global _override
    _override = None if n_bytes is None else (parse_size(n_bytes) if isinstance(n_bytes, str) else int(n_bytes))


def budget() -> tuple[int, str]:
    """The budget in bytes and where it comes from (for messages)."""
    if _override is not None:
        return _override, "--max-memory"
    env = os.environ.get(ENV)
    if env:
        try:
            return parse_size(env), ENV
        except ValueError as e:
            raise OutOfBudget(str(e), where=ENV, hint="set it like NEUROCOMP_MAX_MEMORY=4G") from None
    avail = available()
    if avail is not None:
        return avail, "available memory (MemAvailable)"
    return FALLBACK, "the default budget"


def check(n_bytes, what: str, where: str | None = None, hint: str | None = None) -> int:
    """Refuse ``n_bytes`` (an estimate of what is about to be allocated) above the budget.
    Returns the estimate as an int so callers can add estimates up."""
    n = int(n_bytes)
    limit, source = budget()
    if n > limit:
        raise OutOfBudget(f"{what} would need {human(n)}, more than the memory budget of {human(limit)} "
                          f"({source})", where=where,
                          hint=hint or f"use a smaller model or input, or raise {ENV} (e.g. {ENV}=16G) "
                                       "if the machine really has the memory")
    return n


def product(shape) -> int:
    """Exact element count of a shape (Python ints, no overflow)."""
    n = 1
    for s in shape:
        n *= int(s)
    return n


WORKING_SET = 1 << 30    # what a batched run aims its batch at (the budget permitting): peak stays bounded


def plan_batch(per_sample: dict, samples: int, batch: int | None = None, default: int = 256, fixed: int = 0,
               what: str = "the run", where: str | None = None, flag: str = "--batch-size",
               fit_hint: str | None = None) -> int:
    """The batch size for a run whose estimated allocation is ``fixed`` bytes plus ``per_sample`` bytes
    (``{layer name: bytes for one sample}``, what each layer holds) per sample of a batch.

    ``batch`` given: it must fit the budget, else :class:`OutOfBudget` names the largest layer, the
    estimate and the batch size that fits. ``batch`` None: the largest batch up to ``default`` (and
    ``samples``) whose estimate stays within both the budget and :data:`WORKING_SET`, at least 1; a job
    whose single sample does not fit is refused the same way. The hint names ``flag`` (or ``fit_hint``,
    formatted with ``n``, the batch that fits). Nothing is allocated here."""
    limit, source = budget()
    one = max(1, int(sum(int(v) for v in per_sample.values())))
    big = max(per_sample, key=lambda k: per_sample[k]) if per_sample else None
    fits = max(0, (limit - int(fixed)) // one)
    samples = max(1, int(samples))

    def refuse(b, hint):
        layer = f"layer '{big}' ({human(b * per_sample[big])}) and the rest" if big is not None else "it"
        raise OutOfBudget(f"{what} at batch size {b}: {layer} needs ~{human(fixed + b * one)}, "
                          f"budget {human(limit)} ({source})", where=where, hint=hint)

    if batch is not None:
        batch = max(1, min(int(batch), samples))
        if fixed + batch * one > limit:
            refuse(batch, (fit_hint.format(n=fits) if fit_hint else
                           f"use {flag} {fits} (or leave {flag} out: it is then chosen to fit)") if fits else
                   _raise_hint(fixed + one))
        return batch
    if fits < 1:
        refuse(1, _raise_hint(fixed + one))
    aim = max(1, (min(limit, max(WORKING_SET, int(fixed) + one)) - int(fixed)) // one)
    return max(1, min(default, samples, fits, aim))


def _raise_hint(need: int) -> str:
    return (f"one sample alone needs ~{human(need)}: raise --max-memory or {ENV} (e.g. {ENV}="
            f"{max(1, -(-need // (1 << 30)))}G) if the machine has the memory, or use a smaller input or fewer "
            "timesteps")
