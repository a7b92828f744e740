"""Train / resume a run: run directory, Lightning trainer, callbacks and the exported artefacts."""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from probslot.config import RunConfig, dump_config
from probslot.io import (
    RunPaths,
    atomic_write_text,
    save_model_weights,
    write_metrics,
    write_model_card,
)
from probslot.training.callbacks import AtomicCheckpointIO, PanelCallback, StepProgressBar
from probslot.training.lit_module import SlotLightningModule

__all__ = ["TrainResult", "train"]

# Lightning warnings that do not apply to probslot runs: the run directory legitimately holds
# config.yaml before the first checkpoint; the EMA copy is meant to stay in eval mode; sprites
# loaders are cheap enough for the main process; resuming mid-epoch reshuffles the loader.
_QUIET = (
    r".*exists and is not empty.*",
    r".*module\(s\) in eval mode.*",
    r".*does not have many workers.*",
    r".*dataloader is not resumable.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
)

_RUN_FILES = ("last.ckpt", "best.ckpt", "model.safetensors", "metrics.json", "MODEL_CARD.md")


class TrainResult(dict):
    """Final figures of a run (``metrics.json``) with the run directory in ``.run_dir``."""

    run_dir: Path


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


def build_trainer(
    cfg: RunConfig, paths: RunPaths, progress: bool = True, extra_callbacks: list[Any] | None = None
) -> pl.Trainer:
    """A ``lightning.Trainer`` wired to the run directory (checkpoints, panels, logs)."""
    t = cfg.trainer
    checkpoint = ModelCheckpoint(
        dirpath=paths.root,
        filename="best",
        monitor="val/fg_ari",
        mode="max",
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[Any] = [checkpoint]
    if t.panel_every > 0:
        callbacks.append(PanelCallback(paths.panels, t.panel_every))
    if progress:
        callbacks.append(StepProgressBar(leave=True))
    callbacks.extend(extra_callbacks or [])
    loggers = [
        TensorBoardLogger(save_dir=str(paths.logs), name="", version="tensorboard"),
        CSVLogger(
            save_dir=str(paths.logs), name="", version="csv", flush_logs_every_n_steps=t.log_every
        ),
    ]
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
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(paths.root),
    )


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
    ``config.yaml``, then trains with periodic validation (EMA weights) that updates
    ``last.ckpt`` / ``best.ckpt`` atomically, and finally exports ``model.safetensors``,
    ``metrics.json`` and ``MODEL_CARD.md``. Returns the final validation figures.

    Raises:
        FileNotFoundError: `resume` without a ``last.ckpt`` in the run directory.
        FileExistsError: a fresh run would overwrite an existing checkpoint (without `overwrite`).
    """
    from probslot.data.datamodule import build_datamodule
    from probslot.models import build_model

    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other; pass only one of them")
    paths = RunPaths(Path(cfg.trainer.output_dir) / cfg.trainer.run_name)
    if cfg.trainer.num_threads > 0:
        torch.set_num_threads(cfg.trainer.num_threads)
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    if cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    # built before anything is written: a bad option value fails without leaving a run behind
    model = build_model(cfg.model)
    _prepare_run_dir(paths, resume, overwrite)
    atomic_write_text(paths.config, dump_config(cfg))
    datamodule = build_datamodule(cfg.data)
    lit = SlotLightningModule(model, cfg.optim, cfg.trainer.max_steps)
    trainer = build_trainer(cfg, paths, progress=progress, extra_callbacks=extra_callbacks)

    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        start = time.perf_counter()
        trainer.fit(lit, datamodule=datamodule, ckpt_path=str(paths.last_ckpt) if resume else None)
        train_seconds = time.perf_counter() - start
        # The last step may fall between validations; save it so --resume continues from here.
        trainer.save_checkpoint(str(paths.last_ckpt))
        # Final figures on the whole held-out validation split with the EMA weights.
        trainer.limit_val_batches = 1.0
        final = trainer.validate(lit, datamodule=datamodule, verbose=False)[0]
    metrics: dict[str, Any] = {k.removeprefix("val/"): float(v) for k, v in final.items()}
    metrics.update(
        steps=int(trainer.global_step),
        train_seconds=round(train_seconds, 2),
        skipped_updates=int(lit.skipped_updates),
    )
    save_model_weights(
        lit.eval_model,
        paths.weights,
        metadata={"probslot_config": dump_config(cfg), "steps": str(trainer.global_step)},
    )
    write_metrics(paths.metrics, metrics)
    write_model_card(paths, cfg, metrics)
    result = TrainResult(metrics)
    result.run_dir = paths.root
    return result


def with_trainer(cfg: RunConfig, **changes: Any) -> RunConfig:
    """``cfg`` with some ``trainer`` fields replaced (validated by ``TrainerConfig``)."""
    return replace(cfg, trainer=replace(cfg.trainer, **changes))
