"""Execute one run of a study: ``python -m probslot.experiments.worker OUT/runs/NAME/spec.json``.

The runner starts one such process per run (`probslot.experiments.runner`); a cluster runs the
same command lines (``--emit commands|slurm``). The worker reads the spec, does the run and writes
``result.json`` atomically at the very end, so a run is either finished or not: a crash or a
kill leaves no result (a training run then resumes from its ``last.ckpt`` the next time). An
error writes ``failed.json`` (type, message, the end of the traceback) and exits with status 1.

Kinds:

``train``
    `probslot.training.run.train` on the payload's config (resumed when ``last.ckpt`` exists),
    then `probslot.evaluation.evaluate.evaluate_run` with the payload's ``evaluate`` options, then
    (when the payload has ``prune``) `probslot.posterior.commands.prune` with those options.
``toy2d``
    `probslot.experiments.toy2d.run_toy` (the paper's 2D model; no Lightning).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from probslot.atomic import atomic_write_text
from probslot.experiments.spec import RESULT_FILE, RunFiles, RunSpec, read_json

__all__ = ["execute", "headline_of", "main", "run_recorded"]


def headline_of(ev: dict[str, Any]) -> dict[str, float | None]:
    """The figures a progress line starts from, from an ``eval.json``."""
    from probslot.experiments.images import eval_figures

    figures = eval_figures({"eval": ev})
    out = {key: figures[key] for key in ("fg_ari", "mse")}
    if figures["smcc_gt"] is not None:
        out["smcc_gt"] = figures["smcc_gt"]
    return out


def _train(spec: RunSpec, files: RunFiles) -> dict[str, Any]:
    from probslot.config import RunConfig
    from probslot.evaluation.evaluate import EvalConfig, evaluate_run
    from probslot.io import RunPaths
    from probslot.training.run import train

    payload = dict(spec.payload)
    data = json.loads(json.dumps(payload["config"]))  # a deep copy
    # the run trains in its own folder, wherever the study's folder is (not in the fingerprint)
    data.setdefault("trainer", {}).update(output_dir=str(files.root.parent), run_name=spec.name)
    cfg = RunConfig.from_dict(data)
    paths = RunPaths(files.root)
    resume = paths.last_ckpt.is_file()
    trained = train(cfg, resume=resume, progress=True)
    if trained.status == "interrupted":
        raise RuntimeError(f"training was interrupted ({trained.message}); rerun to resume")
    evaluated = evaluate_run(
        files.root, EvalConfig(**{**payload.get("evaluate", {}), "progress": False})
    )
    ev = evaluated.to_dict()  # result.json keeps eval.json's layout
    result: dict[str, Any] = {
        "train": dict(trained),
        "eval": ev,
        "headline": headline_of(ev),
        "resumed": resume,
    }
    if trained.status == "already_finished":  # trained by an earlier call: count its time too
        result["earlier_seconds"] = float(trained.get("train_seconds", 0.0))
    if "prune" in payload:
        from probslot.posterior.commands import prune

        analyses = payload["prune"]
        result["pruning"] = []
        for options in [analyses] if isinstance(analyses, dict) else analyses:
            path = prune(str(files.root), **{**options, "progress": False})
            result["pruning"].append({"options": options, **json.loads(Path(path).read_text())})
    return result


def _toy(spec: RunSpec, files: RunFiles) -> dict[str, Any]:
    from probslot.experiments.toy2d import run_toy

    return run_toy(spec.payload, files.root)


KIND_RUNNERS = {"train": _train, "toy2d": _toy}


def execute(spec_path: str | Path) -> dict[str, Any]:
    """Do the run described by `spec_path`; returns and writes its result (see module docstring)."""
    spec_path = Path(spec_path)
    if not spec_path.is_file():
        raise FileNotFoundError(f"no run spec at {spec_path}; the study command writes it")
    spec = RunSpec.from_dict(read_json(spec_path))
    files = RunFiles(spec_path.parent)
    begin = time.time()
    result = KIND_RUNNERS[spec.kind](spec, files)
    earlier = result.pop("earlier_seconds", 0.0)  # training done by an earlier call
    result = {
        "name": spec.name,
        "group": spec.group,
        "seed": spec.seed,
        "kind": spec.kind,
        "fingerprint": spec.fingerprint,
        "seconds": time.time() - begin + earlier,
        **result,
    }
    text = json.dumps(result, indent=2, default=_jsonable, allow_nan=True) + "\n"
    atomic_write_text(files.root / RESULT_FILE, text)
    return result


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")


def run_recorded(spec_path: str | Path) -> tuple[bool, dict[str, Any]]:
    """`execute`, with an error recorded in ``failed.json``: (True, result) or (False, error)."""
    files = RunFiles(Path(spec_path).parent)
    try:
        return True, execute(spec_path)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is recorded for the runner
        info = {
            "type": type(err).__name__,
            "message": str(err),
            "traceback": traceback.format_exc().splitlines()[-15:],
        }
        if files.root.is_dir():
            atomic_write_text(files.failed, json.dumps(info, indent=2) + "\n")
        return False, info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m probslot.experiments.worker OUT/runs/NAME/spec.json", file=sys.stderr
        )
        return 2
    ok, result = run_recorded(argv[0])
    if not ok:
        print(f"run failed: {result['type']}: {result['message']}", file=sys.stderr)
        return 1
    print(f"run {result['name']} finished in {result['seconds']:.0f} s: {result.get('headline')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
