"""End-to-end runs on a tiny config: artefacts, resume, load_model round trip, missing paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

import probslot
from probslot.config import load_config
from probslot.io import RunPaths
from probslot.models import build_model
from probslot.training import load_checkpoint, train


class _RecordStart(pl.Callback):
    """Records the trainer and optimiser state when (resumed) training starts."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        opt = trainer.optimizers[0]
        states = [opt.state[p] for g in opt.param_groups for p in g["params"] if p in opt.state]
        self.seen = {
            "global_step": trainer.global_step,
            "adam_steps": {float(s["step"]) for s in states},
            "exp_avg": [s["exp_avg"].clone() for s in states],
            "weights": {k: v.clone() for k, v in pl_module.model.state_dict().items()},
            "ema_updates": int(pl_module.ema.num_updates),
        }


def _cfg(tiny_yaml: Path, *overrides: str):
    return load_config(tiny_yaml, list(overrides))


def test_run_writes_every_artefact(tiny_yaml: Path) -> None:
    result = train(_cfg(tiny_yaml), progress=False)
    paths = RunPaths(result.run_dir)
    for f in (
        paths.config,
        paths.last_ckpt,
        paths.best_ckpt,
        paths.weights,
        paths.metrics,
        paths.model_card,
    ):
        assert f.is_file(), f
    assert sorted(p.name for p in paths.panels.glob("*.png")) == ["step_0000002.png"]
    assert (paths.logs / "csv" / "metrics.csv").is_file()
    assert list((paths.logs / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["steps"] == 3
    assert 0.0 <= metrics["mse"] <= 1.0
    assert -1.0 <= metrics["fg_ari"] <= 1.0
    assert load_config(paths.config) == _cfg(tiny_yaml)  # resolved config round-trips
    assert "fg_ari" in paths.model_card.read_text()
    # no temporary files are left in the run directory
    assert not [p for p in paths.root.iterdir() if p.name.startswith(".")]


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tiny_yaml: Path) -> None:
    train(_cfg(tiny_yaml, "trainer.max_steps=1"), progress=False)
    with pytest.raises(FileExistsError, match=r"already holds a checkpoint.*--resume"):
        train(_cfg(tiny_yaml, "trainer.max_steps=1"), progress=False)


def test_resume_continues_step_count_and_optimizer_state(tiny_yaml: Path) -> None:
    first = train(_cfg(tiny_yaml, "trainer.max_steps=2"), progress=False)
    ckpt = load_checkpoint(RunPaths(first.run_dir).last_ckpt)
    assert ckpt["global_step"] == 2

    recorder = _RecordStart()
    second = train(
        _cfg(tiny_yaml, "trainer.max_steps=5"),
        resume=True,
        progress=False,
        extra_callbacks=[recorder],
    )
    seen = recorder.seen
    assert seen["global_step"] == 2
    assert seen["adam_steps"] == {2.0}
    assert seen["ema_updates"] == 2
    saved_opt = ckpt["optimizer_states"][0]["state"]
    for i, exp_avg in enumerate(seen["exp_avg"]):
        torch.testing.assert_close(exp_avg, saved_opt[i]["exp_avg"])
    for k, v in seen["weights"].items():
        torch.testing.assert_close(v, ckpt["state_dict"][f"model.{k}"])
    assert second["steps"] == 5
    again = load_checkpoint(RunPaths(second.run_dir).last_ckpt)
    assert again["global_step"] == 5
    assert {float(s["step"]) for s in again["optimizer_states"][0]["state"].values()} == {5.0}


def test_resume_without_checkpoint_is_an_error(tiny_yaml: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cannot resume: '.*last.ckpt' does not exist"):
        train(_cfg(tiny_yaml), resume=True, progress=False)


def test_load_model_round_trips_outputs_exactly(tiny_yaml: Path) -> None:
    result = train(_cfg(tiny_yaml), progress=False)
    paths = RunPaths(result.run_dir)
    loaded = probslot.load_model(paths.root)
    assert not loaded.training

    # Reference: the EMA weights inside the Lightning checkpoint, in a model built directly.
    ckpt = load_checkpoint(paths.last_ckpt)
    ema_state = {
        k.removeprefix("ema.module."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("ema.module.")
    }
    reference = build_model(_cfg(tiny_yaml).model)
    reference.load_state_dict(ema_state)
    reference.eval()
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():  # slot initialisation is random: same seed for both forward passes
        torch.manual_seed(7)
        a = loaded(images)
        torch.manual_seed(7)
        b = reference(images)
    assert torch.equal(a.recon, b.recon)
    assert torch.equal(a.masks, b.masks)
    assert torch.equal(a.attn_masks, b.attn_masks)
    assert set(load_file(str(paths.weights))) == set(ema_state)


def test_load_model_does_not_import_training_code(tiny_yaml: Path) -> None:
    result = train(_cfg(tiny_yaml, "trainer.max_steps=1"), progress=False)
    code = (
        "import sys, probslot; probslot.load_model(sys.argv[1]); "
        "assert 'probslot.training' not in sys.modules, 'training imported'"
    )
    subprocess.run([sys.executable, "-c", code, str(result.run_dir)], check=True)


def test_load_model_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run directory '.*nope' does not exist"):
        probslot.load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"has no config.yaml.*not a run directory"):
        probslot.load_model(tmp_path)


def test_bf16_mixed_precision_and_deterministic_run(tiny_yaml: Path) -> None:
    cfg = _cfg(
        tiny_yaml,
        "trainer.max_steps=2",
        "trainer.precision=bf16-mixed",
        "trainer.deterministic=true",
        "trainer.panel_every=0",
    )
    result = train(cfg, progress=False)
    assert result["steps"] == 2
    assert torch.isfinite(torch.tensor(result["nll"]))
    # EMA weights are exported in float32 even when the forward pass ran in bfloat16
    weights = load_file(str(RunPaths(result.run_dir).weights))
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}
