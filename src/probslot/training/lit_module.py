"""The Lightning module: loss, optimiser, schedule, EMA and validation metrics — nothing else.

The model itself (:class:`probslot.models.SlotAutoencoder`) knows nothing about training; this
module wraps it:

* loss = the model's likelihood NLL of the images given the reconstruction (MSE or the
  discretised Gaussian of the authors' code, notes §7), plus, for a model with a learned keep
  gate (`probslot.nn.KeepGate`, AdaSlot), its sparsity term penalty · mean(keep_prob)
  (``train/aux_keep``);
* AdamW + linear warm-up, then constant or cosine decay (:mod:`probslot.training.schedule`);
* global gradient-norm clipping, and updates whose norm is absurd are skipped and counted
  (``train/skipped_updates``), as the authors' code does (clip 100, skip > 55000);
* numerical guards: a step whose loss or gradient is not finite never updates the weights (the
  gradients are dropped, on every process alike since DDP averages them first), is counted
  (``train/nonfinite_steps``) and, after ``optim.max_bad_steps`` consecutive ones, stops training
  with :class:`TrainingDiverged`;
* an EMA of the weights, updated right after each optimiser step, used for validation, panels
  and export;
* the training position (batches and images seen), the guards' counters and every process's
  random states, saved in ``checkpoint["probslot"]`` and restored on resume, so that a resumed
  run continues exactly where it stopped;
* batches in the contract's dtypes: the training loaders ship a converted store's images and
  masks as uint8 and the DataModule's ``on_after_batch_transfer`` turns them into float32 / 255
  and int64 on the device, before any step here sees them (`probslot.data.datamodule`);
* validation: reconstruction MSE and FG-ARI (ARI over ground-truth foreground pixels between
  the argmax of the decoder masks — or of the attention maps for non-additive decoders — and the
  ground-truth label map), accumulated in ``torchmetrics.MeanMetric``s (sums and counts), so that
  under DDP the figures are those of the whole validation split, not a mean of per-rank means.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from probslot.config import OptimConfig
from probslot.metrics.segmentation import fg_ari
from probslot.nn import (
    ARDPrune,
    ProbabilisticSlotAttention,
    TemperedEStep,
    keep_gate_of,
    unwrap_grouping,
    with_settings,
)
from probslot.training.callbacks import EMA, soft_masks
from probslot.training.checkpoint import get_rng_state, probslot_section, set_rng_state
from probslot.training.schedule import lr_factor
from probslot.typing import AutoencoderOutput

__all__ = ["SlotLightningModule", "TrainingDiverged", "predicted_segmentation", "rank_seed"]

#: validation figures, each a MeanMetric over images (fg_ari skips images without foreground)
_VAL_METRICS = ("nll", "mse", "fg_ari", "fg_ari_attn")


class TrainingDiverged(ValueError):
    """Training stopped after ``optim.max_bad_steps`` consecutive non-finite steps.

    A ``ValueError`` (the settings or the data made the loss non-finite), so the command line
    reports it in one line; the run directory keeps the last checkpoint written before the streak.
    """


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process `rank` (rank 0 keeps `seed`, so one process trains as before)."""
    return (seed + 1_000_003 * rank) % 2**32


def model_inputs(batch: Any) -> dict[str, Tensor]:
    """Model inputs a batch carries besides its images: ``features``, a frozen encoder's tokens
    read from a feature cache (``data.feature_cache``), so a feature model skips its encoder."""
    if isinstance(batch, dict) and "features" in batch:
        return {"features": batch["features"]}
    return {}


def recon_mse(out: AutoencoderOutput, images: Tensor) -> Tensor:
    """Mean squared reconstruction error: of the tokens for a feature model (``out.target``),
    else of the pixels."""
    target = getattr(out, "target", None)
    reference = images if target is None else target
    return (out.recon.float() - reference.float()).pow(2).mean()


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

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig,
        max_steps: int,
        *,
        seed: int = 0,
        config_text: str | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim_cfg = optim
        self.max_steps = max_steps
        self.seed = seed
        self.config_text = config_text
        self.ema = EMA(model, optim.ema_decay) if optim.ema_decay > 0 else None
        grouping = unwrap_grouping(getattr(model, "grouping", None))  # inside a keep gate
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
        # numerical guards and the training position (saved in checkpoint["probslot"])
        self.nonfinite_steps = 0  # steps whose loss or gradient was not finite, in all
        self.consecutive_bad_steps = 0  # the current streak of them
        self.batches_seen = 0  # training batches taken from the loader (per process)
        self.samples_seen = 0  # training images of all processes together
        self._rng_to_restore: list[dict[str, Any]] | None = None
        # FG-ARI is NaN for an image without foreground (skipped); a NaN loss stays visible
        self.val_metrics = nn.ModuleDict(
            {
                name: MeanMetric(nan_strategy="ignore" if name.startswith("fg_ari") else "disable")
                for name in _VAL_METRICS
            }
        )

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
        if not images.is_floating_point():
            raise TypeError(
                f"a batch's images must be float (batch, 3, H, W) in [0, 1]; got {images.dtype}. "
                "Batches of uint8 images (a converted store's training loaders) become float in "
                "SlotDataModule.on_after_batch_transfer: train with its datamodule, or pass "
                "batches through probslot.data.store.to_contract_dtypes first"
            )
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

    @staticmethod
    def keep_sparsity(out: AutoencoderOutput) -> Tensor:
        """mean over images and slots of a keep gate's keep_prob (b, k): AdaSlot's penalty on
        the expected share of kept slots. Zero for groupings without a gate."""
        keep_prob = getattr(out.grouping, "keep_prob", None)
        if keep_prob is None:
            return out.recon.new_zeros(())
        return keep_prob.float().mean()

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
            parts = unwrap_grouping(self.model.grouping).extensions
            args["extensions"] = with_settings(parts, prune_tau=tau)
        return args

    def _scheduled_forward(
        self, images: Tensor, inputs: dict[str, Tensor] | None = None
    ) -> AutoencoderOutput:
        """The training forward pass with the scheduled ARD threshold and E-step temperature
        (`inputs`: the batch's further model inputs, see `model_inputs`)."""
        args = self.scheduled_grouping_args(self.global_step)
        inputs = dict(inputs or {})
        if args:
            inputs["grouping_args"] = args
        return self.model(images, **inputs)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = self._images(batch)
        out = self._scheduled_forward(images, model_inputs(batch))
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
        gate = keep_gate_of(self.model)
        if gate is not None:
            aux = self.keep_sparsity(out)
            self.log("train/aux_keep", aux, batch_size=b)
            if gate.penalty > 0:
                loss = loss + gate.penalty * aux
        self.batches_seen += 1
        self.samples_seen += b * self.trainer.world_size if self._trainer is not None else b
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        # A non-finite loss must not move the weights. Multiplying it by NaN makes every gradient
        # NaN (NaN · 0 is NaN), which `on_before_optimizer_step` then drops; under DDP the NaN
        # reaches every process through the gradient all-reduce, so all of them skip together.
        loss = loss * torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
        with torch.no_grad():
            mse = recon_mse(out, images)
        self.log("train/mse", mse, batch_size=b)
        opt = self.optimizers(use_pl_optimizer=False)
        self.log("train/lr", opt.param_groups[0]["lr"], batch_size=b)
        self.log("train/skipped_updates", self.skipped_updates.float(), batch_size=b)
        self.log("train/nonfinite_steps", float(self.nonfinite_steps), batch_size=b)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return
        clip = self.optim_cfg.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        self.last_grad_norm = float(norm)
        finite = math.isfinite(self.last_grad_norm)
        threshold = self.optim_cfg.skip_grad_norm
        if not finite or (threshold > 0 and self.last_grad_norm > threshold):
            # No gradient → AdamW leaves the parameter and its moments untouched for this step.
            for p in params:
                p.grad = None
            self.skipped_updates += 1
        if finite:
            self.consecutive_bad_steps = 0
        else:
            self.nonfinite_steps += 1
            self.consecutive_bad_steps += 1
        self.log("train/grad_norm", min(self.last_grad_norm, 1e30), batch_size=1)

    def diverged(self) -> bool:
        """Whether ``optim.max_bad_steps`` consecutive steps were non-finite (0 = never)."""
        limit = self.optim_cfg.max_bad_steps
        return limit > 0 and self.consecutive_bad_steps >= limit

    def divergence_message(self) -> str:
        return (
            f"training stopped at step {self.global_step}: {self.consecutive_bad_steps} "
            f"consecutive steps had a non-finite loss or gradient (optim.max_bad_steps = "
            f"{self.optim_cfg.max_bad_steps}; {self.nonfinite_steps} in all) and none of them "
            "updated the weights. Lower optim.lr, keep optim.grad_clip > 0, check the data for "
            "NaN/inf, or train in precision 32; last.ckpt is the last checkpoint before the streak"
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after the callbacks' end-of-step hooks (LastCheckpoint wrote nothing during the streak)
        if self.diverged():
            raise TrainingDiverged(self.divergence_message())

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Right after the update, before any on_train_batch_end hook, so that a checkpoint saved
        # at the end of a step always holds the EMA of that step.
        if self.ema is not None:
            self.ema.update(self.model)

    # ----------------------------------------------------------------- run state
    def on_train_start(self) -> None:
        self._fit_start = time.perf_counter()
        if self._rng_to_restore is not None:
            # resumed: every process continues with the random states it had when saved
            states = self._rng_to_restore
            rank = self.global_rank
            if len(states) == self.trainer.world_size:
                set_rng_state(states[rank])
            else:  # another number of processes: fresh, distinct streams (not bit-exact)
                self._seed_process(rank_seed(self.seed + self.global_step, rank))
            self._rng_to_restore = None
        elif self.global_rank > 0:
            # every process draws its own slot initialisations and dropout noise
            self._seed_process(rank_seed(self.seed, self.global_rank))

    @staticmethod
    def _seed_process(seed: int) -> None:
        import random

        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _all_rng_states(self) -> list[dict[str, Any]]:
        state = get_rng_state()
        trainer = self._trainer
        if trainer is None or trainer.world_size <= 1 or not torch.distributed.is_initialized():
            return [state]
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, state)
        return [
            {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in s.items()} for s in gathered
        ]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["probslot"] = probslot_section(
            config=self.config_text,
            batches_seen=self.batches_seen,
            samples_seen=self.samples_seen,
            world_size=self._trainer.world_size if self._trainer is not None else 1,
            nonfinite_steps=self.nonfinite_steps,
            consecutive_bad_steps=self.consecutive_bad_steps,
            rng=self._all_rng_states(),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        section = checkpoint.get("probslot") or {}
        self.batches_seen = int(section.get("batches_seen", 0))
        self.samples_seen = int(section.get("samples_seen", 0))
        self.nonfinite_steps = int(section.get("nonfinite_steps", 0))
        self.consecutive_bad_steps = int(section.get("consecutive_bad_steps", 0))
        self._rng_to_restore = section.get("rng")

    # ----------------------------------------------------------------- validation
    @torch.no_grad()
    def evaluate_batch(self, batch: Any, per_image: bool = False) -> dict[str, Tensor]:
        """Validation figures of the EMA model on one batch: nll, mse and FG-ARI (their means,
        or with `per_image` the (b,) values whose mean over the split is the figure: nll and mse
        as the batch mean repeated per image, FG-ARI per image with NaN where an image has no
        foreground)."""
        images = self._images(batch)
        b = images.shape[0]
        out = self.eval_model(images, **model_inputs(batch))
        nll = self.nll(out, images).float()
        mse = recon_mse(out, images)
        metrics = {"nll": nll.expand(b), "mse": mse.expand(b)}
        if isinstance(batch, dict) and "mask" in batch:
            # NaN for images without foreground (see fg_ari), so nanmean skips them
            metrics["fg_ari"] = fg_ari(predicted_segmentation(out), batch["mask"]).float()
            # The grouping's own segmentation (E-step responsibilities / attention), for diagnosis.
            metrics["fg_ari_attn"] = fg_ari(out.attn_masks.argmax(1), batch["mask"]).float()
        if per_image:
            return metrics
        return {name: values.nanmean() for name, values in metrics.items()}

    def on_validation_epoch_end(self) -> None:
        start = getattr(self, "_fit_start", None)
        if start is not None and self.trainer.state.fn == "fit":
            # Wall-clock minutes of this training session, for FG-ARI-against-time curves.
            minutes = (time.perf_counter() - start) / 60.0
            self.log("val/minutes", minutes, sync_dist=True, reduce_fx="max")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.eval_model.eval()
        b = self._images(batch).shape[0]
        for name, value in self.evaluate_batch(batch, per_image=True).items():
            metric = self.val_metrics[name]
            metric.update(value)
            self.log(f"val/{name}", metric, prog_bar=name == "fg_ari", batch_size=b)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        b = self._images(batch).shape[0]
        for name, value in self.evaluate_batch(batch).items():
            self.log(f"test/{name}", value, batch_size=b, sync_dist=True)

    # ----------------------------------------------------------------- optimiser
    @staticmethod
    def parameter_groups(model: nn.Module) -> tuple[list[str], list[str]]:
        """(names with weight decay, names without) of the trainable parameters, in the order
        of the optimiser's parameter groups (so optimiser state index i is the i-th name)."""
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            # Norm scales, biases and learned slot initialisations are not weight-decayed.
            (no_decay if p.dim() <= 1 or "norm" in name.lower() else decay).append(name)
        return decay, no_decay

    def configure_optimizers(self) -> Any:
        o = self.optim_cfg
        params = dict(self.model.named_parameters())
        decay, no_decay = (
            [params[n] for n in names] for names in self.parameter_groups(self.model)
        )
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
