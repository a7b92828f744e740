"""Run a study: plan, check the results folder, train the runs as processes, analyse, report.

`run_study` is what ``probslot experiment NAME`` does:

1. plan the runs (`Study.plan`) and check the results folder ``OUT``: a folder written for
   another study, scale or settings (``OUT/manifest.json``; a run of the same name with another
   fingerprint) is refused before anything is written. More or fewer seeds of the same settings
   are allowed: the runs they share are the same runs;
2. write ``OUT/manifest.json`` (the study, the scale and its settings, the overrides, the
   probslot version and every run's exact spec) and ``OUT/runs/NAME/spec.json``;
3. with ``emit="commands"`` / ``"slurm"``: write one command per unfinished run
   (``OUT/commands.txt``; ``OUT/slurm.sh``, an array job that runs line
   ``$SLURM_ARRAY_TASK_ID + 1``) and stop; rerunning the study command afterwards only analyses;
4. otherwise run every unfinished run as a separate process (``python -m
   probslot.experiments.worker SPEC``, one torch thread each, ``jobs`` at a time), skipping
   finished ones, so a study resumes after a crash (an interrupted training run resumes from its
   ``last.ckpt``). A run that fails (diverged, bad setting) is reported with its log; the others
   go on, and nothing they wrote is touched;
   A run that a study in a sibling folder finished with the same fingerprint (the same
   settings, e.g. the reference point of ``tradeoff`` and a ``sprites`` PSA-Proj run) is copied
   rather than trained again (``reuse=False`` / ``--no_reuse`` turns this off);
5. when every run has finished: `Study.analyse`, then ``summary.json``, ``table.md``,
   ``results.md`` (the command, the tables, the figures and the reading) and ``figures/*.png``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probslot.atomic import atomic_write_text
from probslot.clock import format_duration
from probslot.experiments.catalog import get_study
from probslot.experiments.spec import RESULT_FILE, RunFiles, RunSpec, read_json
from probslot.experiments.study import Study, StudyContext, StudyOutput
from probslot.validation import check_choice, check_int, check_positive_int

__all__ = [
    "EMIT",
    "MANIFEST_FILE",
    "StudyFailed",
    "StudyResult",
    "check_results_folder",
    "run_study",
    "worker_command",
]

MANIFEST_FILE = "manifest.json"
EMIT = ("commands", "slurm")


class StudyFailed(RuntimeError):
    """Some runs of a study failed; the message names each with its error and its log."""


@dataclass(frozen=True)
class StudyResult:
    """What `run_study` did: the folder, the output (None when it only emitted commands), the
    runs it trained now and the ones it found finished."""

    out: Path
    output: StudyOutput | None
    trained: tuple[str, ...]
    reused: tuple[str, ...]
    files: tuple[Path, ...]


def _version() -> str:
    from probslot import __version__

    return __version__


def worker_command(spec_path: Path) -> list[str]:
    """The command line that executes one run."""
    return [sys.executable, "-m", "probslot.experiments.worker", str(spec_path)]


def _manifest(study: Study, scale_name: str, seeds: int, overrides: Sequence[str], specs) -> dict:
    scale = study.scale(scale_name)
    return {
        "study": study.name,
        "scale": scale.name,
        "scale_settings": dict(scale.settings),
        "overrides": list(overrides),
        "seeds": seeds,
        "probslot_version": _version(),
        "runs": {s.name: s.to_dict() for s in specs},
    }


def check_results_folder(out: Path, manifest: dict[str, Any]) -> None:
    """Refuse `out` when it holds results of another study, scale, overrides or run settings."""
    path = out / MANIFEST_FILE
    if not path.is_file():
        stray = [p.name for p in out.iterdir()] if out.is_dir() else []
        if stray:
            raise ValueError(
                f"{out} is not empty and has no {MANIFEST_FILE} ({', '.join(sorted(stray)[:5])}"
                f"{', ...' if len(stray) > 5 else ''}): it was not written by probslot "
                "experiment; choose another --out"
            )
        return
    old = read_json(path)
    problems = []
    for key in ("study", "scale", "overrides"):
        if old.get(key) != manifest[key]:
            problems.append(f"{key} {old.get(key)!r} (requested {manifest[key]!r})")
    if old.get("scale_settings") != manifest["scale_settings"] and not problems:
        problems.append("the scale's settings changed (another probslot version?)")
    changed = [
        name
        for name, spec in manifest["runs"].items()
        if name in old.get("runs", {})
        and old["runs"][name].get("fingerprint") != spec["fingerprint"]
    ]
    if changed:
        problems.append(
            f"{len(changed)} runs with other settings ({', '.join(changed[:4])}"
            f"{', ...' if len(changed) > 4 else ''})"
        )
    if problems:
        raise ValueError(
            f"{out} holds results written by another configuration: {'; '.join(problems)}. "
            "Nothing was changed; choose another --out (or delete that folder to start over)"
        )


def _emit(kind: str, out: Path, pending: Sequence[RunSpec]) -> list[Path]:
    lines = [shlex.join(worker_command(RunFiles.of(out, s.name).spec.resolve())) for s in pending]
    commands = out / "commands.txt"
    atomic_write_text(commands, "".join(line + "\n" for line in lines))
    files = [commands]
    if kind == "slurm" and pending:
        logs = (out / "slurm-logs").resolve()
        script = "\n".join(
            [
                "#!/bin/bash",
                f"#SBATCH --job-name=probslot-{out.name}",
                f"#SBATCH --array=0-{len(pending) - 1}",
                "#SBATCH --cpus-per-task=2",
                f"#SBATCH --output={logs}/%A_%a.out",
                "# One run per array task; edit the resources (e.g. --gres=gpu:1, --time) for",
                "# your cluster. When all tasks have finished, rerun the study command: it",
                "# finds every run finished and writes the analysis.",
                "set -euo pipefail",
                f"mkdir -p {shlex.quote(str(logs))}",
                f'line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(commands.resolve()))})',
                'eval "$line"',
                "",
            ]
        )
        path = out / "slurm.sh"
        atomic_write_text(path, script)
        path.chmod(0o755)
        files.append(path)
    return files


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # one thread per run: two OpenMP threads spin-wait on a busy 2-core machine
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _execute(
    out: Path, pending: Sequence[RunSpec], jobs: int, say: Callable[[str], None]
) -> dict[str, str]:
    """Run `pending` as processes, `jobs` at a time; returns {name: error} of the failed ones."""
    queue = list(pending)
    active: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    failed: dict[str, str] = {}
    done = 0
    durations: list[float] = []
    start = time.monotonic()
    try:
        while queue or active:
            while queue and len(active) < jobs:
                spec = queue.pop(0)
                files = RunFiles.of(out, spec.name)
                files.failed.unlink(missing_ok=True)
                log = open(files.log, "ab")  # noqa: SIM115 (closed when the process ends)
                proc = subprocess.Popen(
                    worker_command(files.spec), stdout=log, stderr=subprocess.STDOUT, env=_env()
                )
                active[spec.name] = (proc, time.monotonic(), log)
                say(f"  start  {spec.name}  (log: {files.log})")
            time.sleep(0.5)
            for name, (proc, began, log) in list(active.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del active[name]
                done += 1
                took = time.monotonic() - began
                files = RunFiles.of(out, name)
                if proc.returncode == 0 and files.result.is_file():
                    durations.append(took)
                    left = len(queue) + len(active)
                    eta = ""
                    if left and durations:
                        per = sum(durations) / len(durations)
                        eta = f"; about {format_duration(per * left / jobs)} left"
                    headline = read_json(files.result).get("headline", {})
                    figures = ", ".join(
                        f"{k} {v:.3f}" for k, v in headline.items() if isinstance(v, float)
                    )
                    say(
                        f"  done   {name} in {format_duration(took)} [{done}/{len(pending)}"
                        f"{eta}]" + (f": {figures}" if figures else "")
                    )
                else:
                    error = f"exit status {proc.returncode}"
                    if files.failed.is_file():
                        info = read_json(files.failed)
                        error = f"{info.get('type', 'Error')}: {info.get('message', '')}"
                    failed[name] = error
                    say(
                        f"  FAILED {name} after {format_duration(took)}: {error} (log: {files.log})"
                    )
    except KeyboardInterrupt:
        for proc, _, _log in active.values():
            proc.terminate()  # training writes last.ckpt on SIGTERM; a rerun resumes from it
        for proc, _, log in active.values():
            proc.wait()
            log.close()
        raise
    say(f"  {len(pending)} runs in {format_duration(time.monotonic() - start)}")
    return failed


def _execute_here(out: Path, pending: Sequence[RunSpec], say: Callable[[str], None]) -> dict:
    """``jobs=0``: the runs one after another in this process (debugging, tests)."""
    from probslot.experiments.worker import run_recorded

    failed = {}
    for i, spec in enumerate(pending, 1):
        files = RunFiles.of(out, spec.name)
        files.failed.unlink(missing_ok=True)
        began = time.monotonic()
        ok, info = run_recorded(files.spec)
        took = format_duration(time.monotonic() - began)
        if ok:
            say(f"  done   {spec.name} in {took} [{i}/{len(pending)}]")
        else:
            failed[spec.name] = f"{info['type']}: {info['message']}"
            say(f"  FAILED {spec.name} after {took}: {failed[spec.name]}")
    return failed


def _write_outputs(
    out: Path, study: Study, ctx: StudyContext, output: StudyOutput, command: str
) -> list[Path]:
    from probslot.reports.markdown import markdown_table

    summary = {
        "study": study.name,
        "scale": ctx.scale.name,
        "seeds": ctx.seeds,
        "command": command,
        **output.summary,
    }
    files = [out / "summary.json"]
    atomic_write_text(files[0], json.dumps(summary, indent=2, sort_keys=False) + "\n")
    table_lines: list[str] = []
    for table in output.tables:
        table_lines += markdown_table(table)
    files.append(out / "table.md")
    atomic_write_text(files[-1], "\n".join(table_lines))
    md = [f"# {study.title}", "", study.description, "", "```bash", command, "```", ""]
    md += table_lines
    for fig in output.figures:
        rel = Path(os.path.relpath(fig, out)).as_posix()
        md += [f"![{fig.stem}]({rel})", ""]
    if output.reading:
        md += ["**Reading.**", ""] + [f"- {line}" for line in output.reading] + [""]
    files.append(out / "results.md")
    atomic_write_text(files[-1], "\n".join(md))
    return files + list(output.figures)


def run_study(
    name: str,
    out: str | os.PathLike[str] | None = None,
    scale: str = "cpu",
    seeds: int | None = None,
    jobs: int = 2,
    emit: str | None = None,
    overrides: Sequence[str] = (),
    say: Callable[[str], None] = print,
    reuse: bool = True,
) -> StudyResult:
    """Run study `name` end to end (see the module docstring); returns what it did.

    Raises:
        ValueError: an unknown study (did-you-mean), a scale the study has no preset for, fewer
            seeds than it needs, a results folder written by another configuration.
        StudyFailed: runs failed; finished runs are kept and a rerun retries only the others.

    With `reuse`, a planned run that another study beside ``out`` (a sibling folder) has
    finished with the same fingerprint is copied instead of trained again.
    """
    study = get_study(name)
    sc = study.scale(scale)
    seeds = sc.seeds if seeds is None else check_positive_int("seeds", seeds)
    if seeds < sc.min_seeds:
        raise ValueError(
            f"study {study.name!r} needs at least {sc.min_seeds} seeds (its analysis pairs "
            f"runs of different seeds); got --seeds {seeds}"
        )
    check_int("jobs", jobs, low=0)
    if emit is not None:
        check_choice("emit", emit, EMIT)
    overrides = tuple(overrides)
    root = Path(out) if out is not None else Path("results") / study.name
    specs = study.plan(sc, seeds, overrides)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise AssertionError(f"study {study.name!r} planned two runs of one name")
    _check_specs(specs)
    manifest = _manifest(study, sc.name, seeds, overrides, specs)
    check_results_folder(root, manifest)
    root.mkdir(parents=True, exist_ok=True)
    old = root / MANIFEST_FILE
    if old.is_file():  # keep the specs of runs planned before (e.g. with more seeds)
        manifest["runs"] = {**read_json(old).get("runs", {}), **manifest["runs"]}
    manifest["seeds"] = max(seeds, read_json(old).get("seeds", 0)) if old.is_file() else seeds
    atomic_write_text(old, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    results: dict[str, dict[str, Any]] = {}
    pending: list[RunSpec] = []
    for spec in specs:
        files = RunFiles.of(root, spec.name)
        files.write_spec(spec)
        result = files.finished(spec)
        if result is None:
            pending.append(spec)
        else:
            results[spec.name] = result
    copied = _reuse_from_siblings(root, pending, say) if pending and reuse else []
    for spec in copied:
        results[spec.name] = read_json(RunFiles.of(root, spec.name).result)
    pending = [s for s in pending if s.name not in results]
    reused = tuple(results)
    command = _command(study.name, sc.name, seeds, overrides, root)
    say(
        f"study {study.name} ({sc.name}: {sc.description}); {len(specs)} runs, "
        f"{len(reused)} finished already, {len(pending)} to run; results in {root}"
    )
    if emit is not None:
        files = _emit(emit, root, pending)
        say(
            f"wrote {len(pending)} commands to {files[0]}"
            + (f" and the array job {files[1]} (sbatch {files[1]})" if len(files) > 1 else "")
            + f"; when they have finished, run `{command}` to write the analysis"
        )
        return StudyResult(root, None, (), reused, tuple(files))
    if not pending:
        failed = {}
    elif jobs == 0:
        failed = _execute_here(root, pending, say)
    else:
        failed = _execute(root, pending, jobs, say)
    if failed:
        listing = "; ".join(f"{n}: {e} (log {RunFiles.of(root, n).log})" for n, e in failed.items())
        raise StudyFailed(
            f"{len(failed)} of {len(specs)} runs of study {study.name!r} failed: {listing}. "
            f"The {len(specs) - len(failed)} others are kept; fix the cause and rerun `{command}` "
            "to retry only the failed runs"
        )
    for spec in pending:
        results[spec.name] = read_json(RunFiles.of(root, spec.name).result)
    say(f"analysing {len(specs)} runs ...")
    ctx = StudyContext(study.name, sc, seeds, specs, results, root)
    output = study.analyse(ctx)
    files = _write_outputs(root, study, ctx, output, command)
    say(f"wrote {root / 'results.md'} (tables, figures, reading), {root / 'summary.json'}")
    return StudyResult(root, output, tuple(s.name for s in pending), reused, tuple(files))


def _sibling_runs(root: Path) -> dict[str, Path]:
    """fingerprint → run folder of the finished runs of the other studies beside `root`."""
    found: dict[str, Path] = {}
    if not root.parent.is_dir():
        return found
    for result in sorted(root.parent.glob("*/runs/*/" + RESULT_FILE)):
        if result.parents[2].resolve() == root.resolve():
            continue
        try:
            fingerprint = read_json(result).get("fingerprint")
        except ValueError:
            continue
        if isinstance(fingerprint, str):
            found.setdefault(fingerprint, result.parent)
    return found


def _reuse_from_siblings(
    root: Path, pending: Sequence[RunSpec], say: Callable[[str], None]
) -> list[RunSpec]:
    """Copy the runs that another study beside `root` has finished with the same fingerprint
    (e.g. the sprites PSA-Proj runs that tradeoff's reference point repeats); returns them."""
    index = _sibling_runs(root)
    copied = []
    for spec in pending:
        source = index.get(spec.fingerprint)
        if source is None:
            continue
        target = RunFiles.of(root, spec.name).root
        tmp = target.with_name(target.name + ".copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        result = read_json(tmp / RESULT_FILE)
        result.update(name=spec.name, group=spec.group, seed=spec.seed, copied_from=str(source))
        atomic_write_text(tmp / RESULT_FILE, json.dumps(result, indent=2) + "\n")
        RunFiles(tmp).write_spec(spec)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        copied.append(spec)
        say(f"  reuse  {spec.name}: the same run finished in {source}")
    return copied


def _check_specs(specs: Sequence[RunSpec]) -> None:
    """Build every training run's config and model now, so that a bad setting or override fails
    before anything is written or trained (the error names the run)."""
    from probslot.config import RunConfig
    from probslot.models import build_model

    checked: dict[str, None] = {}
    for spec in specs:
        if spec.kind != "train":
            continue
        try:
            cfg = RunConfig.from_dict(spec.payload["config"])
            key = repr(cfg.model)
            if key not in checked:
                build_model(cfg.model)
                checked[key] = None
        except (TypeError, ValueError, KeyError) as err:
            raise type(err)(f"run {spec.name!r}: {err}") from None


def _command(name: str, scale: str, seeds: int, overrides: Sequence[str], out: Path) -> str:
    parts = ["probslot", "experiment", name, "--scale", scale, "--seeds", str(seeds)]
    parts += ["--out", str(out)] + list(overrides)
    return shlex.join(parts)
