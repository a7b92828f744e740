"""Train / resume a run: run directory, Lightning trainer, callbacks and the exported artefacts.

* A fresh run writes ``config.yaml`` and ``environment.json`` (what is needed to reproduce it),
  trains, keeps ``last.ckpt`` current (every ``trainer.checkpoint_every`` steps and
  ``trainer.checkpoint_minutes`` minutes, after each validation, on SIGTERM) and ends with
  ``model.safetensors``, ``metrics.json`` and ``MODEL_CARD.md``.
* ``resume=True`` continues the run *as it was started*: from its own ``config.yaml``
  (:func:`resolve_run_config`; overrides that would change the data, the model, the optimiser
  or the seed are refused, :func:`check_resume_config`) and its verified ``last.ckpt``
  (step, optimiser, scheduler, EMA, data position, random states); a run that already reached
  ``trainer.max_steps`` is reported and left untouched.
* Under DDP (``trainer.strategy=ddp``, several devices or nodes) every process runs this
  function; only the global rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment

from probslot.config import RunConfig, config_to_dict, dump_config, load_config
from probslot.io import (
    RunPaths,
    atomic_write_text,
    save_model_weights,
    write_metrics,
    write_model_card,
)
from probslot.registry import closest
from probslot.training.callbacks import (
    AtomicCheckpointIO,
    BestCheckpoint,
    LastCheckpoint,
    PanelCallback,
    ProgressLines,
    RunInterrupted,
    StepProgressBar,
)
from probslot.training.checkpoint import load_checkpoint
from probslot.training.data import TrainingDataModule
from probslot.training.estimate import announce
from probslot.training.lit_module import SlotLightningModule

__all__ = [
    "RESUMABLE_FIELDS",
    "TrainResult",
    "check_resume_config",
    "environment_info",
    "is_launch_rank_zero",
    "resolve_run_config",
    "train",
]

# Lightning warnings that do not apply to probslot runs: the run directory legitimately holds
# config.yaml before the first checkpoint; the EMA copy is meant to stay in eval mode; sprites
# loaders are cheap enough for the main process; the training stream is endless and resumes
# itself (probslot.training.data), so Lightning's epoch-based notes do not apply.
_QUIET = (
    r".*exists and is not empty.*",
    r".*module\(s\) in eval mode.*",
    r".*does not have many workers.*",
    r".*dataloader is not resumable.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*is an invalid version and will not be supported.*",
    r".*The number of training batches \(.*\) is smaller than the logging interval.*",
)

# Lightning's info lines that are advertisements or restate our own settings.
_QUIET_LOGS = ("💡 Tip", "`Trainer(limit_val_batches=1.0)`", "`weights_only` was not set")

_RUN_FILES = (
    "last.ckpt",
    "best.ckpt",
    "model.safetensors",
    "metrics.json",
    "MODEL_CARD.md",
    "environment.json",
)

#: ``trainer`` fields a resumed run may change (how long, how often, on what hardware); any
#: other difference from the run's ``config.yaml`` is refused by :func:`check_resume_config`.
RESUMABLE_FIELDS = (
    "max_steps",
    "max_minutes",
    "val_every",
    "panel_every",
    "log_every",
    "val_batches",
    "num_threads",
    "checkpoint_every",
    "checkpoint_minutes",
    "progress",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
)


class TrainResult(dict):
    """Final figures of a run (``metrics.json``) with the run directory in ``.run_dir``.

    ``.status`` is ``"finished"`` (trained and exported now), ``"interrupted"`` (stopped by
    SIGTERM after saving ``last.ckpt``; no figures) or ``"already_finished"`` (``--resume`` on a
    run that had reached ``trainer.max_steps``: nothing was done, the figures are its
    ``metrics.json``). ``.is_global_zero`` is False in the other processes of a DDP run.
    """

    run_dir: Path
    status: str = "finished"
    is_global_zero: bool = True
    message: str = ""


# --------------------------------------------------------------------------- ranks
def is_launch_rank_zero() -> bool:
    """Whether this process is the global rank 0 of its launch, from the launcher's environment
    (torchrun: ``RANK``; SLURM: ``SLURM_PROCID``; Lightning's launcher: ``NODE_RANK`` and
    ``LOCAL_RANK``), before a ``Trainer`` exists."""
    env = os.environ
    if env.get("RANK") is not None:
        return int(env["RANK"]) == 0
    if env.get("SLURM_PROCID") is not None and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]) == 0
    return int(env.get("NODE_RANK", "0") or 0) == 0 and int(env.get("LOCAL_RANK", "0") or 0) == 0


# --------------------------------------------------------------------------- resume semantics
def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, a's value, b's value) for every leaf where two config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(a) | set(b)):
            out.extend(_diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key))
        return out
    return [] if a == b else [(prefix, a, b)]


def check_resume_config(saved: RunConfig, requested: RunConfig) -> list[str]:
    """The changes a resumed run makes to its ``config.yaml`` (only :data:`RESUMABLE_FIELDS`).

    Raises:
        ValueError: `requested` changes anything else (data, model, optim, prune, the seed,
            precision, ...): a resumed run continues the run as it was started.
    """
    changes = _diff(config_to_dict(saved), config_to_dict(requested))
    allowed = {f"trainer.{name}" for name in RESUMABLE_FIELDS}
    # the directory itself may have been moved or renamed since
    moved = {"trainer.output_dir", "trainer.run_name"}
    refused = [(k, a, b) for k, a, b in changes if k not in allowed | moved]
    if refused:
        shown = ", ".join(f"{k} ({a!r} → {b!r})" for k, a, b in refused[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise ValueError(
            f"--resume continues the run as it was started, from its config.yaml, but the "
            f"config or overrides change {shown}{more}. Only trainer."
            f"{{{', '.join(RESUMABLE_FIELDS)}}} may change on resume; start a new run (another "
            "trainer.run_name) to change the rest"
        )
    return [f"{k}: {a!r} → {b!r}" for k, a, b in changes if k in allowed]


def _run_dir_of(config: str | Path) -> Path | None:
    """The run directory `config` names: a directory with config.yaml, or a run's config.yaml."""
    path = Path(config)
    if path.is_dir():
        return path
    if path.is_file() and path.name == "config.yaml" and (path.parent / "last.ckpt").exists():
        return path.parent
    return None


def resolve_run_config(
    config: str | Path, overrides: Sequence[str] = (), *, resume: bool = False
) -> RunConfig:
    """The configuration ``probslot train`` runs with.

    A fresh run: the preset or YAML file `config` with `overrides`. With `resume`: the run
    directory's own ``config.yaml`` (the directory is `config` itself, the directory of a run's
    ``config.yaml``, or ``trainer.output_dir/trainer.run_name`` of `config` + `overrides`), with
    the overrides applied on top; overrides outside :data:`RESUMABLE_FIELDS` are refused.

    Raises:
        FileNotFoundError: the run directory or its config.yaml does not exist.
        ValueError: an override would change the run (see :func:`check_resume_config`).
    """
    if not resume:
        return load_config(config, list(overrides))
    root = _run_dir_of(config)
    if root is None:
        named = load_config(config, list(overrides))
        root = Path(named.trainer.output_dir) / named.trainer.run_name
    saved_file = RunPaths(root).config
    if not saved_file.is_file() and not RunPaths(root).last_ckpt.exists():
        raise FileNotFoundError(
            f"cannot resume: {str(RunPaths(root).last_ckpt)!r} does not exist. Train without "
            "--resume first, or pass the run directory to continue as --config (or set "
            "trainer.output_dir / trainer.run_name to it)"
        )
    if not saved_file.is_file():
        raise FileNotFoundError(
            f"cannot resume: {str(saved_file)!r} does not exist, so {str(root)!r} is not a run "
            "directory. Train without --resume first, or pass the run directory as --config"
        )
    saved = load_config(saved_file)
    place = [f"trainer.output_dir={root.parent}", f"trainer.run_name={root.name}"]
    requested = load_config(saved_file, [*list(overrides), *place])
    check_resume_config(saved, requested)
    return requested


# --------------------------------------------------------------------------- environment
def environment_info(cfg: RunConfig) -> dict[str, Any]:
    """What is needed to reproduce a run: versions, torch build, threads, seed, determinism."""
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if "model name" in ln), cpu)
    except OSError:
        pass
    packages = (
        "probslot",
        "torch",
        "lightning",
        "torchmetrics",
        "numpy",
        "scipy",
        "scikit-learn",
        "safetensors",
        "jsonargparse",
        "einops",
    )
    return {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "packages": {name: version(name) for name in packages},
        "torch": {
            "version": torch.__version__,
            "git_version": getattr(torch.version, "git_version", None),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()
            if torch.backends.cudnn.is_available()
            else None,
            "mkldnn": torch.backends.mkldnn.is_available(),
            "openmp": torch.backends.openmp.is_available(),
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        },
        "seed": cfg.trainer.seed,
        "data_seed": cfg.data.seed,
        "deterministic": cfg.trainer.deterministic,
        "precision": cfg.trainer.precision,
        "accelerator": cfg.trainer.accelerator,
        "devices": cfg.trainer.devices,
        "num_nodes": cfg.trainer.num_nodes,
        "strategy": cfg.trainer.strategy,
        "env": {
            key: os.environ[key]
            for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
            if key in os.environ
        },
        "reproducibility": (
            "bit-exact when re-run on the same machine with the same packages and thread "
            "count; across CPUs or GPUs float reductions differ in the last bits and the runs "
            "drift apart (docs/reliability.md)"
        ),
    }


def _write_environment(paths: RunPaths, cfg: RunConfig, resumed_from: int | None) -> None:
    session = environment_info(cfg)
    session["resumed_from_step"] = resumed_from
    sessions: list[Any] = []
    if resumed_from is not None and (paths.root / "environment.json").is_file():
        try:
            sessions = json.loads((paths.root / "environment.json").read_text())["sessions"]
        except (ValueError, KeyError, TypeError):
            sessions = []
    sessions.append(session)
    text = json.dumps({"sessions": sessions}, indent=2) + "\n"
    atomic_write_text(paths.root / "environment.json", text)


# --------------------------------------------------------------------------- checks and setup
def _check_hardware_names(cfg: RunConfig) -> None:
    """Unknown accelerator/strategy names fail here, with a suggestion, before anything is written."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    for field, value, names in (
        ("accelerator", cfg.trainer.accelerator, ["auto", "gpu", *AcceleratorRegistry]),
        ("strategy", cfg.trainer.strategy, ["auto", *StrategyRegistry]),
    ):
        if value not in names:
            hint = closest(value, names)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise ValueError(
                f"trainer.{field}={value!r} is not a Lightning {field}.{suggestion} "
                f"Available: {', '.join(sorted(names))}"
            )


def _remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete the temporary files of writes that a kill interrupted (``.NAME.XXXX.tmp...``, see
    `probslot.atomic`): the completed files beside them are intact."""
    stale = [p for p in root.glob(".*.tmp*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _prepare_run_dir(paths: RunPaths, resume: bool, overwrite: bool) -> None:
    if resume:
        if not paths.last_ckpt.is_file():
            raise FileNotFoundError(
                f"cannot resume: {str(paths.last_ckpt)!r} does not exist. Train without --resume "
                f"first, or set trainer.output_dir / trainer.run_name to the run to continue"
            )
        return
    if paths.last_ckpt.exists() and not overwrite:
        raise FileExistsError(
            f"run directory {str(paths.root)!r} already holds a checkpoint. Continue it with "
            f"--resume, choose another trainer.run_name, or pass --overwrite to start afresh"
        )
    if overwrite and paths.root.exists():
        for name in _RUN_FILES:
            (paths.root / name).unlink(missing_ok=True)
        for sub in (paths.panels, paths.logs):
            shutil.rmtree(sub, ignore_errors=True)
    paths.root.mkdir(parents=True, exist_ok=True)


def _check_resumable(paths: RunPaths, cfg: RunConfig) -> dict[str, Any]:
    """The verified ``last.ckpt`` of the run, checked against the run's model."""
    checkpoint = load_checkpoint(paths.last_ckpt)
    text = checkpoint["probslot"].get("config")
    if text:
        import yaml

        try:
            saved_model = (yaml.safe_load(text) or {}).get("model")
        except yaml.YAMLError:
            saved_model = None
        if saved_model is not None and saved_model != config_to_dict(cfg.model):
            raise ValueError(
                f"{str(paths.last_ckpt)!r} was written for another model than the one in "
                f"{str(paths.config)!r}; the run directory was edited by hand. Restore its "
                "config.yaml or start a new run"
            )
    return checkpoint


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(prefix) for prefix in _QUIET_LOGS)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning without its tips and the warnings that do not concern probslot runs."""
    drop = _DropLines()
    targets = [logging.getLogger("lightning.pytorch"), logging.getLogger("lightning.fabric")]
    targets += [h for logger in list(targets) for h in logger.handlers]
    targets += [
        logging.getLogger(name)
        for name in (
            "lightning.pytorch.utilities.rank_zero",
            "lightning.fabric.utilities.rank_zero",
            "lightning.pytorch.trainer.connectors.checkpoint_connector",
        )
    ]
    for target in targets:
        target.addFilter(drop)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for target in targets:
            target.removeFilter(drop)


def _progress_kind(cfg: RunConfig, progress: bool) -> str:
    if not progress:
        return "none"
    if cfg.trainer.progress != "auto":
        return cfg.trainer.progress
    return "bar" if sys.stdout.isatty() else "lines"


def build_trainer(
    cfg: RunConfig,
    paths: RunPaths,
    progress: bool = True,
    extra_callbacks: list[Any] | None = None,
) -> pl.Trainer:
    """A ``lightning.Trainer`` wired to the run directory (checkpoints, panels, logs)."""
    t = cfg.trainer
    best = BestCheckpoint(
        dirpath=paths.root,
        filename="best",
        monitor="val/fg_ari",
        mode="max",
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[Any] = [best]
    if t.panel_every > 0:
        callbacks.append(PanelCallback(paths.panels, t.panel_every))
    kind = _progress_kind(cfg, progress)
    if kind == "bar":
        callbacks.append(StepProgressBar(leave=True))
    elif kind == "lines":
        callbacks.append(ProgressLines())
    callbacks.extend(extra_callbacks or [])
    # last, so that every other end-of-step hook (panels draw random slots) ran before a save
    callbacks.append(LastCheckpoint(paths.last_ckpt, t.checkpoint_every, t.checkpoint_minutes))
    loggers = [
        TensorBoardLogger(save_dir=str(paths.logs), name="", version="tensorboard"),
        CSVLogger(
            save_dir=str(paths.logs), name="", version="csv", flush_logs_every_n_steps=t.log_every
        ),
    ]
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        # SIGTERM is probslot's (LastCheckpoint: save, stop, exit 143, then --resume); Lightning's
        # own requeue on SIGUSR1 would write hpc_ckpt_*.ckpt and resume from them behind our back
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return pl.Trainer(
        max_steps=t.max_steps,
        max_epochs=-1,
        max_time=timedelta(minutes=t.max_minutes) if t.max_minutes > 0 else None,
        val_check_interval=t.val_every,
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches if t.val_batches > 0 else 1.0,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        precision=t.precision,
        deterministic=t.deterministic,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        callbacks=callbacks,
        logger=loggers,
        plugins=plugins,
        use_distributed_sampler=False,  # probslot.training.data shards the data itself
        enable_progress_bar=kind == "bar",
        enable_model_summary=False,
        default_root_dir=str(paths.root),
    )


def _last_checkpoint_callback(trainer: pl.Trainer) -> LastCheckpoint:
    return next(cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint))


# --------------------------------------------------------------------------- train
def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train (or resume) the run ``cfg.trainer.output_dir / cfg.trainer.run_name``.

    Builds the model first (so a bad option fails before anything is written), writes
    ``config.yaml`` and ``environment.json``, then trains with periodic validation (EMA weights)
    and ``last.ckpt`` / ``best.ckpt`` written atomically, and finally exports
    ``model.safetensors``, ``metrics.json`` and ``MODEL_CARD.md``. Returns the final validation
    figures.

    Raises:
        FileNotFoundError: `resume` without a ``last.ckpt`` in the run directory.
        FileExistsError: a fresh run would overwrite an existing checkpoint (without `overwrite`).
        ValueError: `resume` with a config that changes the run (:func:`check_resume_config`),
            a checkpoint that is corrupt or not probslot's
            (:class:`~probslot.training.checkpoint.CheckpointError`), or a diverged run
            (:class:`~probslot.training.lit_module.TrainingDiverged`).
    """
    from probslot.models import build_model

    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other; pass only one of them")
    paths = RunPaths(Path(cfg.trainer.output_dir) / cfg.trainer.run_name)
    zero = is_launch_rank_zero()
    _check_hardware_names(cfg)
    if cfg.data.num_val < 1:
        raise ValueError(
            "training validates on the val split (EMA figures, best.ckpt, metrics.json), so "
            f"data.num_val must be >= 1; got {cfg.data.num_val}"
        )
    if cfg.trainer.num_threads > 0:
        torch.set_num_threads(cfg.trainer.num_threads)
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    # built before anything is written: a bad option value fails without leaving a run behind
    model = build_model(cfg.model)
    if cfg.data.feature_cache is not None:  # a cache of another encoder is refused before any work
        from probslot.data.features import check_feature_cache

        check_feature_cache(cfg.data.feature_cache, model)
    resumed_from: int | None = None
    if resume:
        _prepare_run_dir(paths, resume, overwrite)
        if paths.config.is_file():
            check_resume_config(load_config(paths.config), cfg)
        if zero:
            _remove_stale_temporaries(paths.root)
        checkpoint = _check_resumable(paths, cfg)
        resumed_from = int(checkpoint["global_step"])
        if checkpoint["probslot"].get("legacy") and zero:
            print(
                f"note: {paths.last_ckpt} was written by probslot 0.1.0; it resumes with its "
                "weights, optimiser, scheduler and EMA, but without the data position and "
                "random states that newer checkpoints hold, so not exactly"
            )
        del checkpoint
        if resumed_from >= cfg.trainer.max_steps and paths.metrics.is_file():
            result = TrainResult(json.loads(paths.metrics.read_text()))
            result.run_dir, result.status, result.is_global_zero = (
                paths.root,
                "already_finished",
                zero,
            )
            result.message = (
                f"run {str(paths.root)!r} already finished: last.ckpt is at step {resumed_from} "
                f"of trainer.max_steps={cfg.trainer.max_steps}; nothing to do. To train longer, "
                f"resume with a larger trainer.max_steps (e.g. trainer.max_steps="
                f"{2 * cfg.trainer.max_steps})"
            )
            return result
    elif zero:
        _prepare_run_dir(paths, resume, overwrite)
    if zero:
        atomic_write_text(paths.config, dump_config(cfg))
        _write_environment(paths, cfg, resumed_from)
        for line in announce(model, cfg, resumed_from or 0):  # long runs: the time they take
            print(line, flush=True)
    datamodule = TrainingDataModule(cfg.data)
    lit = SlotLightningModule(
        model, cfg.optim, cfg.trainer.max_steps, seed=cfg.trainer.seed, config_text=dump_config(cfg)
    )

    with quiet_lightning():
        trainer = build_trainer(cfg, paths, progress=progress, extra_callbacks=extra_callbacks)
        start = time.perf_counter()
        try:
            trainer.fit(
                lit, datamodule=datamodule, ckpt_path=str(paths.last_ckpt) if resume else None
            )
        except RunInterrupted as stop:
            result = TrainResult(steps=stop.step)
            result.run_dir, result.status = paths.root, "interrupted"
            result.is_global_zero = trainer.is_global_zero
            result.message = (
                f"stopped by SIGTERM at step {stop.step}; {stop.path} is saved. Continue with "
                f"`probslot train --config {paths.root} --resume`"
            )
            return result
        train_seconds = time.perf_counter() - start
        # The last step may fall between checkpoints; save it so --resume continues from here.
        _last_checkpoint_callback(trainer).save(trainer)
        # Final figures on the whole held-out validation split with the EMA weights.
        trainer.limit_val_batches = 1.0
        final = trainer.validate(lit, datamodule=datamodule, verbose=False)[0]
    metrics: dict[str, Any] = {k.removeprefix("val/"): float(v) for k, v in final.items()}
    metrics.update(
        steps=int(trainer.global_step),
        train_seconds=round(train_seconds, 2),
        skipped_updates=int(lit.skipped_updates),
        nonfinite_steps=int(lit.nonfinite_steps),
    )
    if trainer.is_global_zero:
        save_model_weights(
            lit.eval_model,
            paths.weights,
            metadata={"probslot_config": dump_config(cfg), "steps": str(trainer.global_step)},
        )
        write_metrics(paths.metrics, metrics)
        write_model_card(paths, cfg, metrics)
    result = TrainResult(metrics)
    result.run_dir = paths.root
    result.is_global_zero = trainer.is_global_zero
    return result


def with_trainer(cfg: RunConfig, **changes: Any) -> RunConfig:
    """``cfg`` with some ``trainer`` fields replaced (validated by ``TrainerConfig``)."""
    return replace(cfg, trainer=replace(cfg.trainer, **changes))
