"""Training helpers: EMA weights, the run's last checkpoint, guards, panels and progress.

* :class:`EMA` keeps an exponential moving average of a model's weights (pure torch).
* :class:`AtomicCheckpointIO` (defined in :mod:`probslot.training.checkpoint`) makes every
  Lightning checkpoint write atomic and every read safe. Lightning's own ``_atomic_save`` streams
  the bytes through ``fsspec`` straight into the target path, so a crash mid-write can leave a
  partial file; this plug-in closes that gap.
* :class:`LastCheckpoint` keeps ``RUN/last.ckpt`` current (every N steps, every M minutes, after
  each validation), saves it and stops on SIGTERM, and stops a diverged run.
* :class:`PanelCallback` writes ``RUN/panels/step_XXXXXXX.png`` (input | reconstruction | masks |
  each slot) every N optimiser steps.
* :class:`StepProgressBar` (a terminal) and :class:`ProgressLines` (a log file: plain periodic
  lines) report progress.
"""

from __future__ import annotations

import copy
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, RichProgressBar
from torch import Tensor, nn

from probslot.atomic import atomic_write_bytes
from probslot.data.store import to_contract_dtypes
from probslot.training.checkpoint import AtomicCheckpointIO
from probslot.typing import AutoencoderOutput

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "BestCheckpoint",
    "LastCheckpoint",
    "PanelCallback",
    "ProgressLines",
    "RunInterrupted",
    "StepProgressBar",
    "render_panel",
]


class EMA(nn.Module):
    """Exponential moving average of a model's parameters and buffers.

    ``ema = decay_t * ema + (1 - decay_t) * weights`` after each optimiser step, with the warm-up
    ``decay_t = min(decay, (1 + t) / (10 + t))`` so that short runs are not dominated by the
    random initialisation. ``decay = 0`` makes the average follow the weights exactly.

    The averaged copy is a sub-module (``self.module``), so it is saved in and restored from
    Lightning checkpoints together with the update count.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1); got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        t = int(self.num_updates)
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        if len(ema_params) != len(params):
            raise RuntimeError("EMA and model have different parameter lists")
        float_pairs = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if float_pairs:
            ema_list = [e for e, _ in float_pairs]
            model_list = [p.to(e.dtype) for e, p in float_pairs]
            torch._foreach_lerp_(ema_list, model_list, 1.0 - decay)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
        self.num_updates += 1

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (``best.ckpt``) that follows a run directory moved since the
    checkpoint was written: its record of the best score is kept on resume instead of dropped
    (Lightning drops it when the directory differs). Saved under ``ModelCheckpoint``'s state key,
    so checkpoints of either class restore into the other."""

    @property
    def state_key(self) -> str:
        return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__) :]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old is not None and self.dirpath is not None and old != self.dirpath:
            here = str(self.dirpath)

            def moved(path: Any) -> Any:
                return os.path.join(here, os.path.basename(path)) if path else path

            state_dict = {
                **state_dict,
                "dirpath": self.dirpath,
                **{
                    key: moved(state_dict.get(key))
                    for key in ("best_model_path", "kth_best_model_path", "last_model_path")
                },
                "best_k_models": {
                    moved(k): v for k, v in (state_dict.get("best_k_models") or {}).items()
                },
            }
        super().load_state_dict(state_dict)


# --------------------------------------------------------------------------- last checkpoint
class RunInterrupted(Exception):
    """Training stopped on SIGTERM after saving ``last.ckpt`` (raised out of ``Trainer.fit``)."""

    def __init__(self, step: int, path: Path) -> None:
        super().__init__(f"stopped by SIGTERM at step {step}; {path} saved")
        self.step, self.path = step, path


def _any_rank(trainer: pl.Trainer, flags: list[bool]) -> list[bool]:
    """Each flag, True when it is True on any process (one all-reduce under DDP), so that all
    processes take the same decision (a checkpoint save is a collective)."""
    if trainer.world_size <= 1 or not torch.distributed.is_initialized():
        return flags
    t = torch.tensor([float(f) for f in flags], device=trainer.strategy.root_device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


class LastCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` current and reacts to SIGTERM and to a diverged run.

    ``last.ckpt`` is written at the end of a training step every `every_steps` steps, when
    `every_minutes` have passed since the last write, and after every validation during
    training; on a step that is followed by a validation the write waits until the validation
    has run, so that the checkpoint holds the random state the next step starts from. Writes
    pause while steps are non-finite, so that the last checkpoint stays the last good one when
    training stops after ``optim.max_bad_steps`` of them in a row
    (:class:`~probslot.training.lit_module.TrainingDiverged`, raised by the module after this
    callback's end-of-step hook).

    A Lightning ``Checkpoint``, so Lightning runs it after every other callback, and after
    :class:`BestCheckpoint` when it comes later in the list: a save at the end of a validation
    then records the updated best score. SIGTERM (what a cluster scheduler sends before
    pre-emption) only sets a flag; at the next
    step boundary (the end of a step, or of a validation) every process agrees on it, the
    checkpoint is saved and :class:`RunInterrupted` ends the fit. On one node, the signal is
    forwarded to the processes Lightning launched.
    """

    def __init__(self, path: str | Path, every_steps: int = 0, every_minutes: float = 0.0) -> None:
        super().__init__()
        self.path = Path(path)
        self.every_steps = every_steps
        self.every_seconds = every_minutes * 60.0
        self.sigterm = False
        self.saves = 0
        self._last_save = time.monotonic()
        self._previous_handler: Any = None
        self._trainer: pl.Trainer | None = None

    # -- SIGTERM
    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.sigterm = True
        launcher = getattr(self._trainer.strategy, "launcher", None) if self._trainer else None
        procs = getattr(launcher, "procs", None)
        for proc in procs or ():  # Lightning's subprocess launcher on one node
            if proc.poll() is None:
                proc.send_signal(signum)

    def setup(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        self._trainer = trainer
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.getsignal(signal.SIGTERM)  # before Lightning's

    def teardown(self, trainer: pl.Trainer, pl_module: Any, stage: str) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    # -- writing
    def save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)
        self.saves += 1
        self._last_save = time.monotonic()

    @staticmethod
    def validation_follows(trainer: pl.Trainer) -> bool:
        """Whether Lightning validates right after the current training batch."""
        every = trainer.val_check_batch
        if not trainer.limit_val_batches or not isinstance(every, int) or every <= 0:
            return False
        return (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every == 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._last_save = time.monotonic()
        if self._previous_handler is not None:
            # Replaces the handler Lightning installs just before training: that one broadcasts
            # from inside the signal handler, which under DDP can meet another collective and
            # hang; here every process only sets a flag, and they agree at the step's end.
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        step = trainer.global_step
        periodic = self.every_steps > 0 and step % self.every_steps == 0
        timed = self.every_seconds > 0 and time.monotonic() - self._last_save >= self.every_seconds
        sigterm, timed = _any_rank(trainer, [self.sigterm, timed])
        if self.validation_follows(trainer):
            return  # saved in on_validation_end, with the state the next step starts from
        if sigterm:
            self.save(trainer)
            raise RunInterrupted(step, self.path)
        if (periodic or timed) and pl_module.consecutive_bad_steps == 0:
            self.save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        (sigterm,) = _any_rank(trainer, [self.sigterm])
        if sigterm or pl_module.consecutive_bad_steps == 0:
            self.save(trainer)
        if sigterm:
            raise RunInterrupted(trainer.global_step, self.path)


# --------------------------------------------------------------------------- panels
_PALETTE = np.array(
    [
        [0.12, 0.47, 0.71], [1.00, 0.50, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
        [0.58, 0.40, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.50, 0.50, 0.50],
        [0.74, 0.74, 0.13], [0.09, 0.75, 0.81], [0.00, 0.00, 0.00], [1.00, 1.00, 1.00],
    ],
    dtype=np.float32,
)  # fmt: skip


def soft_masks(out: AutoencoderOutput) -> Tensor:
    """(b, k, H, W) decoder masks, or the grouping attention for non-additive decoders."""
    if out.masks is not None:
        return out.masks[:, :, 0]
    return out.attn_masks


def render_panel(images: Tensor, out: AutoencoderOutput, max_rows: int = 4) -> np.ndarray:
    """(rows*H, (3+k)*W, 3) float image: input | reconstruction | mask argmax | each slot.

    Each slot column shows the slot's RGB times its mask when the decoder is additive, else the
    slot's attention map in grey.
    """
    b = min(images.shape[0], max_rows)
    masks = soft_masks(out)[:b].detach().float().cpu()  # (b, k, H, W)
    k = masks.shape[1]
    imgs = images[:b].detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()  # b h w c
    recon = out.recon[:b].detach().float().cpu()
    if recon.ndim == 3:  # a feature model's tokens (b, n, D): their principal components
        from probslot.models.features import tokens_picture

        recon = tokens_picture(recon, images.shape[-2:])
    recon = recon.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    seg = _PALETTE[(masks.argmax(1).numpy()) % len(_PALETTE)]  # (b, H, W, 3)
    if out.per_slot is not None:
        slots = (out.per_slot[:b].detach().float().cpu().clamp(0, 1) * masks[:, :, None]).permute(
            0, 1, 3, 4, 2
        )  # (b, k, H, W, 3)
        slots = slots.numpy()
    else:
        slots = masks[..., None].expand(-1, -1, -1, -1, 3).numpy()
    rows = []
    for i in range(b):
        cols = [imgs[i], recon[i], seg[i]] + [slots[i, j] for j in range(k)]
        rows.append(np.concatenate(cols, axis=1))
    return np.clip(np.concatenate(rows, axis=0), 0.0, 1.0)


def save_png(array: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    """Write an (H, W, 3) float image in [0, 1] as PNG atomically (nearest-upscaled by `scale`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    if scale > 1:
        array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    plt.imsave(buf, array, format="png")
    return atomic_write_bytes(path, buf.getvalue())


class PanelCallback(pl.Callback):
    """Write an image panel of a fixed validation batch every `every` optimiser steps (EMA weights)."""

    def __init__(self, out_dir: str | Path, every: int, max_rows: int = 4) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.every = every
        self.max_rows = max_rows
        self._images: Tensor | None = None

    def _batch(self, trainer: pl.Trainer) -> Tensor | None:
        if self._images is None:
            dm = trainer.datamodule
            if dm is None:
                return None
            loader = dm.val_dataloader()
            # a store's loader yields uint8 images (SlotDataModule's uint8 transfer)
            batch = to_contract_dtypes(next(iter(loader)))
            self._images = batch["image"][: self.max_rows]
        return self._images

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, pl_module: Any) -> Path | None:
        images = self._batch(trainer)
        if images is None:
            return None
        model = pl_module.eval_model
        was_training = model.training
        model.eval()
        out = model(images.to(pl_module.device))
        model.train(was_training)
        path = self.out_dir / f"step_{trainer.global_step:07d}.png"
        from probslot.reports.figures import write_training_panel  # labelled: rows, step, π

        return write_training_panel(images, out, trainer.global_step, path)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0 and trainer.is_global_zero:
            self.write(trainer, pl_module)


class ProgressLines(pl.Callback):
    """Plain progress lines for log files (a scheduler's output, CI), instead of a redrawn bar.

    Every `every_seconds` (and after each validation) rank 0 prints one line such as
    ``step 1200/30000 (4.0%) | 41.3 img/s | loss 0.1350 | val fg_ari 0.812 (step 1000) |
    elapsed 0:05:12 | ETA 2:03:10``. Images per second count every process's images.
    """

    def __init__(self, every_seconds: float = 30.0, stream: Any = None) -> None:
        super().__init__()
        self.every_seconds = every_seconds
        self.stream = stream
        self._start = self._last = 0.0
        self._start_step = self._last_step = 0
        self._val: tuple[int, dict[str, float]] | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = int(max(0.0, seconds))
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = self._last_step = trainer.global_step
        if trainer.is_global_zero:
            self._print(f"training from step {trainer.global_step} to {trainer.max_steps}")

    def line(self, trainer: pl.Trainer, now: float) -> str:
        step, total = trainer.global_step, trainer.max_steps
        window = max(now - self._last, 1e-9)
        batch = getattr(trainer.datamodule, "cfg", None)
        images = (step - self._last_step) * getattr(batch, "batch_size", 0) * trainer.world_size
        parts = [f"step {step}/{total} ({100.0 * step / max(total, 1):.1f}%)"]
        if images:
            parts.append(f"{images / window:.1f} img/s")
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        if self._val is not None:
            at, figures = self._val
            shown = " ".join(f"{k} {v:.3f}" for k, v in figures.items())
            parts.append(f"val {shown} (step {at})")
        elapsed = now - self._start
        parts.append(f"elapsed {self._clock(elapsed)}")
        done = step - self._start_step
        if done > 0 and total > step:
            parts.append(f"ETA {self._clock(elapsed / done * (total - step))}")
        return " | ".join(parts)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        now = time.monotonic()
        first = trainer.global_step == self._start_step + 1
        if trainer.is_global_zero and (first or now - self._last >= self.every_seconds):
            self._print(self.line(trainer, now))
            self._last, self._last_step = now, trainer.global_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        figures = {
            name: float(metrics[f"val/{name}"])
            for name in ("fg_ari", "mse")
            if f"val/{name}" in metrics
        }
        self._val = (trainer.global_step, figures)
        if trainer.is_global_zero and figures:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
            self._print(f"validation at step {trainer.global_step}: {shown}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.is_global_zero:
            self._print(self.line(trainer, time.monotonic()))


class StepProgressBar(RichProgressBar):
    """Rich progress bar labelled by the step budget: runs are bounded by steps, not epochs."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_steps = self.trainer.max_steps
        budget = f" of {max_steps} steps" if max_steps and max_steps > 0 else ""
        return f"Training{budget}, epoch {current_epoch}"
