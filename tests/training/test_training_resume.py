"""Exact resume: a run stopped (SIGTERM) and resumed equals the uninterrupted run; --resume
continues from the run directory's own config.yaml; checkpoints on a step interval; a finished
run is left alone.

The kill-at-random-points runs (SIGKILL in a subprocess) are in tests/reliability.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml

from probslot.cli import main
from probslot.config import load_config
from probslot.io import RunPaths
from probslot.training import CheckpointError, LastCheckpoint, load_checkpoint, train
from probslot.training.run import resolve_run_config

FAST = ["trainer.progress=none", "trainer.deterministic=true", "trainer.checkpoint_every=1"]


class _Losses(pl.Callback):
    """The training loss of every step (recorded before the optimiser step)."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, *a) -> None:
        self.losses[trainer.global_step - 1] = float(outputs["loss"])


class _SigtermAt(pl.Callback):
    """Sets the SIGTERM flag of the run's LastCheckpoint during step `step` (as the handler does)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint)).sigterm = True


def _cfg(tiny_yaml: Path, *overrides: str):
    return load_config(tiny_yaml, [*FAST, *overrides])


def _assert_same_checkpoint(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][name], sb[i][name]), (i, name)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for key in ("batches_seen", "samples_seen", "nonfinite_steps"):
        assert a["probslot"][key] == b["probslot"][key], key
    (best_a,), (best_b,) = a["callbacks"].values(), b["callbacks"].values()
    assert best_a["best_model_score"] == best_b["best_model_score"]


def test_stopped_and_resumed_run_equals_the_uninterrupted_run(tiny_yaml: Path) -> None:
    """Stopped by SIGTERM at step 5 of 9 (validation every 3 steps, panels every 2), resumed:
    the later losses, the weights, EMA, AdamW moments, scheduler and data position are equal."""
    steps = ["trainer.max_steps=9", "trainer.val_every=3", "trainer.panel_every=2"]
    ref_losses = _Losses()
    ref = train(_cfg(tiny_yaml, *steps, "trainer.run_name=ref"), extra_callbacks=[ref_losses])

    cfg = _cfg(tiny_yaml, *steps, "trainer.run_name=cut")
    first = train(cfg, extra_callbacks=[_SigtermAt(4)])
    assert first.status == "interrupted"
    assert "stopped by SIGTERM at step 5" in first.message
    paths = RunPaths(first.run_dir)
    assert load_checkpoint(paths.last_ckpt)["global_step"] == 5
    assert not paths.weights.exists()  # nothing is exported from a stopped run

    losses = _Losses()
    second = train(cfg, resume=True, extra_callbacks=[losses])
    assert second.status == "finished" and second["steps"] == 9
    assert sorted(losses.losses) == [5, 6, 7, 8]
    assert losses.losses == {s: ref_losses.losses[s] for s in (5, 6, 7, 8)}
    _assert_same_checkpoint(
        load_checkpoint(RunPaths(ref.run_dir).last_ckpt), load_checkpoint(paths.last_ckpt)
    )
    assert second["fg_ari"] == ref["fg_ari"] and second["nll"] == ref["nll"]


def test_resume_reads_the_run_directorys_own_config(tiny_yaml: Path) -> None:
    """The reported bug: `--config PRESET --resume` rewrote config.yaml with the preset's
    max_steps. Now the run's config.yaml is what continues; the preset only names the run."""
    first = train(_cfg(tiny_yaml, "trainer.max_steps=2"))
    data = yaml.safe_load(tiny_yaml.read_text())
    data["trainer"]["max_steps"] = 30000  # the preset's value
    data["model"]["num_slots"] = 4  # a preset edited since
    tiny_yaml.write_text(yaml.safe_dump(data))
    cfg = resolve_run_config(tiny_yaml, FAST, resume=True)
    assert cfg.trainer.max_steps == 2 and cfg.model.num_slots == 3
    result = train(cfg, resume=True)
    assert result.status == "already_finished"
    assert load_config(RunPaths(first.run_dir).config).trainer.max_steps == 2
    # the run directory itself (or its config.yaml) names the run as well
    assert resolve_run_config(first.run_dir, resume=True) == load_config(
        RunPaths(first.run_dir).config
    )


def test_resume_refuses_overrides_that_change_the_run(tiny_yaml: Path) -> None:
    run = train(_cfg(tiny_yaml, "trainer.max_steps=1")).run_dir
    with pytest.raises(
        ValueError, match=r"continues the run as it was started.*model.num_slots \(3 → 4\)"
    ):
        resolve_run_config(run, ["model.num_slots=4"], resume=True)
    with pytest.raises(ValueError, match=r"optim.lr \(0.001 → 0.01\).*trainer.seed \(0 → 1\)"):
        resolve_run_config(run, ["optim.lr=0.01", "trainer.seed=1"], resume=True)
    with pytest.raises(ValueError, match=r"continues the run as it was started"):
        train(_cfg(tiny_yaml, "trainer.max_steps=3", "data.batch_size=2"), resume=True)
    extended = resolve_run_config(run, ["trainer.max_steps=3"], resume=True)
    assert train(extended, resume=True)["steps"] == 3


def test_resume_on_a_finished_run_says_so_and_changes_nothing(
    tiny_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train(_cfg(tiny_yaml, "trainer.max_steps=2")).run_dir
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", "--config", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already finished: last.ckpt is at step 2 of trainer.max_steps=2; nothing to do" in out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_last_checkpoint_is_written_every_n_steps(tiny_yaml: Path) -> None:
    seen: list[tuple[int, int | None]] = []

    class _Look(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            last = Path(trainer.default_root_dir) / "last.ckpt"
            step = load_checkpoint(last)["global_step"] if last.exists() else None
            seen.append((trainer.global_step, step))

    cfg = _cfg(
        tiny_yaml, "trainer.max_steps=6", "trainer.val_every=100", "trainer.checkpoint_every=2"
    )
    train(cfg, extra_callbacks=[_Look()])
    assert seen == [(0, None), (1, None), (2, 2), (3, 2), (4, 4), (5, 4)]


def test_last_checkpoint_after_a_validation_records_its_best_score(tiny_yaml: Path) -> None:
    """last.ckpt is written after best.ckpt's callback has seen the validation, so a resume
    from it knows the best score (else it could overwrite best.ckpt with a worse model)."""
    seen: list[Any] = []

    class _Look(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            if trainer.global_step == 3:  # after the validation at step 2
                ckpt = load_checkpoint(Path(trainer.default_root_dir) / "last.ckpt")
                assert ckpt["global_step"] == 2
                (best,) = ckpt["callbacks"].values()
                seen.append((best["best_model_score"], trainer.callback_metrics["val/fg_ari"]))

    cfg = _cfg(
        tiny_yaml, "trainer.max_steps=4", "trainer.val_every=2", "trainer.checkpoint_every=0"
    )
    train(cfg, extra_callbacks=[_Look()])
    ((score, fg_ari),) = seen
    assert score is not None and float(score) == float(fg_ari)


def test_last_checkpoint_is_written_on_a_time_interval(tiny_yaml: Path) -> None:
    """checkpoint_minutes: a tiny interval has always passed by the end of the next step."""
    saves: list[int] = []

    class _Count(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            last = next(c for c in trainer.callbacks if isinstance(c, LastCheckpoint))
            saves.append(last.saves)

    cfg = _cfg(
        tiny_yaml,
        "trainer.max_steps=4",
        "trainer.val_every=100",
        "trainer.checkpoint_every=0",
        "trainer.checkpoint_minutes=1e-9",
    )
    train(cfg, extra_callbacks=[_Count()])
    # _Count runs before LastCheckpoint at each step end: it sees the saves of earlier steps
    assert saves == [0, 1, 2, 3]
    off = _cfg(tiny_yaml, "trainer.max_steps=3", "trainer.val_every=100", "trainer.checkpoint_every=0",
               "trainer.checkpoint_minutes=0", "trainer.run_name=untimed")  # fmt: skip
    saves.clear()
    train(off, extra_callbacks=[_Count()])
    assert saves == [0, 0, 0]


def test_resume_removes_temporaries_of_killed_writes_and_checks_the_model(tiny_yaml: Path) -> None:
    run = train(_cfg(tiny_yaml, "trainer.max_steps=1")).run_dir
    stale = run / ".last.ckpt.abc123.tmp.ckpt"
    stale.write_bytes(b"half a checkpoint")
    train(_cfg(tiny_yaml, "trainer.max_steps=2"), resume=True)
    assert not stale.exists()
    paths = RunPaths(run)
    edited = yaml.safe_load(paths.config.read_text())
    edited["model"]["slot_dim"] = 6
    paths.config.write_text(yaml.safe_dump(edited))
    with pytest.raises(ValueError, match=r"written for another model than the one in"):
        train(load_config(paths.config, FAST + ["trainer.max_steps=3"]), resume=True)


def test_resume_from_a_damaged_checkpoint_is_a_clear_error(tiny_yaml: Path) -> None:
    run = train(_cfg(tiny_yaml, "trainer.max_steps=1")).run_dir
    last = RunPaths(run).last_ckpt
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"last.ckpt' \(1000 bytes\) is truncated"):
        train(_cfg(tiny_yaml, "trainer.max_steps=2"), resume=True)


def test_checkpoint_of_probslot_0_1_0_resumes(tiny_yaml: Path, capsys) -> None:
    run = train(_cfg(tiny_yaml, "trainer.max_steps=2")).run_dir
    last = RunPaths(run).last_ckpt
    ckpt = torch.load(last, weights_only=True)
    del ckpt["probslot"]  # as 0.1.0 wrote it
    torch.save(ckpt, last)
    capsys.readouterr()
    result = train(_cfg(tiny_yaml, "trainer.max_steps=3"), resume=True)
    assert result["steps"] == 3
    assert "was written by probslot 0.1.0; it resumes" in capsys.readouterr().out
