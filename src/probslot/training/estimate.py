"""How long a training run will take, said before it starts.

`probslot train` (and `probslot demo`) print an estimate before the first step of a long run
(`LONG_RUN_STEPS` steps or more still to train). It comes from a **probe**: three training steps
(forward, likelihood, backward, an AdamW update) of a deep copy of the model on random images of
the run's batch shape, on the device the run trains on, and two batches loaded from the run's
training data, all inside `torch.random.fork_rng`, so the run itself is untouched (the same
weights, bit for bit, with or without the probe; tested). The first step counts FLOPs and warms
up; the faster of the other two is the step time. Two figures follow:

* (step time + batch load time) × the steps still to train: the estimate for *this* machine
  (with DataLoader workers the two overlap); validation, panels, logging and the loop's own
  overhead come on top;
* the step's FLOPs (`torch.utils.flop_counter`) over a throughput measured once on the *other*
  kind of machine (`CPU_REFERENCE`, `GPU_REFERENCE`; docs/benchmarks.md): rough, since one
  figure stands for every model. Small models do not fill a GPU, so its estimate is never below
  the step time of the launch-bound demo there (`GPU_MIN_STEP_S`).

Feature models reading a feature cache are not probed (their input is the cache's tokens).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from probslot.clock import format_duration
from probslot.data.config import build_split
from probslot.data.contract import collate

__all__ = [
    "CPU_REFERENCE",
    "GPU_MIN_STEP_S",
    "GPU_REFERENCE",
    "LONG_RUN_STEPS",
    "StepCost",
    "estimate_lines",
    "measure_step",
]

#: runs with fewer steps left than this start without an estimate
LONG_RUN_STEPS = 500


@dataclass(frozen=True)
class Reference:
    """A training step's sustained throughput measured once on one kind of machine."""

    name: str
    flops_per_s: float
    source: str


#: the 2-core CPU these docs were written on, 2 threads, quiet: `sprites_psa`'s batch-32 step
#: (38.8 GFLOP by `torch.utils.flop_counter`) took 0.43 s in `measure_step` (docs/benchmarks.md)
CPU_REFERENCE = Reference("a 2-core CPU", 38.8e9 / 0.43, "sprites_psa's step on the 2-core CPU")
#: one NVIDIA H200: `bench_train_step.py --device cuda --batch 64 --image-size 64`, PSA with 5
#: iterations (311 GFLOP a step) took 23.3 ms in float32 (docs/benchmarks.md, GPU section)
GPU_REFERENCE = Reference("one H200 GPU", 311e9 / 0.0233, "the 64×64 PSA step on an H200")
#: the demo (24×24 images, batch 16) trained at 21 steps/s on the H200: kernel launches, not
#: arithmetic, set a small model's step time there
GPU_MIN_STEP_S = 1 / 21


@dataclass(frozen=True)
class StepCost:
    """One training step of a model, measured by `measure_step`.

    Attributes:
        flops: FLOPs of the forward pass, the likelihood and the backward pass.
        seconds: wall-clock seconds of one such step and its AdamW update on `device` (the
            faster of the timed probes).
        device: where it was measured, e.g. ``"cpu, 2 threads"``.
        on_gpu: whether `device` is a GPU.
        load_seconds: seconds to load one batch of the run's training data in the main
            process (0 when not measured).
        workers: DataLoader worker processes (they load while the model trains).
    """

    flops: int
    seconds: float
    device: str
    on_gpu: bool
    load_seconds: float = 0.0
    workers: int = 0

    @property
    def step_seconds(self) -> float:
        """A training step with its data: loading adds to the step in the main process and
        overlaps it with workers (then the slower of the two sets the pace)."""
        if self.workers == 0:
            return self.seconds + self.load_seconds
        return max(self.seconds, self.load_seconds / self.workers)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda, {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"{device.type}, {threads} thread{'s' if threads > 1 else ''}"


def measure_step(
    model: nn.Module,
    batch_size: int,
    device: str | torch.device = "cpu",
    probes: int = 3,
) -> StepCost:
    """Time a training step (forward, likelihood, backward, AdamW update) of a deep copy of
    `model` on random images; `model` is not touched.

    The first probe counts FLOPs (and warms up); the step time is the fastest of the others, so
    a machine busy for a moment weighs less. Random states are forked, so the caller's stay as
    they were.
    """
    device = torch.device(device)
    probe = copy.deepcopy(model).to(device).train()
    size = tuple(probe.image_size)
    fork = [device.index or 0] if device.type == "cuda" else []
    times = []
    flops = 0
    optimiser = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    with torch.random.fork_rng(devices=fork):
        images = torch.rand(batch_size, 3, *size, device=device)
        for i in range(max(probes, 2)):
            optimiser.zero_grad(set_to_none=True)
            counter = FlopCounterMode(display=False) if i == 0 else None
            _sync(device)
            start = time.perf_counter()
            if counter is not None:
                with counter:
                    probe.loss(images, probe(images)).backward()
                flops = int(counter.get_total_flops())
            else:
                probe.loss(images, probe(images)).backward()
            optimiser.step()
            _sync(device)
            times.append(time.perf_counter() - start)
    return StepCost(flops, min(times[1:]), _describe(device), device.type == "cuda")


def estimate_lines(cost: StepCost, steps: int, max_minutes: float = 0.0) -> list[str]:
    """The lines printed before a run of `steps` more steps: this machine, the other kind, the cap."""
    here = cost.step_seconds * steps
    lines = [
        f"estimated time: {steps:,} steps at {cost.step_seconds:.3g} s a step with its data "
        f"({cost.device}, measured just now; validation and panels add to it): about "
        f"{format_duration(here)}"
    ]
    gflop = cost.flops / 1e9
    other = CPU_REFERENCE if cost.on_gpu else GPU_REFERENCE
    per_step = cost.flops / other.flops_per_s
    why = f"the step's {gflop:.3g} GFLOP at the throughput of {other.source}"
    if not cost.on_gpu and per_step < GPU_MIN_STEP_S:
        per_step = GPU_MIN_STEP_S
        why = (
            f"a step of {gflop:.3g} GFLOP is launch-bound there: the demo's "
            f"{GPU_MIN_STEP_S * 1000:.0f} ms a step"
        )
    lines.append(
        f"  on {other.name}: roughly {format_duration(per_step * steps)} ({why}; "
        "docs/benchmarks.md)"
    )
    if max_minutes > 0 and here > max_minutes * 60:
        lines.append(
            f"  trainer.max_minutes={max_minutes:g} stops it after {format_duration(max_minutes * 60)}, "
            f"at about step {int(max_minutes * 60 / cost.step_seconds):,}"
        )
    return lines


def announce(model: nn.Module, cfg: Any, done_steps: int = 0) -> list[str]:
    """`estimate_lines` for run config `cfg` (nothing for short runs or feature-cache runs)."""
    steps = cfg.trainer.max_steps - done_steps
    if steps < LONG_RUN_STEPS or cfg.data.feature_cache is not None:
        return []
    accelerator = cfg.trainer.accelerator
    device = (
        "cuda"
        if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    cost = measure_step(model, cfg.data.batch_size, device)
    load = _load_seconds(cfg)
    cost = replace(cost, load_seconds=load, workers=cfg.data.num_workers)
    return estimate_lines(cost, steps, cfg.trainer.max_minutes)


def _load_seconds(cfg: Any) -> float:
    """Seconds to load and collate one training batch in this process (the faster of two)."""
    dataset = build_split(cfg.data, "train")
    b = min(cfg.data.batch_size, len(dataset))
    times = []
    with torch.random.fork_rng(devices=[]):
        for r in range(2):
            start = time.perf_counter()
            collate([dataset[(r * b + i) % len(dataset)] for i in range(b)])
            times.append(time.perf_counter() - start)
    return min(times)
