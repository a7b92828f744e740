"""What a run prints in a log file (plain lines, no tips) and records to be reproduced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from probslot.config import load_config
from probslot.io import RunPaths
from probslot.training import train
from probslot.training.run import is_launch_rank_zero


def test_log_file_gets_plain_lines_and_no_tips(
    tiny_yaml: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config(tiny_yaml, ["trainer.max_steps=3", "trainer.val_every=2"])
    assert cfg.trainer.progress == "auto"  # not a terminal under pytest: plain lines
    train(cfg)
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert "training from step 0 to 3" in lines
    step = re.compile(
        r"^step 1/3 \(33\.3%\) \| [\d.]+ img/s \| loss \d+\.\d{4} \| elapsed 0:00:\d\d \| ETA 0:\d\d:\d\d$"
    )
    assert any(step.match(ln) for ln in lines), lines
    assert any(
        re.match(r"^validation at step 2: fg_ari -?\d\.\d{4}, mse \d\.\d{4}$", ln) for ln in lines
    )
    last = [ln for ln in lines if ln.startswith("step 3/3")]
    assert last and "val fg_ari" in last[-1] and "(step 2)" in last[-1]
    text = out + err
    for noise in ("💡", "Tip:", "litlogger", "litmodels", "weights_only", "━", "\r"):
        assert noise not in text, noise


def test_environment_json_records_what_reproduces_the_run(tiny_yaml: Path) -> None:
    cfg = load_config(
        tiny_yaml, ["trainer.max_steps=1", "trainer.seed=3", "trainer.deterministic=true"]
    )
    run = train(cfg, progress=False).run_dir
    env = json.loads((run / "environment.json").read_text())
    (session,) = env["sessions"]
    assert session["seed"] == 3 and session["deterministic"] is True
    assert session["packages"]["torch"] and session["packages"]["lightning"]
    assert session["torch"]["version"] == torch.__version__
    assert session["torch"]["intra_op_threads"] == torch.get_num_threads()
    assert session["precision"] == "32" and session["resumed_from_step"] is None
    assert "bit-exact" in session["reproducibility"]
    train(
        load_config(
            tiny_yaml, ["trainer.max_steps=2", "trainer.seed=3", "trainer.deterministic=true"]
        ),
        resume=True,
        progress=False,
    )
    sessions = json.loads((RunPaths(run).root / "environment.json").read_text())["sessions"]
    assert [s["resumed_from_step"] for s in sessions] == [None, 1]


@pytest.mark.parametrize(
    "env, zero",
    [
        ({}, True),
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "1"}, False),  # a process Lightning's launcher started
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # rank 0 of the second node
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, False),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, True),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "LOCAL_RANK": "1"}, False),
    ],
)
def test_only_the_global_rank_zero_writes(env: dict[str, str], zero: bool, monkeypatch) -> None:
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_launch_rank_zero() is zero


def test_identical_weights_write_identical_safetensors_files(tmp_path: Path) -> None:
    """safetensors writes its metadata in hash-map order (another order in each process); the
    canonical header makes the file a function of the weights and metadata alone."""
    import hashlib
    import subprocess
    import sys

    from safetensors.torch import load_file

    code = (
        "import sys, torch; from probslot.io import save_model_weights; "
        "torch.manual_seed(0); m = torch.nn.Linear(3, 5); "
        "save_model_weights(m, sys.argv[1], {'steps': '3', 'probslot_config': 'x', 'zeta': 'z'})"
    )
    digests = set()
    for i in range(4):  # separate processes: a fresh hash seed each
        out = tmp_path / f"w{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1
    weights = load_file(str(tmp_path / "w0.safetensors"))
    torch.manual_seed(0)
    reference = torch.nn.Linear(3, 5).state_dict()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
