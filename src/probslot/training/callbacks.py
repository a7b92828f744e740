"""Training helpers: EMA weights, atomic checkpoint I/O and image panels.

* :class:`EMA` keeps an exponential moving average of a model's weights (pure torch).
* :class:`AtomicCheckpointIO` makes every Lightning checkpoint write atomic (temp file in the same
  directory + ``os.replace``): an interrupted save never leaves a truncated ``last.ckpt``.
  Lightning's own ``_atomic_save`` streams the bytes through ``fsspec`` straight into the target
  path, so a crash mid-write can leave a partial file; this plug-in closes that gap.
* :class:`PanelCallback` writes ``RUN/panels/step_XXXXXXX.png`` (input | reconstruction | masks |
  each slot) every N optimiser steps.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn

from probslot.atomic import atomic_write, atomic_write_bytes
from probslot.typing import AutoencoderOutput

__all__ = ["EMA", "AtomicCheckpointIO", "PanelCallback", "StepProgressBar", "render_panel"]


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes to a temporary file and renames it into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_write(Path(path), lambda fh: torch.save(checkpoint, fh))


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
    recon = out.recon[:b].detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
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
            self._images = next(iter(loader))["image"][: self.max_rows]
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
        return save_png(render_panel(images, out, self.max_rows), path)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        step = trainer.global_step
        if self.every > 0 and step > 0 and step % self.every == 0 and trainer.is_global_zero:
            self.write(trainer, pl_module)


class StepProgressBar(RichProgressBar):
    """Rich progress bar labelled by the step budget: runs are bounded by steps, not epochs."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_steps = self.trainer.max_steps
        budget = f" of {max_steps} steps" if max_steps and max_steps > 0 else ""
        return f"Training{budget}, epoch {current_epoch}"
