"""The study runner: plans, results folders, reuse, resume, scheduler output and failures.

Uses the ``toy2d`` study at its tiny scale with a few steps (runs take about a second in
process), so every property of the runner is checked on real runs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probslot.experiments import STUDIES, RunSpec, StudyFailed, get_study, run_study
from probslot.experiments.runner import MANIFEST_FILE
from probslot.experiments.spec import RunFiles

FAST = ["toy2d.steps=3", "toy2d.num_train=20", "toy2d.num_test=30", "toy2d.restarts=2"]


def _quiet(_: str) -> None:
    pass


def _toy(out: Path, *extra: str, seeds: int = 2, jobs: int = 0, **kw):
    return run_study(
        "toy2d", out, "tiny", seeds, jobs=jobs, overrides=[*FAST, *extra], say=_quiet, **kw
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_every_study_is_registered_with_tiny_scale():
    assert {"toy2d", "sprites", "pruning", "injectivity", "posterior-stability", "tradeoff",
            "clevr6", "objects-room"} <= set(STUDIES)  # fmt: skip
    for study in STUDIES.values():
        assert "tiny" in study.scales, study.name
        assert study.title and study.description


def test_unknown_study_suggests_the_closest(tmp_path):
    with pytest.raises(ValueError, match=r"unknown study 'toy2'. Did you mean 'toy2d'"):
        run_study("toy2", tmp_path / "out", say=_quiet)
    assert not (tmp_path / "out").exists()


def test_scale_without_preset_names_the_scales(tmp_path):
    with pytest.raises(ValueError, match=r"no 'cpu' scale; it has: gpu, tiny"):
        run_study("clevr6", tmp_path / "out", scale="cpu", say=_quiet)
    with pytest.raises(ValueError, match=r"data.root=STORE"):
        run_study("clevr6", tmp_path / "out", scale="tiny", say=_quiet)
    assert not (tmp_path / "out").exists()


def test_too_few_seeds_and_bad_override_fail_before_writing(tmp_path):
    with pytest.raises(ValueError, match="at least 2 seeds"):
        _toy(tmp_path / "a", seeds=1)
    with pytest.raises(ValueError, match="toy2d.KEY=VALUE"):
        _toy(tmp_path / "b", "toy2d.stepz=3")
    with pytest.raises(ValueError, match=r"run 'ae-seed0': optim.lr must be"):
        run_study("sprites", tmp_path / "c", "tiny", overrides=["optim.lr=-1"], say=_quiet)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_study_writes_summary_table_results_and_manifest(tmp_path):
    out = tmp_path / "toy"
    res = _toy(out)
    assert res.trained == ("psa-seed0", "psa-seed1") and res.reused == ()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"] == "toy2d" and summary["scale"] == "tiny"
    pairs = summary["smcc"]["pairs"]
    assert [p["runs"] for p in pairs] == [["psa-seed0", "psa-seed1"]]
    assert summary["smcc"]["mean"] == pytest.approx(pairs[0]["smcc"])
    assert -1 <= summary["smcc"]["mean"] <= 1 and "r2" in summary
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert set(manifest["runs"]) == {"psa-seed0", "psa-seed1"}
    assert manifest["overrides"] == FAST
    spec = manifest["runs"]["psa-seed0"]
    assert spec["payload"]["settings"]["steps"] == 3  # the exact settings of each run
    text = (out / "results.md").read_text()
    assert "probslot experiment toy2d --scale tiny --seeds 2" in text
    assert "![toy2d_posteriors](figures/toy2d_posteriors.png)" in text
    assert (out / "figures" / "toy2d_posteriors.png").stat().st_size > 1000
    assert "| SMCC |" in (out / "table.md").read_text()


def test_rerun_reuses_finished_runs_and_more_seeds_add_runs(tmp_path):
    out = tmp_path / "toy"
    _toy(out)
    before = _snapshot(out / "runs")
    again = _toy(out)
    assert again.trained == () and set(again.reused) == {"psa-seed0", "psa-seed1"}
    assert _snapshot(out / "runs") == before  # nothing retrained or rewritten
    more = _toy(out, seeds=3)
    assert more.trained == ("psa-seed2",)
    assert len(json.loads((out / "summary.json").read_text())["smcc"]["pairs"]) == 3


def test_results_folder_of_another_configuration_is_refused(tmp_path):
    out = tmp_path / "toy"
    _toy(out)
    before = _snapshot(out)
    with pytest.raises(ValueError, match=r"another configuration: overrides"):
        _toy(out, "toy2d.lr=0.02")
    with pytest.raises(ValueError, match=r"another configuration: study 'toy2d'"):
        run_study("tradeoff", out, "tiny", say=_quiet)
    assert _snapshot(out) == before
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by probslot experiment"):
        _toy(tmp_path / "stray")


def test_a_run_with_a_changed_spec_is_not_reused(tmp_path):
    """A result whose fingerprint differs from the plan (settings changed in place) is redone."""
    out = tmp_path / "toy"
    _toy(out)
    files = RunFiles.of(out, "psa-seed1")
    result = json.loads(files.result.read_text())
    result["fingerprint"] = "0" * 64
    files.result.write_text(json.dumps(result))
    again = _toy(out)
    assert again.trained == ("psa-seed1",)


def test_a_diverged_run_fails_clearly_and_keeps_the_others(tmp_path):
    out = tmp_path / "toy"
    _toy(out)
    with pytest.raises(StudyFailed, match=r"2 of 2 runs .* failed: psa-seed0: FloatingPointError"):
        _toy(tmp_path / "div", "toy2d.lr=1e12")
    failed = json.loads(RunFiles.of(tmp_path / "div", "psa-seed0").failed.read_text())
    assert "diverged" in failed["message"] and "toy2d.lr" in failed["message"]
    assert not (tmp_path / "div" / "summary.json").exists()


def test_emit_commands_and_slurm_then_analyse(tmp_path):
    out = tmp_path / "toy"
    res = _toy(out, emit="slurm")
    assert res.output is None and not (out / "summary.json").exists()
    lines = (out / "commands.txt").read_text().splitlines()
    assert len(lines) == 2
    script = (out / "slurm.sh").read_text()
    assert "#SBATCH --array=0-1" in script and "SLURM_ARRAY_TASK_ID" in script
    assert os.access(out / "slurm.sh", os.X_OK)
    for line in lines:  # what each array task does
        argv = shlex.split(line)
        assert argv[:3] == [sys.executable, "-m", "probslot.experiments.worker"]
        subprocess.run(argv, check=True, capture_output=True, timeout=300)
    done = _toy(out)
    assert done.trained == () and len(done.reused) == 2
    assert (out / "summary.json").is_file()


@pytest.mark.slow
def test_killed_midway_resumes_without_training_twice(tmp_path):
    """Kill the runner (and its worker) after the first run finished; the rerun trains only the
    rest, and the table equals that of an uninterrupted study."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "probslot.cli", "experiment", "toy2d", "--scale", "tiny",
           "--seeds", "3", "--jobs", "1", "--out", str(out), *FAST]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    first = RunFiles.of(out, "psa-seed0").result
    deadline = time.monotonic() + 240
    while not first.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, 9)
    proc.wait()
    assert first.is_file()
    kept = first.read_bytes()
    assert not (out / "summary.json").exists()
    res = run_study("toy2d", out, "tiny", 3, jobs=1, overrides=FAST, say=_quiet)
    assert "psa-seed0" in res.reused and "psa-seed0" not in res.trained
    assert first.read_bytes() == kept
    clean = _toy(tmp_path / "other" / "clean", seeds=3)  # not beside it: nothing to reuse
    assert clean.out != res.out
    table = (out / "table.md").read_text().splitlines()
    clean_table = (tmp_path / "other" / "clean" / "table.md").read_text().splitlines()
    # the per-run minutes differ; every figure of the identifiability table is the same
    assert table[:8] == clean_table[:8]


def test_run_spec_fingerprint_and_validation():
    a = RunSpec("r-seed0", "PSA", 0, "toy2d", {"x": 1}, info={"label": "a"})
    b = RunSpec("r-seed0", "PSA", 0, "toy2d", {"x": 1}, info={"label": "b"})
    c = RunSpec("r-seed0", "PSA", 0, "toy2d", {"x": 2})
    assert a.fingerprint == b.fingerprint != c.fingerprint  # info is not part of it
    assert RunSpec.from_dict(a.to_dict()) == a
    edited = {**a.to_dict(), "payload": {"x": 3}}
    with pytest.raises(ValueError, match="edited after it was written"):
        RunSpec.from_dict(edited)
    with pytest.raises(ValueError, match="directory name"):
        RunSpec("a/b", "PSA", 0, "toy2d", {})
    with pytest.raises(ValueError, match="kind must be one of"):
        RunSpec("a", "PSA", 0, "bake", {})
    with pytest.raises(TypeError, match="plain JSON"):
        RunSpec("a", "PSA", 0, "toy2d", {"x": object()})


def test_get_study_returns_registered_instance():
    assert get_study("toy2d") is STUDIES["toy2d"]


def test_a_run_trained_by_an_earlier_call_counts_its_training_time(tmp_path):
    """Training finished, then the evaluation failed (say): the next call evaluates only, and
    the result's seconds still include the training, with no helper key left in result.json."""
    from probslot.experiments.worker import execute

    study = get_study("sprites")
    spec = study.plan(study.scales["tiny"], 1)[0]
    files = RunFiles.of(tmp_path, spec.name)
    files.write_spec(spec)
    first = execute(files.spec)
    trained = first["train"]["train_seconds"]
    files.result.unlink()
    second = execute(files.spec)
    saved = json.loads(files.result.read_text())
    assert second["train"]["train_seconds"] == trained  # not trained again
    assert saved["seconds"] >= trained and "earlier_seconds" not in saved
