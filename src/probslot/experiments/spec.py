"""What one run of a study is: a `RunSpec`, its fingerprint and its files on disk.

A study is a list of runs. Each run is a `RunSpec`: a unique name (its directory under
``OUT/runs/``), the model group and seed it belongs to (what the analysis pools over), a kind
(``train``: a slot autoencoder trained and evaluated through `probslot.training` and
`probslot.evaluation`; ``toy2d``: the paper's 2D model, `probslot.experiments.toy2d`) and a
JSON payload that fixes everything the run does. The **fingerprint** is the SHA-256 of the
canonical JSON of (kind, payload): a finished run is reused only when its recorded fingerprint
equals the one requested, so a changed setting can never pass off an old result as a new one.

Files of a run ``OUT/runs/NAME/``: ``spec.json`` (written before it starts), ``log.txt`` (its
output), ``result.json`` (written atomically when it finished: its presence with the right
fingerprint is what "finished" means) or ``failed.json`` (the error of the last attempt).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probslot.atomic import atomic_write_text
from probslot.validation import check_int

__all__ = [
    "FAILED_FILE",
    "KINDS",
    "LOG_FILE",
    "RESULT_FILE",
    "SPEC_FILE",
    "RunFiles",
    "RunSpec",
    "canonical_json",
    "read_json",
]

SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"
FAILED_FILE = "failed.json"
LOG_FILE = "log.txt"
#: kinds of run the worker executes (`probslot.experiments.worker`)
KINDS = ("train", "toy2d")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data give equal text (and fingerprints)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path` (a ValueError naming the file when it is not one)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to redo that step") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object; got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class RunSpec:
    """One run of a study.

    Attributes:
        name: unique in the study; letters, digits, ``.``, ``_``, ``-`` (the directory name).
        group: what the analysis pools seeds over (a model, a sweep point), e.g. ``"PSA-Proj"``.
        seed: the run's seed (>= 0); the payload carries it wherever it acts.
        kind: one of `KINDS`.
        payload: JSON-serialisable settings; for ``train``: ``{"config": RunConfig dict,
            "evaluate": EvalConfig options, "prune": prune_analysis options or absent}``.
        info: JSON-serialisable labels for tables and figures (not part of the fingerprint).
    """

    name: str
    group: str
    seed: int
    kind: str
    payload: Mapping[str, Any]
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"run name must be letters, digits, '.', '_' or '-' (a directory name); "
                f"got {self.name!r}"
            )
        check_int("seed", self.seed, low=0)
        if self.kind not in KINDS:
            raise ValueError(f"run kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        try:
            canonical_json(self.payload)
            canonical_json(self.info)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"run {self.name!r}: payload and info must be plain JSON ({err})"
            ) from err

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of (kind, payload)."""
        text = canonical_json({"kind": self.kind, "payload": self.payload})
        return hashlib.sha256(text.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "seed": self.seed,
            "kind": self.kind,
            "payload": self.payload,
            "info": self.info,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        keys = ("name", "group", "seed", "kind", "payload")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"a run spec needs {', '.join(keys)}; missing {', '.join(missing)}")
        spec = cls(**{k: data[k] for k in keys}, info=data.get("info", {}))
        recorded = data.get("fingerprint")
        if recorded is not None and recorded != spec.fingerprint:
            raise ValueError(
                f"run spec {spec.name!r} was edited after it was written (its fingerprint "
                f"{recorded[:12]} does not match its settings {spec.fingerprint[:12]}); "
                "rerun the study command to rewrite it"
            )
        return spec


@dataclass(frozen=True)
class RunFiles:
    """The files of run `name` under a study folder ``OUT``: ``OUT/runs/NAME/...``."""

    root: Path

    @classmethod
    def of(cls, out: Path, name: str) -> RunFiles:
        return cls(Path(out) / "runs" / name)

    @property
    def spec(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def result(self) -> Path:
        return self.root / RESULT_FILE

    @property
    def failed(self) -> Path:
        return self.root / FAILED_FILE

    @property
    def log(self) -> Path:
        return self.root / LOG_FILE

    def write_spec(self, spec: RunSpec) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.spec, json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")

    def finished(self, spec: RunSpec) -> dict[str, Any] | None:
        """The run's result when it finished with `spec`'s fingerprint, else None."""
        if not self.result.is_file():
            return None
        result = read_json(self.result)
        if result.get("fingerprint") != spec.fingerprint:
            return None
        return result
