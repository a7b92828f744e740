"""`probslot evaluate`: every metric that applies to one trained run, written to ``RUN/eval.json``.

Reads a run directory (``config.yaml`` + ``model.safetensors``, via `probslot.load_model`), runs
the model over one data split, returns the figures as an `EvalResult`
(`probslot.evaluation.results`) and writes:

``RUN/eval.json``
    segmentation (ARI, FG-ARI, mBO on decoder alpha masks *and* on attention masks, labelled by
    source), reconstruction MSE (all pixels, foreground), identifiability against ground-truth
    latents (SMCC, R², per-latent correlation) when the dataset has latents, compositional
    contrast on a small subset, slot-count statistics from π (PSA), FID/KID when Inception
    weights are supplied, and FID of scenes sampled from the aggregate posterior when the run
    has ``posterior.safetensors`` (refused before any work, as by ``probslot sample``, when it
    was fitted with other weights: `probslot.posterior.commands.check_run_posterior`).
``RUN/eval/*.png``
    reconstructions and masks, per-slot decompositions, posterior samples, π histogram.

Slots vs ground-truth latents are matched **per image by mask IoU**: the ground-truth label map
gives one binary mask per visible object, the model gives one soft mask per slot (decoder alpha
masks, or attention masks for non-additive decoders); a rectangular Hungarian assignment
(`scipy.optimize.linear_sum_assignment`, maximising IoU) pairs every visible object with a
distinct slot. The matched (object latents, slot) pairs of all images are pooled into one set of
shape (N objects, 1, ·) so that one map is fitted for all objects (objects are exchangeable:
latent row order is depth order, not identity) and scored with `probslot.metrics.smcc_details`
/ `slot_r2_details` (held-out split of the objects).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from probslot import metrics as M
from probslot.evaluation.options import EvalConfig
from probslot.evaluation.results import (
    CompositionalContrast,
    DrawSpread,
    DrawStats,
    EvalResult,
    Generation,
    Identifiability,
    MaskScores,
    PosteriorSamples,
    Reconstruction,
    SlotCounts,
    ThresholdCounts,
)
from probslot.io import RunPaths, load_model
from probslot.relevance import relevant
from probslot.runs import load_split, run_config
from probslot.typing import SlotPosterior

if TYPE_CHECKING:
    from probslot.posterior import AggregatePosterior

__all__ = [
    "EVAL_FILE",
    "EncodedSplit",
    "EvalConfig",
    "EvalResult",
    "POSTERIOR_FILE",
    "encode_split",
    "evaluate_run",
    "load_split",
    "match_objects_to_slots",
    "min_images_for_identifiability",
]

EVAL_FILE = "eval.json"
POSTERIOR_FILE = "posterior.safetensors"  # as `probslot aggregate` writes it
#: the thresholds τ at which eval.json reports slot counts (a report setting; `probslot prune
#: --sweep` has its own, longer list, `probslot.posterior.DEFAULT_TAUS`)
_TAUS = (0.01, 0.05, 0.1)


# --------------------------------------------------------------------------- data and encoding
def min_images_for_identifiability(slot_dim: int, train_fraction: float = 0.8) -> int:
    """Fewest matched objects for an affine fit b → a of `slot_dim` inputs plus 2 held-out ones."""
    return M.min_images(slot_dim + 2, train_fraction)


@dataclass
class EncodedSplit:
    """Per-image model outputs kept for dataset-level metrics (all on the CPU).

    Attributes:
        slots: (m, k, d) the slots passed to the decoder.
        mu, var: (m, k, d) PSA slot posteriors, or None for slot attention.
        pi: (m, k) PSA mixing weights, or None.
    """

    slots: Tensor
    mu: Tensor | None = None
    var: Tensor | None = None
    pi: Tensor | None = None


def _batches(dataset: Any, m: int, batch_size: int) -> Any:
    from probslot.data.contract import collate

    for start in range(0, m, batch_size):
        yield collate([dataset[i] for i in range(start, min(start + batch_size, m))])


def encode_split(
    model: nn.Module, dataset: Any, m: int, batch_size: int = 64, progress: Any = None
) -> EncodedSplit:
    """Run ``model.encode`` over the first `m` images of `dataset` (no decoding)."""
    slots, mu, var, pi = [], [], [], []
    with torch.inference_mode():
        for batch in _batches(dataset, m, batch_size):
            g = model.encode(batch["image"])
            slots.append(g.slots.float().cpu())
            if isinstance(g, SlotPosterior):
                mu.append(g.mu.float().cpu())
                var.append(g.var.float().cpu())
                pi.append(g.pi.float().cpu())
            if progress is not None:
                progress(batch["image"].shape[0])
    return EncodedSplit(
        slots=torch.cat(slots),
        mu=torch.cat(mu) if mu else None,
        var=torch.cat(var) if var else None,
        pi=torch.cat(pi) if pi else None,
    )


# --------------------------------------------------------------------------- matching to GT
def match_objects_to_slots(
    labels: Tensor, slot_masks: Tensor, visibility: Tensor
) -> list[tuple[int, int, int]]:
    """Pair ground-truth objects with slots per image by maximal mask IoU (rectangular Hungarian).

    Args:
        labels: (b, H, W) int ground-truth label maps; label j ≥ 1 is latent row j − 1.
        slot_masks: (b, k, H, W) soft slot masks (decoder alpha or attention), summing to 1 over k.
        visibility: (b, max_objects) bool, objects that own at least one pixel.

    Returns:
        ``(image, latent_row, slot)`` triples for every visible object (one distinct slot each
        while slots last).
    """
    b, k = slot_masks.shape[:2]
    n_obj = visibility.shape[1]
    onehot = torch.stack([(labels == j + 1) for j in range(n_obj)], dim=1).double()  # (b, M, H, W)
    soft = slot_masks.double().flatten(2)  # (b, k, HW)
    obj = onehot.flatten(2)  # (b, M, HW)
    inter = obj @ soft.transpose(1, 2)  # (b, M, k)
    union = obj.sum(-1, keepdim=True) + soft.sum(-1).unsqueeze(1) - inter
    iou = (inter / union.clamp_min(1e-8)).numpy()
    vis = visibility.numpy() & (obj.sum(-1) > 0).numpy()
    pairs = []
    for i in range(b):
        rows = np.flatnonzero(vis[i])
        if rows.size == 0:
            continue
        r, c = linear_sum_assignment(iou[i, rows], maximize=True)
        pairs.extend((i, int(rows[a]), int(s)) for a, s in zip(r, c, strict=True))
    return pairs


def _object_sis(latents: Tensor, slots: Tensor, image: Sequence[int], seed: int) -> dict[str, Any]:
    """SIS (Brady et al. 2023; `probslot.metrics.sis`) on pairs of matched objects of one image.

    Images hold different numbers of objects, so SIS's k slots per image are taken two at a
    time: each object a of an image with ≥ 2 matched objects is paired with the next object b of
    that image (cyclically); its own slot must predict z_a better than b's slot does. Returns
    ``{"sis": score, "sis_pairs": count}``, or a note when fewer pairs than the fit needs.
    """
    by_image: dict[int, list[int]] = {}
    for idx, img in enumerate(image):
        by_image.setdefault(img, []).append(idx)
    first, second = [], []
    for objs in by_image.values():
        if len(objs) >= 2:
            first += objs
            second += objs[1:] + objs[:1]
    need = M.min_images(slots.shape[-1] + 2)
    if len(first) < need:
        return {"sis": None, "sis_pairs": len(first)}
    z = torch.stack([latents[first], latents[second]], 1)  # (P, 2, F)
    s = torch.stack([slots[first], slots[second]], 1)  # (P, 2, d)
    perm = torch.tensor([[0, 1]]).expand(len(first), 2)
    score = M.sis(z, s, perm=perm, seed=seed).score
    return {"sis": _float(score), "sis_pairs": len(first)}


# --------------------------------------------------------------------------- helpers
def _float(x: Any) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


def _slot_masks(out: Any) -> dict[str, Tensor]:
    """{'decoder': (b, k, H, W), 'attention': (b, k, H, W)} — decoder only for additive decoders."""
    sources = {"attention": out.attn_masks}
    if out.masks is not None:
        sources = {"decoder": out.masks[:, :, 0], **sources}
    return sources


class _Progress:
    """A rich progress bar (or nothing) over a known number of images."""

    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self.enabled, self.description, self.total = enabled, description, total
        self._bar = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def __call__(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- the command
def evaluate_run(
    run_dir: str | os.PathLike[str],
    config: EvalConfig | None = None,
    *,
    extractor: M.FeatureExtractor | None = None,
) -> EvalResult:
    """Evaluate one run on one split; write ``RUN/eval.json`` and ``RUN/eval/*.png``.

    Args:
        run_dir: a run directory written by `probslot train` / `probslot demo`.
        config: options (`EvalConfig`); defaults evaluate the whole test split.
        extractor: a feature extractor for FID/KID (overrides ``config.inception``; tests use a
            small self-contained one).

    Returns:
        The `EvalResult`; eval.json is its `EvalResult.to_dict`.

    Raises:
        FileNotFoundError: missing run directory, config, weights or Inception file.
        ValueError: the split has fewer images than asked for, or fewer than identifiability
            needs (the message names the minimum and the override that fixes it).
    """
    cfg = config or EvalConfig()
    paths = RunPaths(Path(run_dir))
    run_cfg = run_config(paths.root, cfg.data_overrides)  # FileNotFoundError with the fix
    model = load_model(paths.root)
    dataset = load_split(run_cfg, cfg.split)
    size = len(dataset)
    if cfg.max_images is not None and cfg.max_images > size:
        raise ValueError(
            f"max_images={cfg.max_images} asks for more images than the {cfg.split!r} split "
            f"holds ({size}); pass --max_images <= {size} or enlarge the split with the data "
            f"override data.num_{cfg.split}={cfg.max_images}"
        )
    m = cfg.max_images or size
    if m < 1:
        raise ValueError(
            f"the {cfg.split!r} split of {paths.root} is empty; add the data override "
            f"data.num_{cfg.split}=N"
        )
    if getattr(model, "target", "pixels") == "features":  # DINOSAUR-style: object discovery
        from probslot.evaluation.objects import evaluate_objects

        torch.manual_seed(cfg.seed)
        with _Progress(cfg.progress, f"evaluate {paths.root.name} [{cfg.split}]", m) as bar:
            found = evaluate_objects(model, dataset, m, cfg.batch_size, progress=bar)
        note = (
            "feature model: object discovery (mBO_i, mBO_c, FG-ARI, CorLoc) on decoder and "
            "attention masks; no pixel reconstruction, identifiability or panels (docs/real-images.md)"
        )
        result = EvalResult(str(paths.root), cfg.split, m, (note,), objects=found)
        result.save(paths.root / EVAL_FILE)
        return result
    first = dataset[0]
    if not isinstance(first, dict) or "image" not in first:
        keys = sorted(first) if isinstance(first, dict) else type(first).__name__
        raise ValueError(
            f"evaluate needs an image dataset whose items hold 'image' (3, H, W); the "
            f"{run_cfg.data.name!r} dataset gives {keys}"
        )
    has_masks = "mask" in first
    # objects are matched to slots by mask; a store of a source without latents (Objects-Room,
    # CLEVRTex) yields zero-width latents
    has_latents = "latents" in first and first["latents"].shape[-1] > 0 and has_masks
    slot_dim = int(getattr(model.grouping, "slot_dim", run_cfg.model.slot_dim))
    need = min_images_for_identifiability(slot_dim)
    extractor = extractor or (
        M.InceptionFeatures.from_file(cfg.inception) if cfg.inception else None
    )
    posterior_path = paths.root / POSTERIOR_FILE
    posterior: AggregatePosterior | None = None
    posterior_note: str | None = None
    if posterior_path.is_file() and cfg.posterior_samples > 0:
        # checked before any work: a posterior of other weights is refused, as `probslot sample`
        from probslot.posterior import AggregatePosterior
        from probslot.posterior.commands import check_run_posterior

        posterior = AggregatePosterior.load(posterior_path, dim=slot_dim)
        posterior_note = check_run_posterior(posterior, model, paths, posterior_path)

    ari_metrics: dict[str, dict[str, Any]] = {}
    mse_all, mse_fg = M.MSEMetric(), M.MSEMetric(foreground_only=True)
    slots, pis, counts, gen_real, gen_recon = [], [], [], [], []
    obj_latents, obj_slots, obj_image = [], [], []
    panels: dict[str, Tensor] = {}
    torch.manual_seed(cfg.seed)
    seen = 0
    title = f"evaluate {paths.root.name} [{cfg.split}]"
    with _Progress(cfg.progress, title, m) as bar, torch.inference_mode():
        for batch in _batches(dataset, m, cfg.batch_size):
            images, labels = batch["image"], batch.get("mask")
            out = model(images, grouping_args={"draw": cfg.draw})
            recon = out.recon.clamp(0, 1)
            mse_all.update(recon, images)
            masks = _slot_masks(out)
            if labels is not None:
                mse_fg.update(recon, images, labels)
            for source, mk in masks.items() if labels is not None else ():
                pred = M.masks_to_labels(mk)
                entry = ari_metrics.setdefault(
                    source,
                    {
                        "ari": M.ARIMetric(),
                        "fg_ari": M.ARIMetric(foreground_only=True),
                        "mbo": M.MBOMetric(),
                    },
                )
                for metric in entry.values():
                    metric.update(pred, labels)
            g = out.grouping
            slots.append(g.slots.float())
            counts.append(batch["num_objects"])
            if isinstance(g, SlotPosterior):
                pis.append(g.pi.float())
            if has_latents:
                source = "decoder" if "decoder" in masks else "attention"
                pairs = match_objects_to_slots(labels, masks[source], batch["visibility"])
                for i, row, s in pairs:
                    obj_latents.append(batch["latents"][i, row])
                    obj_slots.append(g.slots[i, s].float())
                    obj_image.append(seen + i)
            seen += images.shape[0]
            if extractor is not None:  # keep features, not the images of the whole split
                gen_real.append(M.extract_features(extractor, images))
                gen_recon.append(M.extract_features(extractor, recon))
            if not panels:
                n = min(cfg.num_panels, images.shape[0])
                panels = {
                    "images": images[:n],
                    "recon": recon[:n],
                    "labels": labels[:n]
                    if labels is not None
                    else torch.zeros_like(images[:n, 0]).long(),
                    **{f"masks_{s}": v[:n] for s, v in masks.items()},
                }
                if out.per_slot is not None:
                    panels["per_slot"] = out.per_slot[:n].clamp(0, 1)
                if out.masks is not None:
                    panels["alpha"] = out.masks[:n]
            bar(images.shape[0])

    slots_all = torch.cat(slots)  # (m, k, d)
    num_slots = int(slots_all.shape[1])
    notes: list[str] = []
    segmentation = {
        source: MaskScores(
            ari=_float(entry["ari"].compute()),
            fg_ari=_float(entry["fg_ari"].compute()),
            mbo=_float(entry["mbo"].compute()),
        )
        for source, entry in ari_metrics.items()
    }
    if not has_masks:
        notes.append(
            "segmentation and foreground MSE: not computed (the dataset has no ground-truth masks)"
        )
    elif "decoder" not in ari_metrics:
        notes.append(
            "decoder alpha masks: not computed (non-additive decoder has no per-slot masks); "
            "segmentation uses attention masks only"
        )
    reconstruction = Reconstruction(
        mse=_float(mse_all.compute()),
        fg_mse=_float(mse_fg.compute()) if has_masks else None,
    )

    # identifiability against ground-truth latents
    identifiability: Identifiability | None = None
    if has_latents and len(obj_latents) < need:
        # a small evaluation gives what it can: the affine fit needs enough matched objects
        notes.append(
            f"identifiability vs ground truth: skipped: the affine fit from {slot_dim}-d slots "
            f"needs at least {need} matched objects and {m} images gave {len(obj_latents)}; "
            f"evaluate more images (--max_images, or the data override data.num_{cfg.split}=N)"
        )
    elif has_latents:
        latent_names = list(getattr(dataset, "latent_names", []))
        target = torch.stack(obj_latents)[:, None, :].double()  # (N, 1, F)
        pred = torch.stack(obj_slots)[:, None, :].double()  # (N, 1, d)
        res = M.smcc_details(target, pred, transform="affine", chance=True, seed=cfg.seed)
        per_dim = res.per_dim[0].tolist()
        # same matching and held-out split as the SMCC above
        same = {"perm": res.perm, "seed": cfg.seed}
        r2_affine = _float(M.slot_r2_details(target, pred, transform="affine", **same).score)
        r2_krr = _float(M.slot_r2_details(target, pred, transform="krr", **same).score)
        identifiability = Identifiability(
            num_objects=int(target.shape[0]),
            matching="mask-iou-hungarian",
            mask_source="decoder" if "decoder" in ari_metrics else "attention",
            smcc=_float(res.score),
            smcc_chance=_float(res.chance) if res.chance is not None else None,
            smcc_adjusted=_float(res.adjusted) if res.adjusted is not None else None,
            per_latent_corr={
                (latent_names[j] if j < len(latent_names) else f"z{j}"): _float(v)
                for j, v in enumerate(per_dim)
            },
            r2_affine=r2_affine,
            r2_krr=r2_krr,
            **_object_sis(target[:, 0], pred[:, 0], obj_image, cfg.seed),  # sis, sis_pairs
        )
    else:
        notes.append(
            "identifiability vs ground truth: not computed (the dataset has no latents or masks)"
        )

    # compositional contrast (paper Def. 1) on a small subset
    contrast: CompositionalContrast | None = None
    if cfg.contrast_images > 0:
        sub = slots_all[: cfg.contrast_images].detach().clone()

        def decoder_fn(s: Tensor) -> Tensor:
            return model.decode(s[None]).recon.flatten()

        cc = M.compositional_contrast(decoder_fn, sub).detach()
        pixels = 3 * math.prod(model.image_size)
        contrast = CompositionalContrast(
            mean=_float(cc.mean()),
            std=_float(cc.std()) if cc.numel() > 1 else 0.0,
            mean_per_pixel=_float(cc.mean() / pixels),
            num_images=int(cc.numel()),
        )

    # slot counts from π (PSA, paper Eq. 7 / App. H): the relevance rule of `probslot prune`
    slot_counts: SlotCounts | None = None
    if pis:
        pi = torch.cat(pis)
        objects = torch.cat(counts).double()
        thresholds = {}
        for tau in _TAUS:
            active = relevant(pi, tau).sum(-1).double()
            thresholds[tau] = ThresholdCounts(
                mean_active=_float(active.mean()),
                mae_vs_objects=_float((active - objects).abs().mean()),
                mae_vs_objects_plus_background=_float((active - objects - 1).abs().mean()),
            )
        slot_counts = SlotCounts(
            mean_objects=_float(objects.mean()),
            pi_sorted_mean=tuple(_float(v) for v in pi.sort(-1, descending=True)[0].mean(0)),
            thresholds=thresholds,
        )
        panels["pi"] = pi
    else:
        notes.append("slot counts: not computed (slot attention has no mixing weights π)")

    # aggregate posterior samples
    samples = None
    drawn: PosteriorSamples | None = None
    if posterior is not None:
        if posterior_note is not None:
            notes.append(posterior_note)
        gen = torch.Generator().manual_seed(cfg.seed)
        z = posterior.sample_scenes(cfg.posterior_samples, num_slots=num_slots, generator=gen)
        with torch.inference_mode():
            samples = torch.cat(
                [
                    model.decode(z[i : i + cfg.batch_size].float()).recon.clamp(0, 1)
                    for i in range(0, z.shape[0], cfg.batch_size)
                ]
            )
        panels["samples"] = samples[: max(cfg.num_panels, 8)]
        drawn = PosteriorSamples(file=str(posterior_path), samples=int(samples.shape[0]))
    else:
        notes.append(
            f"aggregate-posterior samples: not computed (no {POSTERIOR_FILE}; run "
            f"`probslot aggregate --run_dir {paths.root}` first)"
        )

    # FID / KID
    generation: Generation | None = None
    if extractor is not None:
        real, rec = torch.cat(gen_real), torch.cat(gen_recon)
        rfid = _float(M.frechet_distance(real, rec))
        rkid = _float(M.kernel_inception_distance(real, rec).mean)
        cfid = ckid = None
        if samples is not None:
            fake = M.extract_features(extractor, samples)
            cfid = _float(M.frechet_distance(real, fake))
            ckid = _float(M.kernel_inception_distance(real, fake).mean)
        generation = Generation(rfid=rfid, rkid=rkid, cfid=cfid, ckid=ckid)
    else:
        notes.append("FID/KID: skipped (pass --inception PATH to a TorchScript Inception file)")

    draws: DrawSpread | None = None
    if cfg.draws > 1:
        first_draw = _headline(reconstruction, segmentation, identifiability)
        draws = _draw_spread(model, dataset, m, cfg, first_draw, need if has_latents else 0)

    from probslot.reports.figures import write_eval_panels

    figures = write_eval_panels(panels, paths.root / "eval")
    result = EvalResult(
        run=str(paths.root),
        split=cfg.split,
        num_images=m,
        notes=tuple(notes),
        num_slots=num_slots,
        slot_dim=int(slots_all.shape[2]),
        grouping="psa" if pis else "sa",
        decoder_additive="decoder" in ari_metrics,
        segmentation=segmentation,
        reconstruction=reconstruction,
        identifiability=identifiability,
        compositional_contrast=contrast,
        slot_counts=slot_counts,
        posterior=drawn,
        generation=generation,
        draws=draws,
        figures={name: str(p.relative_to(paths.root)) for name, p in figures.items()},
        config=cfg,
    )
    result.save(paths.root / EVAL_FILE)
    return result


def _headline(
    reconstruction: Reconstruction,
    segmentation: dict[str, MaskScores],
    identifiability: Identifiability | None,
) -> dict[str, float | None]:
    """The figures whose spread over draws `EvalConfig.draws` reports, from one draw's result."""
    figures: dict[str, float | None] = {"mse": reconstruction.mse}
    for source, vals in segmentation.items():
        figures[f"fg_ari_{source}"] = vals.fg_ari
        figures[f"mbo_{source}"] = vals.mbo
    if identifiability is not None:
        figures["smcc"] = identifiability.smcc
    return figures


def _draw_spread(
    model: nn.Module,
    dataset: Any,
    m: int,
    cfg: EvalConfig,
    first_draw: dict[str, float | None],
    need: int,
) -> DrawSpread:
    """Mean ± std (over draws) of the headline figures: `first_draw` is draw ``cfg.draw``'s
    (`_headline`); the other draws rerun the segmentation, MSE and SMCC passes only (same
    images, same matching rule)."""
    per_draw = [first_draw]
    draws = list(range(cfg.draw, cfg.draw + cfg.draws))
    title = f"draws {draws[1]}-{draws[-1]}"
    with _Progress(cfg.progress, title, m * (cfg.draws - 1)) as bar, torch.inference_mode():
        for draw in draws[1:]:
            mse_all = M.MSEMetric()
            seg: dict[str, dict[str, Any]] = {}
            obj_latents, obj_slots = [], []
            for batch in _batches(dataset, m, cfg.batch_size):
                images, labels = batch["image"], batch.get("mask")
                out = model(images, grouping_args={"draw": draw})
                mse_all.update(out.recon.clamp(0, 1), images)
                masks = _slot_masks(out)
                for source, mk in masks.items() if labels is not None else ():
                    entry = seg.setdefault(
                        source, {"fg_ari": M.ARIMetric(foreground_only=True), "mbo": M.MBOMetric()}
                    )
                    pred = M.masks_to_labels(mk)
                    for metric in entry.values():
                        metric.update(pred, labels)
                if need and labels is not None:
                    source = "decoder" if "decoder" in masks else "attention"
                    for i, row, s in match_objects_to_slots(
                        labels, masks[source], batch["visibility"]
                    ):
                        obj_latents.append(batch["latents"][i, row])
                        obj_slots.append(out.grouping.slots[i, s].float())
                bar(images.shape[0])
            figures: dict[str, float | None] = {"mse": _float(mse_all.compute())}
            for source, entry in seg.items():
                figures[f"fg_ari_{source}"] = _float(entry["fg_ari"].compute())
                figures[f"mbo_{source}"] = _float(entry["mbo"].compute())
            if need and len(obj_latents) >= need:
                target = torch.stack(obj_latents)[:, None, :].double()
                pred = torch.stack(obj_slots)[:, None, :].double()
                res = M.smcc_details(target, pred, transform="affine", chance=False, seed=cfg.seed)
                figures["smcc"] = _float(res.score)
            per_draw.append(figures)
    stats: dict[str, DrawStats] = {}
    for key in per_draw[0]:
        values = [d.get(key) for d in per_draw]
        if any(v is None for v in values):
            continue
        t = torch.tensor(values, dtype=torch.float64)
        stats[key] = DrawStats(mean=_float(t.mean()), std=_float(t.std()), values=tuple(values))
    return DrawSpread(draws=tuple(draws), stats=stats)
