"""Kill training at random moments (SIGKILL), resume each time, and end where an uninterrupted run
ends: same weights, EMA, AdamW moments, scheduler, data position, bit for bit (CPU,
deterministic mode). Then SIGTERM: a checkpoint is saved, the process exits with 143, and the
resumed run still ends identically.

Each session is a `probslot train` subprocess; the kill comes a random time after it starts
training (seeded, so a failure can be replayed), so it lands in a training step, a validation,
a panel or a checkpoint write (last.ckpt is written every step).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from probslot.config import load_config
from probslot.training import load_checkpoint, train
from probslot.training.checkpoint import verify_checkpoint_file

STEPS = 40
SETTINGS = [
    f"trainer.max_steps={STEPS}",
    "trainer.val_every=7",
    "trainer.panel_every=5",
    "trainer.checkpoint_every=1",
    "trainer.deterministic=true",
    "trainer.num_threads=1",
    "trainer.progress=lines",
]
KILLS = 5
SEED = 1606  # of the kill times; printed with the figures


def _start(tiny_yaml: Path, name: str, resume: bool, log: Path) -> subprocess.Popen[str]:
    probslot = Path(sys.executable).with_name("probslot")
    cmd = [str(probslot), "train", "--config", str(tiny_yaml), f"trainer.run_name={name}"]
    cmd += [*SETTINGS, *(["--resume"] if resume else [])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("a"), text=True)


def _wait_for_training(proc: subprocess.Popen[str], log: Path) -> None:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"training never started (rc {proc.wait()}): {log.read_text()[-2000:]}")
        if line.startswith("training from step"):
            return


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["global_step"] == b["global_step"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for i in sa:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][name], sb[i][name]), (i, name)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for key in ("batches_seen", "samples_seen", "nonfinite_steps"):
        assert a["probslot"][key] == b["probslot"][key]


@pytest.mark.slow
def test_sigkill_at_random_points_then_sigterm_resume_exactly(tiny_yaml: Path) -> None:
    ref = train(load_config(tiny_yaml, [*SETTINGS, "trainer.run_name=ref"]))
    reference = load_checkpoint(ref.run_dir / "last.ckpt")

    rng = random.Random(SEED)
    run = tiny_yaml.parent / "runs" / "killed"
    log = tiny_yaml.parent / "killed.log"
    steps_at_kill: list[int | None] = []
    for _ in range(KILLS):
        proc = _start(tiny_yaml, "killed", (run / "last.ckpt").exists(), log)
        _wait_for_training(proc, log)
        time.sleep(rng.uniform(0.0, 2.5))
        assert proc.poll() is None, "the run finished before it was killed; lengthen it"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        last = run / "last.ckpt"
        if last.exists():  # never a partial file: the previous or the new checkpoint
            verify_checkpoint_file(last)
            steps_at_kill.append(load_checkpoint(last)["global_step"])
        else:
            steps_at_kill.append(None)
    assert any(s is not None and 0 < s < STEPS for s in steps_at_kill)
    known = [s for s in steps_at_kill if s is not None]
    assert known == sorted(known)  # every session continued from the previous one's checkpoint

    # SIGTERM: saves at the next step boundary and exits with 128 + 15
    proc = _start(tiny_yaml, "killed", (run / "last.ckpt").exists(), log)
    _wait_for_training(proc, log)
    time.sleep(rng.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, log.read_text()[-2000:]
    stopped = load_checkpoint(run / "last.ckpt")["global_step"]
    assert f"stopped by SIGTERM at step {stopped}; " in out
    assert f"probslot train --config {run} --resume" in out

    final = train(load_config(tiny_yaml, [*SETTINGS, "trainer.run_name=killed"]), resume=True)
    assert final["steps"] == STEPS
    _same(reference, load_checkpoint(run / "last.ckpt"))
    assert final["nll"] == ref["nll"] and final["fg_ari"] == ref["fg_ari"]
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]
    print(
        f"kill seed {SEED}: last.ckpt step after each SIGKILL {steps_at_kill}, SIGTERM at {stopped}"
    )
