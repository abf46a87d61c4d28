"""Hardware target descriptions: one JSON file per chip in ``targets/`` (adding a chip = adding a file).

A file holds bit widths, per-core limits, chip size and energy per operation. Every number is a
*figure* ``{"value", "unit", "source", "estimate", "note"?}`` whose ``source`` names an entry of the
file's ``sources``; ``estimate: true`` marks derived or proxy figures. A limit that is not published
is ``null`` and is then not checked by the mapper.

``--target lava`` (the backend name) means the default chip, ``loihi2``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from neurocomp.errors import BadInput

SCHEMA = "neurocomp.target/1"
DEFAULT_FOR_BACKEND = {"lava": "loihi2"}

# section -> {field: (required, allowed units)}; a field that is not required may be null.
FIELDS = {
    "bits": {k: (True, ("bit",)) for k in ("weight", "current", "voltage", "decay", "threshold", "delay")},
    "core": {
        "neurons": (True, None),
        "synaptic_memory": (True, ("bit",)),
        "bits_per_synapse": (True, ("bit",)),
        "fan_in": (False, None),
        "fan_out": (False, None),
    },
    "chip_limits": {"cores": (True, None)},
    "energy": {k: (True, ("pJ",)) for k in ("synaptic_op", "neuron_update_active", "neuron_update_inactive",
                                            "spike", "hop")},
}


def targets_dir() -> str:
    """The folder of target files: ``$NEUROCOMP_TARGETS`` or ``targets/`` next to the package."""
    env = os.environ.get("NEUROCOMP_TARGETS")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "targets")


def available() -> list[str]:
    d = targets_dir()
    if not os.path.isdir(d):
        return []
    return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".json"))


class TargetError(BadInput):
    """A target file that is missing or does not follow the schema."""


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    doc: dict

    def figure(self, section: str, field: str):
        """The figure dict or None (unpublished)."""
        return self.doc[section].get(field)

    def value(self, section: str, field: str):
        f = self.figure(section, field)
        return None if f is None else f["value"]

    @property
    def backend(self) -> str:
        return self.doc["backend"]

    def limits(self) -> dict:
        """The mapper's limits: plain numbers, None where unpublished."""
        return {"neurons_per_core": self.value("core", "neurons"),
                "synaptic_memory_bits": self.value("core", "synaptic_memory"),
                "bits_per_synapse": self.value("core", "bits_per_synapse"),
                "fan_in": self.value("core", "fan_in"),
                "fan_out": self.value("core", "fan_out"),
                "cores_per_chip": self.value("chip_limits", "cores")}

    def energy_pj(self) -> dict:
        return {k: self.value("energy", k) for k in FIELDS["energy"]}

    def source_text(self, key: str) -> str:
        return self.doc["sources"][key]


def validate(doc, where: str) -> list[str]:
    """Every schema problem of a target document, as ``'<file>: <field>: <problem>'`` lines."""
    probs = []

    def bad(field, msg):
        probs.append(f"{where}: {field}: {msg}")

    if not isinstance(doc, dict):
        return [f"{where}: the file must hold a JSON object"]
    if doc.get("schema") != SCHEMA:
        bad("schema", f"is {doc.get('schema')!r}, expected {SCHEMA!r}")
    for key in ("name", "chip", "backend", "description"):
        if not isinstance(doc.get(key), str) or not doc.get(key):
            bad(key, "missing or not a non-empty string")
    sources = doc.get("sources")
    if not isinstance(sources, dict) or not sources or not all(isinstance(v, str) and v for v in sources.values()):
        bad("sources", "missing, empty, or not a mapping of key -> citation text")
        sources = {}
    for section, fields in FIELDS.items():
        sec = doc.get(section)
        if not isinstance(sec, dict):
            bad(section, "missing section (an object)")
            continue
        for extra in sorted(set(sec) - set(fields)):
            bad(f"{section}.{extra}", "unknown field")
        for field, (required, units) in fields.items():
            name = f"{section}.{field}"
            if field not in sec:
                bad(name, "missing (use null for an unpublished figure)" if not required else "missing")
                continue
            fig = sec[field]
            if fig is None:
                if required:
                    bad(name, "is null but required")
                continue
            if not isinstance(fig, dict):
                bad(name, "must be an object {value, unit, source, estimate}")
                continue
            for extra in sorted(set(fig) - {"value", "unit", "source", "estimate", "note"}):
                bad(f"{name}.{extra}", "unknown key")
            v = fig.get("value")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                bad(f"{name}.value", f"must be a positive number, got {v!r}")
            if not isinstance(fig.get("unit"), str):
                bad(f"{name}.unit", "missing or not a string")
            elif units and fig["unit"] not in units:
                bad(f"{name}.unit", f"is {fig['unit']!r}, expected one of {', '.join(units)}")
            if not isinstance(fig.get("estimate"), bool):
                bad(f"{name}.estimate", "missing or not true/false")
            if fig.get("source") not in sources:
                bad(f"{name}.source", f"{fig.get('source')!r} is not a key of 'sources'")
            if "note" in fig and not isinstance(fig["note"], str):
                bad(f"{name}.note", "not a string")
    return probs


def load_target(name_or_path: str) -> Target:
    """Load and validate a target by name (``loihi2``), backend name (``lava``) or file path."""
    name = DEFAULT_FOR_BACKEND.get(name_or_path, name_or_path)
    if name.endswith(".json") or os.sep in name:
        path = name
    else:
        path = os.path.join(targets_dir(), name + ".json")
    if not os.path.isfile(path):
        raise TargetError(f"unknown target {name_or_path!r}", where=path,
                          hint=f"known targets: {', '.join(['lava'] + available())}; or add targets/<name>.json")
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as e:
        raise TargetError(f"not valid JSON ({e.msg} at line {e.lineno})", where=path, hint="fix the file")
    probs = validate(doc, path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if not probs and doc["name"] != stem:
        probs.append(f"{path}: name: is {doc['name']!r} but the file is called {stem}.json")
    if probs:
        raise TargetError(f"{len(probs)} schema problem(s): " + "; ".join(p.split(': ', 1)[1] for p in probs),
                          where=path, hint="see neurocomp/targets.py FIELDS for the schema")
    return Target(name=doc["name"], path=os.path.abspath(path), doc=doc)
