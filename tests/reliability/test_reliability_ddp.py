"""Distributed training through Lightning's DDP: 2 CPU processes on the gloo backend, launched by
`probslot train ... trainer.strategy=ddp` itself, against one process with the same global batch.

Both runs go through `fixed_noise_entry.py` (the same slot-initialisation noise for every image;
see there why). The global batch of 6 = 2 processes × 3 or 1 process × 6 images; the processes
see the same images per step (probslot.training.data), DDP averages their gradients, and AdamW,
clipping, the EMA and the validation figures (torchmetrics sums, synchronised) follow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from probslot.config import load_config
from probslot.models import build_model
from probslot.training import SlotLightningModule, load_checkpoint

ENTRY = Path(__file__).with_name("fixed_noise_entry.py")
STEPS = 6
LR = 1e-3  # optim.lr of the tiny config
#: float32 reductions run in another order (two half-batch means averaged by the all-reduce
#: instead of one mean): measured differences after 6 steps are at most ~3e-6
TOL = {"rtol": 1e-4, "atol": 1e-5}
#: AdamW divides by sqrt(v): a weight whose gradient is 0 up to rounding (v below this; e.g. the
#: alpha-mask bias of the decoder, shared by all slots, which the mask softmax cancels) is moved
#: by ±lr by rounding noise alone, differently in the two runs, within Adam's bound of lr a step
NOISE_V = 1e-14


def _train(
    tiny_yaml: Path, name: str, *overrides: str, env: dict[str, str] | None = None, rc: int = 0
) -> Path:
    cmd = [
        sys.executable,
        str(ENTRY),
        "train",
        "--config",
        str(tiny_yaml),
        "--no_progress",
        f"trainer.run_name={name}",
        f"trainer.max_steps={STEPS}",
        "trainer.val_every=3",
        "trainer.deterministic=true",
        "trainer.accelerator=cpu",
        "trainer.num_threads=1",
        *overrides,
    ]
    environ = {**os.environ, **(env or {})}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=environ)
    assert done.returncode == rc, done.stdout[-2000:] + done.stderr[-3000:]
    return tiny_yaml.parent / "runs" / name


@pytest.mark.slow
def test_two_ddp_processes_equal_one_process_and_resume_exactly(tiny_yaml: Path) -> None:
    ddp = _train(tiny_yaml, "ddp", "trainer.devices=2", "trainer.strategy=ddp", "data.batch_size=3")
    one = _train(tiny_yaml, "one", "trainer.devices=1", "data.batch_size=6")
    a, b = load_checkpoint(ddp / "last.ckpt"), load_checkpoint(one / "last.ckpt")
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["probslot"]["world_size"] == 2 and b["probslot"]["world_size"] == 1
    assert a["probslot"]["samples_seen"] == b["probslot"]["samples_seen"] == STEPS * 6
    rng = a["probslot"]["rng"]  # both processes' random states are saved, and they differ
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])
    # which weights had a gradient at rounding level, from the one-process run's AdamW moments
    cfg = load_config(one / "config.yaml")
    decay, no_decay = SlotLightningModule.parameter_groups(build_model(cfg.model))
    state = b["optimizer_states"][0]["state"]
    noise = {f"model.{n}": state[i]["exp_avg_sq"] < NOISE_V for i, n in enumerate(decay + no_decay)}
    assert 0 < sum(int(m.sum()) for m in noise.values()) <= 3  # the rare exception, not the rule
    worst = 0.0
    for key, value in b["state_dict"].items():
        mask = noise.get(key.replace("ema.module.", "model."), torch.zeros_like(value, dtype=bool))
        got = a["state_dict"][key]
        torch.testing.assert_close(got[~mask], value[~mask], **TOL)
        assert ((got[mask] - value[mask]).abs() <= 2 * LR * STEPS).all(), key
        worst = max(worst, (got[~mask] - value[~mask]).abs().max().item())
    pl.seed_everything(0, verbose=False)  # the run's initial weights, as train() builds them
    initial = build_model(cfg.model).state_dict()
    moved = max((b["state_dict"][f"model.{k}"] - v).abs().max().item() for k, v in initial.items())
    assert moved > 100 * worst  # training moved the weights far more than the two runs differ
    print(f"DDP vs one process after {STEPS} steps: max |Δw| {worst:.2e}, moved {moved:.2e}")
    ma = json.loads((ddp / "metrics.json").read_text())
    mb = json.loads((one / "metrics.json").read_text())
    for name in ("nll", "mse", "fg_ari", "fg_ari_attn"):
        assert ma[name] == pytest.approx(mb[name], rel=1e-4, abs=1e-5), name
    # one environment record, written by rank 0
    env = json.loads((ddp / "environment.json").read_text())
    assert len(env["sessions"]) == 1 and env["sessions"][0]["strategy"] == "ddp"

    # Stop and resume on 2 processes: SIGTERM to rank 0 at step 3 (its handler forwards it to
    # rank 1), exit 143 with last.ckpt at step 3 holding both random states; `--resume` ends
    # where the uninterrupted 2-process run ended, bit for bit.
    ddp_args = ("trainer.devices=2", "trainer.strategy=ddp", "data.batch_size=3")
    cut = _train(tiny_yaml, "cut", *ddp_args, env={"PROBSLOT_TEST_SIGTERM_AT": "3"}, rc=143)
    stopped = load_checkpoint(cut / "last.ckpt")
    assert stopped["global_step"] == 3 and len(stopped["probslot"]["rng"]) == 2
    assert not (cut / "model.safetensors").exists()
    _train(tiny_yaml, "cut", *ddp_args, "--resume")
    resumed = load_checkpoint(cut / "last.ckpt")
    assert resumed["global_step"] == STEPS
    for key, value in a["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert resumed["probslot"]["samples_seen"] == a["probslot"]["samples_seen"]
    assert json.loads((cut / "metrics.json").read_text())["nll"] == ma["nll"]


@pytest.mark.slow
def test_distributed_aggregate_equals_the_single_process_fit(tiny_yaml: Path) -> None:
    """2-process torchrun jobs (gloo) against one process over the same images in order.

    `AggregatePosterior.fit_distributed` with 20 images in batches of 5: both encode the same
    batches, so the posteriors are equal bit for bit. `probslot aggregate` under torchrun (the
    run's batch size 7 over 20 images: the processes encode other batches than one process, and
    CPU kernels round batch-size-dependently): equal within float rounding (measured ≤ 2e-5).
    """
    from torch.utils.data import DataLoader

    from probslot.cli import main
    from probslot.data.config import build_split
    from probslot.data.contract import collate
    from probslot.io import load_model, load_run_config
    from probslot.posterior import AggregatePosterior
    from probslot.training import train

    cfg = load_config(tiny_yaml, ["trainer.max_steps=2", "trainer.progress=none"])
    run = train(cfg).run_dir
    model, run_cfg = load_model(run), load_run_config(run)
    dataset = build_split(run_cfg.data, "train")
    bin_dir = Path(sys.executable).parent

    def single(images: int, batch: int) -> AggregatePosterior:
        loader = DataLoader(dataset, batch_size=batch, collate_fn=collate)
        return AggregatePosterior.fit(
            model, loader, max_images=images, progress=False, metadata={"split": "train"}
        )

    # the library call, in a script
    out = tiny_yaml.parent / "posterior_api.safetensors"
    entry = Path(__file__).with_name("aggregate_entry.py")
    cmd = [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node=2", str(entry)]
    done = subprocess.run([*cmd, str(run), str(out), "20", "5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    api, want = AggregatePosterior.load(out), single(20, 5)
    assert api.num_images == 20 and api.metadata == want.metadata
    for name in ("mu", "var", "pi"):
        assert torch.equal(getattr(api, name), getattr(want, name)), name

    # the command line: `torchrun ... probslot aggregate RUN`; rank 0 writes the file
    cmd = [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python"]
    cmd += [str(bin_dir / "probslot"), "aggregate", str(run), "--max_images", "20", "--no_progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("aggregate posterior of 20 train images") == 1  # rank 0 reports
    cli = AggregatePosterior.load(run / "posterior.safetensors")
    assert main(["aggregate", str(run), "--max_images", "20", "--no_progress"]) == 0
    one = AggregatePosterior.load(run / "posterior.safetensors")
    assert cli.num_images == one.num_images == 20 and cli.metadata == one.metadata
    for name in ("mu", "var", "pi"):
        torch.testing.assert_close(getattr(cli, name), getattr(one, name), rtol=1e-4, atol=1e-4)
