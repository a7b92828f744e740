"""Numerical guards: a non-finite step never moves the weights, is counted and logged; a streak
of them stops training with a clear message and leaves the last good checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from probslot.config import OptimConfig, load_config
from probslot.io import RunPaths
from probslot.training import SlotLightningModule, TrainingDiverged, load_checkpoint, train


class _NanLossAt(pl.Callback):
    """Makes the training loss NaN at the given optimiser steps (wraps the module's nll)."""

    def __init__(self, steps: set[int] | None = None, start: int | None = None) -> None:
        self.steps, self.start = steps or set(), start
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        nll = pl_module.nll

        def poisoned(out: Any, images: torch.Tensor) -> torch.Tensor:
            step = pl_module.global_step
            bad = step in self.steps or (self.start is not None and step >= self.start)
            return nll(out, images) * (float("nan") if bad else 1.0)

        if pl_module.training:
            pl_module.nll = poisoned

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.weights[trainer.global_step] = {
            k: v.clone() for k, v in pl_module.model.state_dict().items()
        }


def _cfg(tiny_yaml: Path, *overrides: str):
    return load_config(
        tiny_yaml,
        [
            "trainer.progress=none",
            "trainer.checkpoint_every=1",
            "trainer.val_every=100",
            *overrides,
        ],
    )


def test_non_finite_steps_are_skipped_counted_and_logged(tiny_yaml: Path) -> None:
    poison = _NanLossAt(steps={2, 3})
    result = train(_cfg(tiny_yaml, "trainer.max_steps=6"), extra_callbacks=[poison])
    w = poison.weights
    for k in w[2]:  # steps 2 and 3 did not move any weight; step 4 (finite) did
        assert torch.equal(w[2][k], w[3][k]) and torch.equal(w[3][k], w[4][k]), k
    assert any(not torch.equal(w[4][k], w[5][k]) for k in w[4])
    assert result["nonfinite_steps"] == 2 and result["skipped_updates"] == 2
    assert result["steps"] == 6
    paths = RunPaths(result.run_dir)
    assert json.loads(paths.metrics.read_text())["nonfinite_steps"] == 2
    rows = list(csv.DictReader((paths.logs / "csv" / "metrics.csv").read_text().splitlines()))
    logged = [float(r["train/nonfinite_steps"]) for r in rows if r.get("train/nonfinite_steps")]
    assert logged == sorted(logged) and logged[0] == 0.0 and logged[-1] == 2.0
    ckpt = load_checkpoint(paths.last_ckpt)
    assert ckpt["probslot"]["nonfinite_steps"] == 2
    assert all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )


def test_a_streak_of_bad_steps_stops_training_and_keeps_the_last_good_checkpoint(
    tiny_yaml: Path,
) -> None:
    cfg = _cfg(tiny_yaml, "trainer.max_steps=20", "optim.max_bad_steps=3")
    with pytest.raises(
        TrainingDiverged,
        match=r"training stopped at step 6: 3 consecutive steps had a non-finite loss or gradient "
        r"\(optim.max_bad_steps = 3; 3 in all\).*Lower optim.lr",
    ):
        train(cfg, extra_callbacks=[_NanLossAt(start=3)])
    paths = RunPaths(Path(cfg.trainer.output_dir) / cfg.trainer.run_name)
    ckpt = load_checkpoint(paths.last_ckpt)
    assert ckpt["global_step"] == 3  # written after the last good step, not during the streak
    assert ckpt["probslot"]["consecutive_bad_steps"] == 0
    assert not paths.weights.exists() and not paths.metrics.exists()


def test_non_finite_gradient_is_dropped_even_with_skipping_disabled() -> None:
    class Stub(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 5)

    lit = SlotLightningModule(Stub(), OptimConfig(skip_grad_norm=0.0, max_bad_steps=2), 10)
    lit.log = lambda *a, **k: None  # type: ignore[method-assign]
    for step in range(2):
        for p in lit.model.parameters():
            p.grad = torch.full_like(p, float("inf"))
        lit.on_before_optimizer_step(torch.optim.SGD(lit.model.parameters(), lr=1.0))
        assert all(p.grad is None for p in lit.model.parameters())
        assert lit.diverged() == (step == 1)
    assert (lit.nonfinite_steps, lit.consecutive_bad_steps, int(lit.skipped_updates)) == (2, 2, 2)
    for p in lit.model.parameters():
        p.grad = torch.ones_like(p)
    lit.on_before_optimizer_step(torch.optim.SGD(lit.model.parameters(), lr=1.0))
    assert lit.consecutive_bad_steps == 0 and not lit.diverged()
    with pytest.raises(ValueError, match=r"optim.max_bad_steps must be an integer >= 0"):
        OptimConfig(max_bad_steps=-1)
