"""The shape of a study: its scales, the runs it plans and the analysis it writes.

A `Study` names its scales (`Scale`: ``cpu`` for this kind of 2-core machine, ``gpu`` for one
accelerator, ``tiny`` for the smoke tests), plans its runs for a scale and a number of seeds
(`Study.plan` → `RunSpec` list) and turns the finished runs' results into a `StudyOutput`
(`Study.analyse`): the headline figures (``summary.json``), readable tables, figures and the
lines of an honest reading. `probslot.experiments.runner` does everything in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probslot.experiments.spec import RunSpec
from probslot.reports.tables import Table

__all__ = [
    "STUDIES",
    "Scale",
    "Study",
    "StudyContext",
    "StudyOutput",
    "register_study",
]


@dataclass(frozen=True)
class Scale:
    """A preset of a study: how many seeds by default and the study's own settings.

    Attributes:
        name: ``cpu``, ``gpu`` or ``tiny``.
        seeds: default number of seeds.
        description: one line for ``--help`` and the manifest (what it costs, on what).
        settings: study-specific settings (steps, data sizes, ...), recorded in the manifest.
        min_seeds: the fewest seeds the study's analysis can use (e.g. 2 for cross-seed pairs).
    """

    name: str
    seeds: int
    description: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    min_seeds: int = 1


@dataclass(frozen=True)
class StudyContext:
    """What `Study.analyse` gets: the plan, the finished results and where to write."""

    study: str
    scale: Scale
    seeds: int
    specs: Sequence[RunSpec]
    results: Mapping[str, Mapping[str, Any]]
    out: Path

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def figure_path(self, name: str) -> Path:
        path = self.out / "figures" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def groups(self) -> dict[str, list[RunSpec]]:
        """Run specs by group, in plan order."""
        groups: dict[str, list[RunSpec]] = {}
        for spec in self.specs:
            groups.setdefault(spec.group, []).append(spec)
        return groups


@dataclass(frozen=True)
class StudyOutput:
    """What a study's analysis found.

    Attributes:
        summary: the headline figures under plain names (``summary.json``).
        tables: readable tables (``table.md`` and ``results.md``).
        figures: PNG files written under ``OUT/figures/``.
        reading: sentences on what the figures mean, generated from them (``results.md``).
    """

    summary: Mapping[str, Any]
    tables: Sequence[Table]
    figures: Sequence[Path] = ()
    reading: Sequence[str] = ()


class Study:
    """Base class of a study; subclasses set the class attributes and the two methods."""

    name: str = ""
    title: str = ""
    description: str = ""
    scales: Mapping[str, Scale] = {}

    def scale(self, name: str) -> Scale:
        """The preset `name`; a ValueError naming the study's scales when it has none such."""
        if name not in self.scales:
            have = ", ".join(self.scales)
            raise ValueError(
                f"study {self.name!r} has no {name!r} scale; it has: {have}"
                + (
                    ". The real-data studies need a GPU and the datasets (docs/results.md)"
                    if name == "cpu"
                    else ""
                )
            )
        return self.scales[name]

    def plan(
        self, scale: Scale, seeds: int, overrides: Sequence[str] = ()
    ) -> list[RunSpec]:  # pragma: no cover - abstract
        """The runs for `scale` with seeds 0..seeds-1; dotted `overrides` apply to every
        training config (``trainer.accelerator=gpu``, ``data.root=DIR``)."""
        raise NotImplementedError

    def analyse(self, ctx: StudyContext) -> StudyOutput:  # pragma: no cover - abstract
        raise NotImplementedError


#: name → study; filled by the study modules (`probslot.experiments.catalog` imports them all)
STUDIES: dict[str, Study] = {}


def register_study(cls: type[Study]) -> type[Study]:
    """Class decorator: register one instance of `cls` in `STUDIES` under ``cls.name``."""
    if not cls.name or cls.name in STUDIES:
        raise ValueError(f"a study needs a new name; got {cls.name!r}")
    STUDIES[cls.name] = cls()
    return cls
