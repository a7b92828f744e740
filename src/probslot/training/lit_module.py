"""The Lightning module: loss, optimiser, schedule, EMA and validation metrics — nothing else.

The model itself (:class:`probslot.models.SlotAutoencoder`) knows nothing about training; this
module wraps it:

* loss = the model's likelihood NLL of the images given the reconstruction (MSE or the
  discretised Gaussian of the authors' code, notes §7);
* AdamW + linear warm-up, then constant or cosine decay (:mod:`probslot.training.schedule`);
* global gradient-norm clipping, and updates whose norm is absurd (or not finite) are skipped
  and counted (``train/skipped_updates``), as the authors' code does (clip 100, skip > 55000);
* an EMA of the weights used for validation, panels and export;
* validation: reconstruction MSE and FG-ARI (ARI over ground-truth foreground pixels between
  the argmax of the decoder masks — or of the attention maps for non-additive decoders — and the
  ground-truth label map).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from probslot.config import OptimConfig
from probslot.metrics.segmentation import fg_ari
from probslot.nn import ARDPrune, ProbabilisticSlotAttention, TemperedEStep, with_settings
from probslot.training.callbacks import EMA, soft_masks
from probslot.training.schedule import lr_factor
from probslot.typing import AutoencoderOutput

__all__ = ["SlotLightningModule", "predicted_segmentation"]


def predicted_segmentation(out: AutoencoderOutput) -> Tensor:
    """(b, H, W) argmax over slots of the decoder masks (attention maps if the decoder has none)."""
    from probslot.metrics import masks_to_labels

    return masks_to_labels(soft_masks(out))


class SlotLightningModule(pl.LightningModule):
    """Trains a slot autoencoder by maximum likelihood with the settings of an :class:`OptimConfig`.

    Args:
        model:     a ``SlotAutoencoder``: ``model(images (b,3,H,W) in [0,1])`` → ``AutoencoderOutput``
                   and ``model.loss(images, out)`` → scalar NLL (plain MSE if absent).
        optim:     optimiser, schedule, clipping, skipping and EMA settings.
        max_steps: total optimiser steps (end point of the cosine decay).
    """

    def __init__(self, model: nn.Module, optim: OptimConfig, max_steps: int) -> None:
        super().__init__()
        self.model = model
        self.optim_cfg = optim
        self.max_steps = max_steps
        self.ema = EMA(model, optim.ema_decay) if optim.ema_decay > 0 else None
        grouping = getattr(model, "grouping", None)
        is_psa = isinstance(grouping, ProbabilisticSlotAttention)
        # ARD inside EM: the configured threshold, which `prune_tau_steps` ramps up to in training
        ard = grouping.extension(ARDPrune) if is_psa else None
        self.prune_tau = ard.tau if ard is not None else 0.0
        # the E-step temperature that `temperature_start` anneals to in training
        if optim.temperature_start > 0 and not is_psa:
            raise ValueError(
                "optim.temperature_start anneals PSA's tempered E-step, but the model's grouping "
                f"({type(grouping).__name__}) has no temperature; set optim.temperature_start=0"
            )
        tempered = grouping.extension(TemperedEStep) if is_psa else None
        self.temperature = tempered.temperature if tempered is not None else 1.0
        self.register_buffer("skipped_updates", torch.zeros((), dtype=torch.long))
        self.last_grad_norm = float("nan")

    # ----------------------------------------------------------------- helpers
    @property
    def eval_model(self) -> nn.Module:
        """The weights used for validation and export: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def nll(self, out: AutoencoderOutput, images: Tensor) -> Tensor:
        """Scalar training loss: ``model.loss(images, out)`` (the model's likelihood), else MSE."""
        loss_fn = getattr(self.model, "loss", None)
        if loss_fn is None:
            return (out.recon - images).pow(2).mean()
        return loss_fn(images, out)

    @staticmethod
    def _images(batch: Any) -> Tensor:
        images = batch["image"] if isinstance(batch, dict) else batch
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"a batch's images must be (batch, 3, H, W) in [0, 1]; got {tuple(images.shape)}"
            )
        return images

    # ----------------------------------------------------------------- training
    @staticmethod
    def _annealed(weight: float, steps: int, step: int) -> float:
        if weight <= 0:
            return 0.0
        if steps <= 0:
            return weight
        return weight * max(0.0, 1.0 - step / steps)

    def aux_mask_weight(self, step: int) -> float:
        """Weight of the mask-consistency term at optimiser step `step` (linear anneal to 0)."""
        return self._annealed(self.optim_cfg.aux_mask_weight, self.optim_cfg.aux_mask_steps, step)

    def aux_pi_weight(self, step: int) -> float:
        """Weight of the mixing-weight balance term at optimiser step `step`."""
        return self._annealed(self.optim_cfg.aux_pi_weight, self.optim_cfg.aux_pi_steps, step)

    @staticmethod
    def pi_balance(out: AutoencoderOutput) -> Tensor:
        """mean_b KL(uniform || π_b): how far each image's PSA mixing weights π (b, k) are from
        uniform (π clamped at 1e-8).

        Zero when every slot of every image holds the same share of tokens; large when a
        component dies (π_k → 0), which the E-step's log π term otherwise makes permanent.
        Zero for groupings without mixing weights (SA).
        """
        pi = getattr(out.grouping, "pi", None)
        if pi is None:
            return out.recon.new_zeros(())
        k = pi.shape[1]
        return -(pi.float().clamp_min(1e-8).log().mean(1)).mean() - math.log(k)

    @staticmethod
    def mask_consistency(out: AutoencoderOutput) -> Tensor:
        """Cross-entropy H(attn, masks) per pixel, attention as a fixed target.

        attn_masks (b, k, H, W) are the grouping's responsibilities (on the simplex over k);
        masks (b, k, 1, H, W) the decoder's alpha masks. Zero for non-additive decoders.
        """
        if out.masks is None:
            return out.recon.new_zeros(())
        target = out.attn_masks.detach()  # (b, k, H, W)
        log_masks = out.masks[:, :, 0].clamp_min(1e-6).log()  # (b, k, H, W)
        return -(target * log_masks).sum(1).mean()

    def prune_tau_at(self, step: int) -> float:
        """The grouping's ARD threshold in training at optimiser step `step` (linear ramp)."""
        steps = self.optim_cfg.prune_tau_steps
        if self.prune_tau <= 0 or steps <= 0:
            return self.prune_tau
        return self.prune_tau * min(1.0, step / steps)

    def temperature_at(self, step: int) -> float:
        """The grouping's E-step temperature in training at optimiser step `step` (geometric
        anneal from ``optim.temperature_start`` to the configured value)."""
        start, steps = self.optim_cfg.temperature_start, self.optim_cfg.temperature_steps
        if start <= 0 or steps <= 0:
            return self.temperature
        frac = min(1.0, step / steps)
        return math.exp((1.0 - frac) * math.log(start) + frac * math.log(self.temperature))

    def scheduled_grouping_args(self, step: int) -> dict[str, Any]:
        """The grouping's call arguments at optimiser step `step`: the scheduled E-step
        temperature and ARD threshold where they differ from the configured values (empty
        otherwise). They are passed to the training forward pass only, so validation and export
        (EMA copy or not) always see the configured values."""
        args: dict[str, Any] = {}
        temperature = self.temperature_at(step)
        if temperature != self.temperature:
            args["temperature"] = temperature
        tau = self.prune_tau_at(step)
        if tau != self.prune_tau:
            args["extensions"] = with_settings(self.model.grouping.extensions, prune_tau=tau)
        return args

    def _scheduled_forward(self, images: Tensor) -> AutoencoderOutput:
        """The training forward pass with the scheduled ARD threshold and E-step temperature."""
        args = self.scheduled_grouping_args(self.global_step)
        return self.model(images, grouping_args=args) if args else self.model(images)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = self._images(batch)
        out = self._scheduled_forward(images)
        loss = self.nll(out, images)
        b = images.shape[0]
        weight = self.aux_mask_weight(self.global_step)
        if weight > 0:
            aux = self.mask_consistency(out)
            self.log("train/aux_mask", aux, batch_size=b)
            loss = loss + weight * aux
        weight = self.aux_pi_weight(self.global_step)
        if weight > 0:
            aux = self.pi_balance(out)
            self.log("train/aux_pi", aux, batch_size=b)
            loss = loss + weight * aux
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        with torch.no_grad():
            mse = (out.recon.float() - images.float()).pow(2).mean()
        self.log("train/mse", mse, batch_size=b)
        opt = self.optimizers(use_pl_optimizer=False)
        self.log("train/lr", opt.param_groups[0]["lr"], batch_size=b)
        self.log("train/skipped_updates", self.skipped_updates.float(), batch_size=b)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return
        clip = self.optim_cfg.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.last_grad_norm = float(norm)
        threshold = self.optim_cfg.skip_grad_norm
        if threshold > 0 and (
            not math.isfinite(self.last_grad_norm) or self.last_grad_norm > threshold
        ):
            # No gradient → AdamW leaves the parameter and its moments untouched for this step.
            for p in params:
                p.grad = None
            self.skipped_updates += 1
        self.log("train/grad_norm", min(self.last_grad_norm, 1e30), batch_size=1)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    # ----------------------------------------------------------------- validation
    @torch.no_grad()
    def evaluate_batch(self, batch: Any) -> dict[str, Tensor]:
        """Per-batch validation figures of the EMA model: nll, mse and mean FG-ARI."""
        images = self._images(batch)
        out = self.eval_model(images)
        metrics = {
            "nll": self.nll(out, images).float(),
            "mse": (out.recon.float() - images.float()).pow(2).mean(),
        }
        if isinstance(batch, dict) and "mask" in batch:
            # NaN for images without foreground (see fg_ari), so nanmean skips them
            scores = fg_ari(predicted_segmentation(out), batch["mask"]).float()
            metrics["fg_ari"] = scores.nanmean()
            # The grouping's own segmentation (E-step responsibilities / attention), for diagnosis.
            attn_scores = fg_ari(out.attn_masks.argmax(1), batch["mask"]).float()
            metrics["fg_ari_attn"] = attn_scores.nanmean()
        return metrics

    def on_train_start(self) -> None:
        self._fit_start = time.perf_counter()

    def on_validation_epoch_end(self) -> None:
        start = getattr(self, "_fit_start", None)
        if start is not None and self.trainer.state.fn == "fit":
            # Wall-clock minutes of this training session, for FG-ARI-against-time curves.
            self.log("val/minutes", (time.perf_counter() - start) / 60.0)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.eval_model.eval()
        b = self._images(batch).shape[0]
        for name, value in self.evaluate_batch(batch).items():
            self.log(f"val/{name}", value, prog_bar=name == "fg_ari", batch_size=b, sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        b = self._images(batch).shape[0]
        for name, value in self.evaluate_batch(batch).items():
            self.log(f"test/{name}", value, batch_size=b, sync_dist=True)

    # ----------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        o = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            # Norm scales, biases and learned slot initialisations are not weight-decayed.
            (no_decay if p.dim() <= 1 or "norm" in name.lower() else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=o.lr, betas=o.betas)

        def factor(step: int) -> float:
            return lr_factor(
                step,
                lr=o.lr,
                warmup_steps=o.warmup_steps,
                max_steps=self.max_steps,
                cosine=o.cosine,
                min_lr=o.min_lr,
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
