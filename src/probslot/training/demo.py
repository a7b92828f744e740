"""The main job: train PSA on built-in sprites on the CPU (``probslot demo`` / ``make demo``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from probslot.config import load_config
from probslot.training.run import TrainResult, train, with_trainer

__all__ = ["run_demo"]


def run_demo(
    out: str | Path = "runs/demo",
    config: str | Path = "demo",
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> TrainResult:
    """Train the ``demo`` preset into `out` (overwriting an earlier demo) and return its figures."""
    out = Path(out)
    cfg = load_config(config, list(overrides))
    cfg = with_trainer(cfg, output_dir=str(out.parent), run_name=out.name)
    return train(cfg, overwrite=True, progress=progress)
