"""The time estimate a long run prints before it starts (`probslot.training.estimate`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from probslot.clock import format_duration
from probslot.config import RunConfig, load_config
from probslot.io import RunPaths
from probslot.models import build_model
from probslot.training import estimate, train
from probslot.training.estimate import (
    CPU_REFERENCE,
    GPU_MIN_STEP_S,
    GPU_REFERENCE,
    StepCost,
    estimate_lines,
    measure_step,
)
from tiny_runs import tiny_config


def _model() -> torch.nn.Module:
    return build_model(RunConfig.from_dict(tiny_config()).model)


def test_the_probe_leaves_model_and_random_state_untouched() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    cost = measure_step(model, batch_size=4)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert cost.flops > 0 and cost.seconds > 0 and not cost.on_gpu


def test_the_step_flops_grow_linearly_with_the_batch() -> None:
    """A training step's ops are per image plus a batch-independent part (the position
    embeddings of the grid), so the FLOPs are affine in the batch size, and mostly per image."""
    model = _model()
    f3, f6, f9 = (measure_step(model, b).flops for b in (3, 6, 9))
    assert f9 - f6 == f6 - f3
    assert f3 - (f6 - f3) < 0.01 * f3  # the fixed part


def test_the_lines_follow_the_step_cost() -> None:
    cpu = StepCost(flops=int(10e9), seconds=0.5, device="cpu, 2 threads", on_gpu=False)
    lines = estimate_lines(cpu, 10_000, max_minutes=30)
    assert f"about {format_duration(5_000)}" in lines[0] and "10,000 steps" in lines[0]
    gpu_time = max(10e9 / GPU_REFERENCE.flops_per_s, GPU_MIN_STEP_S) * 10_000
    assert f"roughly {format_duration(gpu_time)}" in lines[1] and GPU_REFERENCE.name in lines[1]
    assert "trainer.max_minutes=30" in lines[2] and "step 3,600" in lines[2]
    assert len(estimate_lines(cpu, 10_000, max_minutes=120)) == 2  # the cap does not bind
    big = StepCost(flops=int(2e12), seconds=0.2, device="cuda, H200", on_gpu=True)
    lines = estimate_lines(big, 1_000)
    assert f"roughly {format_duration(2e12 / CPU_REFERENCE.flops_per_s * 1_000)}" in lines[1]
    assert CPU_REFERENCE.name in lines[1]


def test_data_loading_adds_to_the_step_or_overlaps_it_with_workers() -> None:
    main = StepCost(1, seconds=0.3, device="cpu", on_gpu=False, load_seconds=0.1, workers=0)
    assert main.step_seconds == pytest.approx(0.4)
    two = StepCost(1, seconds=0.3, device="cpu", on_gpu=False, load_seconds=0.8, workers=2)
    assert two.step_seconds == pytest.approx(0.4)  # two workers load 0.8 s batches at 0.4 s each
    assert StepCost(1, 0.3, "cpu", False, 0.1, 2).step_seconds == 0.3  # the model sets the pace


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(12.4, "12 s"), (450, "7.5 min"), (1_500, "25 min"), (11_100, "3 h 05 min"),
     (2 * 86_400 + 4 * 3_600, "2 days 4 h")],
)  # fmt: skip
def test_durations_read_as_written(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_long_run_says_its_time_and_trains_the_same_weights(
    tiny_yaml: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the probe (a run counted as long) and without it, the weights are bit-identical."""
    weights = {}
    for name, threshold in (("probed", 1), ("plain", 10**9)):
        monkeypatch.setattr(estimate, "LONG_RUN_STEPS", threshold)
        cfg = load_config(tiny_yaml, [f"trainer.run_name={name}", "trainer.max_steps=2"])
        result = train(cfg, progress=False)
        weights[name] = load_file(RunPaths(result.run_dir).weights)
        printed = capsys.readouterr().out
        assert ("estimated time: 2 steps" in printed) == (name == "probed"), printed
    assert weights["probed"].keys() == weights["plain"].keys()
    assert all(torch.equal(weights["probed"][k], weights["plain"][k]) for k in weights["plain"])
