"""Automatic relevance determination (ARD, paper Eq. 7): keep slots with π_k > τ, decode only those.

PSA gives every slot a mixing weight π_k = (1/N) Σ_n A_nk, the share of the image's tokens it
explains. A slot that explains nothing has π_k ≈ 0, so the rule

    s_τ = { s_k | k ∈ [K], π_k > τ },  τ ∈ [0, 1)            (paper Eq. 7)

drops it, and an additive decoder then skips it entirely (no compute for pruned slots).
`prune_analysis` measures what this buys on held-out data: the number of kept slots against the
true number of objects, the decoder FLOPs and wall time saved, and the change in reconstruction
MSE and FG-ARI, for a sweep of thresholds, and, for a model with a learned keep gate
(`probslot.nn.KeepGate`, AdaSlot), the same figures for the gate's own rule
(`keep_gate_result`). It is a pure function of a model and a dataloader
(no Lightning, no files); `probslot prune` (`probslot.posterior.commands.prune`) writes its
result to a run directory. See docs/pruning.md.

Axis legend: see `probslot.typing` (b batch, k slots, d slot dim, h, w image size).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from probslot.clock import format_duration
from probslot.relevance import relevant
from probslot.typing import DecoderOutput, SlotPosterior
from probslot.validation import check_choice, check_float, check_int, check_iteration, check_tau

__all__ = [
    "DEFAULT_TAUS",
    "HEADLINE",
    "KeepGateResult",
    "PruningReport",
    "TauResult",
    "count_flops",
    "headline_tau",
    "keep_gate_result",
    "prune_analysis",
    "slot_count_mae",
]

#: the τ sweep of `probslot prune --sweep`
DEFAULT_TAUS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)

Convention = Literal["with_background", "objects_only"]
#: the MAE convention quoted as the headline: the background occupies a slot of its own
HEADLINE: Convention = "with_background"
ObjectCount = Literal["visible", "placed"]


# ---------------------------------------------------------------------- small pure pieces
#: the headline τ when neither the caller, the run config nor the model sets one
DEFAULT_TAU: float = 0.05


def headline_tau(model: nn.Module, tau: float | None = None) -> float:
    """The τ a pruning report leads with: `tau` if given, else the model's own ARD threshold
    when it was trained with ARD inside EM (`probslot.nn.ARDPrune`), else `DEFAULT_TAU`."""
    if tau is not None:
        return check_tau(tau)
    from probslot.nn import ARDPrune, unwrap_grouping

    extension = getattr(unwrap_grouping(getattr(model, "grouping", None)), "extension", None)
    ard = extension(ARDPrune) if callable(extension) else None
    return ard.tau if ard is not None else DEFAULT_TAU


def _targets(num_objects: Tensor, convention: Convention) -> Tensor:
    if convention == "with_background":
        return num_objects + 1
    if convention == "objects_only":
        return num_objects
    raise ValueError(f"convention must be 'with_background' or 'objects_only'; got {convention!r}")


def slot_count_mae(
    kept: Tensor | Sequence[int], num_objects: Tensor | Sequence[int], convention: Convention
) -> float:
    """Mean absolute error between kept-slot counts and the true number of slots per image.

    Args:
        kept: (b,) number of slots kept per image.
        num_objects: (b,) number of (foreground) objects per image.
        convention: ``"with_background"`` — the background counts as a slot, target
            = num_objects + 1 (the headline: a spatial-broadcast decoder must give the
            background a slot, since its masks sum to 1 at every pixel); ``"objects_only"`` —
            target = num_objects.
    """
    kept_t = torch.as_tensor(kept, dtype=torch.float64).flatten()
    obj_t = torch.as_tensor(num_objects, dtype=torch.float64).flatten()
    if kept_t.shape != obj_t.shape or kept_t.numel() == 0:
        raise ValueError(
            f"kept and num_objects must be non-empty and of equal length; got {kept_t.numel()} "
            f"and {obj_t.numel()}"
        )
    return float((kept_t - _targets(obj_t, convention)).abs().mean())


def count_flops(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """(fn(*args, **kwargs), FLOPs counted by `torch.utils.flop_counter.FlopCounterMode`).

    FlopCounterMode counts matrix multiplications and convolutions (2 FLOPs per multiply-add);
    element-wise work (activations, softmax, additions) is not counted.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn(*args, **kwargs)
    return out, int(counter.get_total_flops())


# ---------------------------------------------------------------------- report types
@dataclass(frozen=True)
class PruneFigures:
    """What one pruning rule does, averaged over the evaluated images, against decoding every
    slot (the baseline): the fields shared by `TauResult` and `KeepGateResult`.

    Attributes:
        mean_kept: mean number of kept slots per image (of K).
        mae_with_background: MAE of kept slots vs num_objects + 1 (headline convention).
        mae_objects_only: MAE of kept slots vs num_objects.
        exact_with_background: fraction of images whose kept count equals num_objects + 1.
        decoder_flops: decoder FLOPs per image with pruning.
        decoder_flops_saved: 1 − decoder FLOPs / decoder FLOPs without pruning.
        model_flops_saved: decoder FLOPs saved / FLOPs of the whole model (encoder + grouping +
            full decoder).
        decoder_seconds: decoder wall time per image (best of the timing repeats).
        decoder_time_saved: 1 − decoder time / decoder time without pruning.
        mse: reconstruction MSE in [0, 1] image space (mean over images).
        mse_change_pct: 100 · (mse / mse without pruning − 1); positive = worse.
        fg_ari: FG-ARI of the (pruned) decoder masks, or of the attention restricted to the kept
            slots for non-additive decoders; NaN without ground-truth masks.
        fg_ari_change: fg_ari − fg_ari without pruning (absolute).
    """

    mean_kept: float
    mae_with_background: float
    mae_objects_only: float
    exact_with_background: float
    decoder_flops: float
    decoder_flops_saved: float
    model_flops_saved: float
    decoder_seconds: float
    decoder_time_saved: float
    mse: float
    mse_change_pct: float
    fg_ari: float
    fg_ari_change: float

    def mae(self, convention: Convention = HEADLINE) -> float:
        """The slot-count MAE under `convention`."""
        return (
            self.mae_with_background if convention == "with_background" else self.mae_objects_only
        )

    def lines(
        self, num_slots: int, headline: Convention = HEADLINE, label: str = "", more: str = ""
    ) -> list[str]:
        """The figures as the lines of `PruningReport.summary`: the MAE under `headline`, named
        `label` (default: the convention's name) and followed by `more`."""
        return [
            f"  kept slots        {self.mean_kept:.2f} / {num_slots}",
            f"  slot-count MAE    {self.mae(headline):.3f} ({label or headline}){more}",
            f"  decoder FLOPs     {self.decoder_flops_saved:.1%} saved "
            f"(whole model {self.model_flops_saved:.1%})",
            f"  decoder time      {self.decoder_time_saved:.1%} saved",
            f"  MSE               {self.mse:.5f} ({self.mse_change_pct:+.2f}% vs no pruning)",
            f"  FG-ARI            {self.fg_ari:.4f} ({self.fg_ari_change:+.4f} vs no pruning)",
        ]


@dataclass(frozen=True)
class TauResult(PruneFigures):
    """ARD at one threshold τ (the `PruneFigures` of the rule π > τ).

    Attributes:
        tau: the threshold.
    """

    tau: float


@dataclass(frozen=True)
class KeepGateResult(PruneFigures):
    """A learned keep gate's rule (`probslot.nn.KeepGate`, AdaSlot: decode the slots whose
    deterministic gate keep_prob > 0.5 is on) on the evaluated images, in the fields and
    conventions of `PruneFigures` (kept slots against the same object counts, decoder FLOPs and
    time against decoding every slot, MSE and FG-ARI against that baseline).

    Attributes:
        mean_keep_prob: mean of the gate's keep_prob over images and slots (what the training
            penalty weighs).
        num_images: images evaluated.
        baseline_mse, baseline_fg_ari: the figures of the baseline (no pruning) they compare to.
    """

    mean_keep_prob: float
    num_images: int
    baseline_mse: float
    baseline_fg_ari: float

    #: the label of its row in a report's table
    label: ClassVar[str] = "learned keep gate"


_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (attribute, header, format)
    ("tau", "τ", "{:.3f}"),
    ("mean_kept", "kept slots", "{:.2f}"),
    ("mae_with_background", "MAE (bg counts)", "{:.3f}"),
    ("mae_objects_only", "MAE (objects only)", "{:.3f}"),
    ("exact_with_background", "exact (bg counts)", "{:.1%}"),
    ("decoder_flops_saved", "decoder FLOPs saved", "{:.1%}"),
    ("model_flops_saved", "model FLOPs saved", "{:.1%}"),
    ("decoder_time_saved", "decoder time saved", "{:.1%}"),
    ("mse", "MSE", "{:.5f}"),
    ("mse_change_pct", "ΔMSE %", "{:+.2f}"),
    ("fg_ari", "FG-ARI", "{:.4f}"),
    ("fg_ari_change", "ΔFG-ARI", "{:+.4f}"),
)


@dataclass(frozen=True)
class PruningReport:
    """What ARD pruning does on a dataset, for several thresholds (see `prune_analysis`).

    Attributes:
        results: one `TauResult` per τ, in the order requested.
        num_images: images evaluated.
        num_slots: K, slots per image before pruning.
        additive: whether the decoder is additive (pruned slots cost no decoder compute).
        object_count: ``"visible"`` (objects owning ≥ 1 pixel) or ``"placed"`` (`num_objects`).
        mean_objects: mean true number of objects per image.
        baseline_mse, baseline_fg_ari: figures without pruning.
        decoder_flops, model_flops: FLOPs per image without pruning (decoder; whole model).
        decoder_seconds: decoder wall time per image without pruning.
        pi_sorted_mean: (K,) mean of each image's π sorted in decreasing order.
        pi_quantiles: quantiles (keys "0.01" … "0.99") of all π values.
        pi_histogram: counts of π in `pi_bins` (edges, len(counts) + 1).
        headline: the MAE convention quoted as the headline (`HEADLINE`).
        in_em: True when τ was applied inside the EM iterations (see `prune_analysis`), False
            for the paper's threshold on the final π.
        constant_mae: the slot-count MAE of always answering the median true count (the best
            constant answer under absolute error; the same under both conventions): what a
            count must beat to say anything about the scenes. With 2–3 objects per scene in
            equal shares it is 0.5.
        merge_dist, prune_start: the in-EM settings the pruned runs used (merging distance,
            0 = none; first EM iteration that applies τ).
        seed: seed of the random initial-slot draws (None: the model's fixed draw).
        keep_gate: for a model with a learned keep gate (`probslot.nn.KeepGate`), the gate's
            rule against the same baseline (`KeepGateResult`; the row "learned keep gate" of
            the tables); None otherwise.
    """

    results: tuple[TauResult, ...]
    num_images: int
    num_slots: int
    additive: bool
    object_count: ObjectCount
    mean_objects: float
    baseline_mse: float
    baseline_fg_ari: float
    decoder_flops: float
    model_flops: float
    decoder_seconds: float
    pi_sorted_mean: tuple[float, ...]
    pi_quantiles: dict[str, float]
    pi_histogram: tuple[int, ...]
    pi_bins: tuple[float, ...]
    headline: Convention = HEADLINE
    in_em: bool = False
    constant_mae: float = math.nan
    merge_dist: float = 0.0
    prune_start: int = 1
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    keep_gate: KeepGateResult | None = None

    @property
    def taus(self) -> tuple[float, ...]:
        return tuple(r.tau for r in self.results)

    def at(self, tau: float) -> TauResult:
        """The result for threshold `tau` (must be one of `taus`)."""
        for r in self.results:
            if math.isclose(r.tau, tau, rel_tol=0.0, abs_tol=1e-12):
                return r
        raise ValueError(f"tau {tau} was not evaluated; evaluated taus: {list(self.taus)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN becomes None)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        return clean(asdict(self))

    def to_markdown(self) -> str:
        """The τ sweep as a Markdown table (and a last row "learned keep gate" for a gate)."""
        head = "| " + " | ".join(h for _, h, _ in _COLUMNS) + " |"
        rule = "|" + "|".join("---:" for _ in _COLUMNS) + "|"
        rows = [
            "| " + " | ".join(_fmt(getattr(r, a), f) for a, _, f in _COLUMNS) + " |"
            for r in self.results
        ]
        gate = self.keep_gate
        if gate is not None:
            cells = [_fmt(getattr(gate, a), f) for a, _, f in _COLUMNS[1:]]
            rows.append("| " + " | ".join([gate.label, *cells]) + " |")
        return "\n".join([head, rule, *rows]) + "\n"

    def to_csv(self) -> str:
        """The τ sweep as CSV (one row per τ, raw values)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = [a for a, _, _ in _COLUMNS] + ["decoder_flops", "decoder_seconds"]
        writer.writerow(names)
        for r in self.results:
            writer.writerow([repr(float(getattr(r, a))) for a in names])
        return buf.getvalue()

    def _settings(self) -> str:
        """The non-default in-EM settings, as ``"; merge_dist 1; tau from EM iteration 3"``."""
        parts = []
        if self.merge_dist > 0:
            parts.append(f"merge_dist {self.merge_dist:g}")
        if self.in_em and self.prune_start > 1:
            parts.append(f"tau from EM iteration {self.prune_start}")
        return "".join("; " + p for p in parts)

    def summary(self, tau: float) -> str:
        """A few lines describing the result at `tau` (headline convention first)."""
        r = self.at(tau)
        other = "objects_only" if self.headline == "with_background" else "with_background"
        more = (
            f"; {r.mae(other):.3f} ({other}); a constant guess of the median count: "
            f"{self.constant_mae:.3f}"
        )
        lines = r.lines(self.num_slots, self.headline, f"{self.headline}, headline", more)
        header = (
            f"ARD pruning at tau={r.tau:g} "
            f"({'inside EM' if self.in_em else 'threshold on the final pi'}) on "
            f"{self.num_images} images (K={self.num_slots}, {self.mean_objects:.2f} "
            f"{self.object_count} objects/image{self._settings()}):"
        )
        gate = self.keep_gate
        if gate is not None:
            lines += [
                f"{gate.label} (keep_prob > 0.5; mean keep_prob {gate.mean_keep_prob:.3f}):",
                *gate.lines(self.num_slots, self.headline),
            ]
        return "\n".join([header, *lines])


def _fmt(value: float, spec: str) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else spec.format(value)


# ---------------------------------------------------------------------- the analysis
def _check_taus(taus: Iterable[float]) -> tuple[float, ...]:
    if isinstance(taus, (int, float)) and not isinstance(taus, bool):
        taus = (taus,)
    if isinstance(taus, (str, bytes)) or not isinstance(taus, Iterable):
        raise TypeError(f"taus must be a sequence of numbers in [0, 1); got {taus!r}")
    out = tuple(check_tau(t) for t in taus)
    if not out:
        raise ValueError("taus must hold at least one threshold in [0, 1); got an empty sequence")
    if len(set(out)) != len(out):
        raise ValueError(f"taus must be distinct; got {list(out)}")
    return out


def _batch_fields(batch: object, object_count: ObjectCount) -> tuple[Tensor, Tensor, Tensor | None]:
    if not isinstance(batch, Mapping) or "image" not in batch or "num_objects" not in batch:
        got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise ValueError(
            "prune_analysis needs dict batches with 'image' (b, 3, H, W) and 'num_objects' (b,) "
            f"(and 'mask' (b, H, W) for FG-ARI), as probslot datasets yield; got {got}"
        )
    images = batch["image"]
    if object_count == "visible" and "visibility" in batch:
        objects = batch["visibility"].sum(dim=1)  # (b,) objects owning at least one pixel
    else:
        objects = torch.as_tensor(batch["num_objects"])
    mask = batch.get("mask")
    return images, objects.long(), mask


def _labels(out: DecoderOutput, attn_masks: Tensor, keep: Tensor | None) -> Tensor:
    """(b, H, W) predicted labels: decoder masks, else attention restricted to kept slots."""
    from probslot.metrics.segmentation import masks_to_labels

    if out.masks is not None:
        return masks_to_labels(out.masks)
    maps = attn_masks
    if keep is not None:
        maps = maps.masked_fill(~keep[:, :, None, None], float("-inf"))
    return masks_to_labels(maps)


def _time_decode(model: nn.Module, slots: Tensor, keep: Tensor | None, repeats: int) -> float:
    sync = torch.cuda.synchronize if slots.is_cuda else (lambda: None)
    best = math.inf
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        model.decode(slots, keep=keep)
        sync()  # CUDA kernels run asynchronously: time their completion
        best = min(best, time.perf_counter() - start)
    return best


class _Tally:
    """Running sums (float64) of one keep rule over the evaluated images."""

    def __init__(self) -> None:
        self.kept = self.abs_bg = self.abs_obj = self.exact_bg = 0.0
        self.flops = self.seconds = self.mse = self.ari = 0.0

    def add(
        self, keep: Tensor, objects: Tensor, figures: tuple[float, float, float, float]
    ) -> None:
        """One batch: keep (b, k) bool, objects (b,) true counts, and the rule's (decoder FLOPs
        of the batch, decoder seconds per image, summed per-image MSE, summed FG-ARI)."""
        n_kept = keep.sum(1).cpu().double()  # (b,)
        obj = objects.cpu().double()
        with_bg = _targets(obj, "with_background")
        self.kept += float(n_kept.sum())
        self.abs_bg += float((n_kept - with_bg).abs().sum())
        self.abs_obj += float((n_kept - _targets(obj, "objects_only")).abs().sum())
        self.exact_bg += float((n_kept == with_bg).double().sum())
        flops, seconds, mse, ari = figures
        self.flops += flops
        self.seconds += seconds * keep.shape[0]
        self.mse += mse
        self.ari += ari

    def figures(self, seen: int, ari_count: int, base: dict[str, float]) -> dict[str, float]:
        """The `TauResult` figures, against the baseline's per-image means `base`."""
        flops, t, m = self.flops / seen, self.seconds / seen, self.mse / seen
        a = self.ari / ari_count if ari_count else math.nan
        bf, mf, bt, bm = base["flops"], base["model_flops"], base["time"], base["mse"]
        return {
            "mean_kept": self.kept / seen,
            "mae_with_background": self.abs_bg / seen,
            "mae_objects_only": self.abs_obj / seen,
            "exact_with_background": self.exact_bg / seen,
            "decoder_flops": flops,
            "decoder_flops_saved": 1.0 - flops / bf if bf > 0 else 0.0,
            "model_flops_saved": (bf - flops) / mf if mf > 0 else 0.0,
            "decoder_seconds": t,
            "decoder_time_saved": 1.0 - t / bt if bt > 0 else 0.0,
            "mse": m,
            "mse_change_pct": 100.0 * (m / bm - 1.0) if bm > 0 else 0.0,
            "fg_ari": a,
            "fg_ari_change": a - base["ari"],
        }


@dataclass
class _Batch:
    """One evaluated batch and its baseline decode, for scoring keep rules against it."""

    model: nn.Module
    images: Tensor
    gt_mask: Tensor | None
    repeats: int
    base_dec: int = 0  # decoder FLOPs of the baseline
    base_time: float = 0.0  # its decoder seconds
    base_mse: Tensor | None = None  # (b,) its per-image MSE
    fg: Tensor | None = None  # (b,) images with foreground
    scores: Tensor | None = None  # (b,) its per-image FG-ARI

    def baseline(self, slots: Tensor, keep: Tensor | None, attn_masks: Tensor) -> None:
        from probslot.metrics.reconstruction import mse as mse_per_image
        from probslot.metrics.segmentation import fg_ari

        out, self.base_dec = count_flops(self.model.decode, slots, keep=keep)
        self.base_time = _time_decode(self.model, slots, keep, self.repeats)
        self.base_mse = mse_per_image(out.recon, self.images).cpu()
        if self.gt_mask is not None:
            self.fg = (self.gt_mask > 0).flatten(1).any(1)  # images with foreground
            self.scores = fg_ari(_labels(out, attn_masks, None).cpu(), self.gt_mask)

    def base_ari(self) -> float:
        return 0.0 if self.fg is None else float(self.scores[self.fg].sum())

    def rule(
        self, keep: Tensor, slots: Tensor, attn_masks: Tensor, same: bool
    ) -> tuple[float, float, float, float]:
        """(decoder FLOPs, seconds, summed MSE, summed FG-ARI) of decoding only the `keep`
        slots; `same`: `slots` are the baseline's, so keeping all of them is the baseline."""
        from probslot.metrics.reconstruction import mse as mse_per_image
        from probslot.metrics.segmentation import fg_ari

        assert self.base_mse is not None
        if bool(keep.all()) and same:  # nothing pruned: identical to no pruning
            return self.base_dec, self.base_time, float(self.base_mse.sum()), self.base_ari()
        keep_arg = None if bool(keep.all()) else keep
        out, flops = count_flops(self.model.decode, slots, keep=keep_arg)
        t = _time_decode(self.model, slots, keep_arg, self.repeats)
        mse = float(mse_per_image(out.recon, self.images).cpu().sum())
        ari = 0.0
        if self.gt_mask is not None and self.fg is not None:
            s = fg_ari(_labels(out, attn_masks, keep_arg).cpu(), self.gt_mask)
            ari = float(s[self.fg].sum())
        return flops, t, mse, ari


def _encode(
    model: nn.Module, images: Tensor, args: dict[str, Any], seed: int | None
) -> tuple[Any, int]:
    """(model.encode(images, grouping_args=args), its FLOPs); `seed` None: the model's fixed
    draw of the initial slots, else one random draw after ``torch.manual_seed(seed)`` (on a
    forked random state, so the caller's is left as it was)."""
    if seed is None:
        return count_flops(model.encode, images, grouping_args=args)
    device = images.device
    args = {**args, "draw": "random"}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return count_flops(model.encode, images, grouping_args=args)


def _gate_keep(model: nn.Module, post: Any) -> Tensor:
    """(b, k) bool: the slots a keep gate keeps, among the grouping's own survivors."""
    keep = post.gates > 0
    survivors = model.em_survivors(post)
    return keep if survivors is None else keep & survivors


def _gate_result(
    tally: _Tally, keep_prob_sum: float, seen: int, ari_count: int, base: dict[str, float], k: int
) -> KeepGateResult:
    return KeepGateResult(
        **tally.figures(seen, ari_count, base),
        mean_keep_prob=keep_prob_sum / (seen * k),
        num_images=seen,
        baseline_mse=base["mse"],
        baseline_fg_ari=base["ari"],
    )


def _check_common(
    max_images: int | None, object_count: ObjectCount, timing_repeats: int, seed: int | None
) -> torch.Generator | None:
    if seed is not None:
        check_int("seed", seed, low=0)
    if max_images is not None:
        check_int("max_images", max_images, low=1)
    check_choice("object_count", object_count, ("visible", "placed"))
    check_int("timing_repeats", timing_repeats, low=1)
    return torch.Generator().manual_seed(seed) if seed is not None else None


def _batches(
    loader: Iterable[Mapping[str, Tensor]],
    object_count: ObjectCount,
    max_images: int | None,
    rng: torch.Generator | None,
    device: torch.device,
    progress: bool,
    what: str,
) -> Iterator[tuple[Tensor, Tensor, Tensor | None, int | None]]:
    """(images on `device`, objects (b,), gt mask or None, the batch's seed or None) per batch,
    up to `max_images` images. With `progress`, a line every 10 batches with the time left (the
    first one after the first batch, so a long analysis says how long it takes at once)."""
    seen = 0
    dataset = getattr(loader, "dataset", None)
    total = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
    if max_images is not None:
        total = max_images if total is None else min(total, max_images)
    start = time.perf_counter()
    for step, batch in enumerate(loader):
        images, objects, gt_mask = _batch_fields(batch, object_count)
        if max_images is not None:
            left = max_images - seen
            images, objects = images[:left], objects[:left]
            gt_mask = gt_mask[:left] if gt_mask is not None else None
        if images.shape[0] == 0:
            break
        # seeded: one random draw of the initial slots per batch, the same for every rule;
        # unseeded: the model's fixed draw (eval mode), the same for every batch and rule
        seed_b = None if rng is None else int(torch.randint(0, 2**62, (), generator=rng))
        yield images.to(device), objects, gt_mask, seed_b
        seen += images.shape[0]
        if progress and step % 10 == 0:
            line = f"{what}: {seen:,} images"
            if total:
                left = (time.perf_counter() - start) / seen * (total - seen)
                line = f"{what}: {seen:,} of {total:,} images, about {format_duration(left)} left"
            print(line, flush=True)
        if max_images is not None and seen >= max_images:
            break


@torch.inference_mode()
def prune_analysis(
    model: nn.Module,
    loader: Iterable[Mapping[str, Tensor]],
    taus: Sequence[float] = DEFAULT_TAUS,
    max_images: int | None = None,
    object_count: ObjectCount = "visible",
    timing_repeats: int = 3,
    progress: bool = False,
    in_em: bool | None = None,
    merge_dist: float | None = None,
    prune_start: int | None = None,
    seed: int | None = None,
) -> PruningReport:
    """Measure ARD pruning (paper Eq. 7) of a PSA `model` on held-out `loader` for each τ.

    Threshold mode (``in_em=False``, the paper): each batch is encoded once; the slots are
    decoded once with all K slots (the baseline) and once per τ with
    ``keep = relevant(π, τ)`` (`probslot.relevance`), so only the decoder's work changes.

    In-EM mode (``in_em=True``): τ is the grouping's ``prune_tau`` — slots with π < τ are dropped
    after every EM iteration and their tokens go to the surviving slots (`ProbabilisticSlotAttention`)
    — and only the surviving slots are decoded; a model that merges slots (``merge_dist > 0``)
    keeps merging at every τ. The baseline is the same weights with ``prune_tau = 0`` and no
    merging (plain EM, all K slots decoded). Each τ re-runs the encoder with the same
    random slot initialisation as the baseline. The default (None) picks in-EM mode for models
    trained with ``prune_tau > 0`` (their unpruned slots are not trained to be decoded).

    A model with a learned keep gate (`probslot.nn.KeepGate` around its PSA, AdaSlot) gets one
    more entry, `PruningReport.keep_gate`: the gate's own rule (decode the slots whose
    deterministic gate is on, among the slots of the model's own forward pass) against the same
    baseline, counted like the τ rows. The τ rows ignore the gate (they threshold π).

    Args:
        model: a `SlotAutoencoder` whose grouping returns a `SlotPosterior` (PSA, possibly
            inside a `KeepGate`).
        loader: dict batches with ``image`` (b, 3, H, W) in [0, 1], ``num_objects`` (b,), and
            optionally ``mask`` (b, H, W) (FG-ARI) and ``visibility`` (b, max_objects).
        taus: thresholds in [0, 1), distinct.
        max_images: stop after this many images (None = the whole loader).
        object_count: ``"visible"`` counts objects that own at least one pixel (needs
            ``visibility``; falls back to ``num_objects``), ``"placed"`` uses ``num_objects``.
        timing_repeats: decoder calls timed per batch and τ; the fastest counts.
        progress: print one line per 10 batches.
        in_em: apply τ inside EM (True), threshold the final π (False), or None = in-EM exactly
            when the model's grouping has ``prune_tau > 0`` or ``merge_dist > 0``.
        merge_dist: merge slots inside EM at this distance for every τ (the grouping's
            ``merge_dist``, see `ProbabilisticSlotAttention`), whatever the model was trained
            with; None = the model's own setting. Merging happens inside EM, so it needs in-EM
            mode (None picks it).
        prune_start: in-EM mode only: the first EM iteration after which τ applies, for every
            τ (the grouping's ``prune_start``); None = the model's own setting. Later starts
            let every slot settle on its tokens before its weight is judged (a small object's
            slot can hold π < τ in the first iterations).
        seed: None (default): every encode uses the model's fixed draw of the initial slots
            (eval mode, `probslot.nn.layers.slot_noise`), so the report is deterministic; an
            int: one random draw per batch from a generator of its own seeded by it (the same
            for every τ), to see how much the figures move with PSA's random initial slots.

    Returns:
        a `PruningReport`. FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode`
        (matmuls and convolutions) on every batch; wall time is the best of `timing_repeats`
        decoder calls per batch, interleaved over τ so that machine load affects all alike.
    """
    from probslot.nn import (
        ARDPrune,
        MomentMerge,
        ProbabilisticSlotAttention,
        keep_gate_of,
        unwrap_grouping,
        with_settings,
    )

    grouping = unwrap_grouping(getattr(model, "grouping", None))
    if not isinstance(grouping, ProbabilisticSlotAttention):
        gate = " (keep_gate_result measures its keep gate)" if keep_gate_of(model) else ""
        raise TypeError(
            "ARD pruning needs a PSA model (a SlotAutoencoder whose grouping is "
            "ProbabilisticSlotAttention, which gives slot weights pi); got "
            f"{type(model).__name__} with grouping {type(grouping).__name__}{gate}. Slot "
            "attention (SA) and the AE baseline have no pi to threshold: train a PSA preset "
            "(PSA, PSA-Proj, PSA-NoA)"
        )
    taus = _check_taus(taus)
    ard, merging = grouping.extension(ARDPrune), grouping.extension(MomentMerge)
    trained_tau = ard.tau if ard is not None else 0.0
    trained_merge = merging.dist if merging is not None else 0.0
    if merge_dist is not None:
        merge_dist = check_float("merge_dist", merge_dist, low=0.0, hint="0 = no merging")
        if in_em is False and merge_dist > 0:
            raise ValueError(
                "merge_dist merges slots inside EM, so it needs in-EM mode; got in_em=False. "
                "Pass in_em=True or leave it None"
            )
        trained_merge = merge_dist
    if in_em is None:
        in_em = trained_tau > 0 or trained_merge > 0
    if not isinstance(in_em, bool):
        raise TypeError(f"in_em must be True, False or None; got {in_em!r}")
    if prune_start is not None:
        prune_start = check_iteration("prune_start", prune_start, grouping.iters)
        if not in_em:
            raise ValueError(
                "prune_start applies tau inside EM, so it needs in-EM mode; got in_em=False. "
                "Pass in_em=True or leave it None"
            )
    start = (ard.start if ard is not None else 1) if prune_start is None else prune_start
    rng = _check_common(max_images, object_count, timing_repeats, seed)
    gate = keep_gate_of(model)

    was_training = model.training
    model.eval()
    device = next(iter(model.parameters())).device
    seen = 0
    tallies = [_Tally() for _ in taus]
    gate_tally, keep_prob_sum = _Tally(), 0.0
    ari_count = 0
    base = {"flops": 0.0, "enc_flops": 0.0, "time": 0.0, "mse": 0.0, "ari": 0.0}
    all_objects: list[Tensor] = []
    all_pi: list[Tensor] = []
    try:
        for images, objects, gt_mask, seed_b in _batches(
            loader, object_count, max_images, rng, device, progress, "prune analysis"
        ):
            b = images.shape[0]

            def encode(
                tau: float, images: Tensor = images, seed: int | None = seed_b, plain: bool = False
            ) -> Any:
                # the EM parts of this encode; the in-EM baseline is plain EM: no merging either
                parts = with_settings(
                    grouping.extensions,
                    prune_tau=tau,
                    prune_start=start,
                    merge_dist=0.0 if plain else trained_merge,
                )
                return (*_encode(model, images, {"extensions": parts}, seed), parts)

            # encoder + grouping once, then the unpruned decode once: its output is the baseline
            post, enc_flops, base_parts = encode(0.0 if in_em else trained_tau, plain=in_em)
            assert isinstance(post, SlotPosterior)
            slots = post.slots
            # in-EM mode: plain EM, all K slots decoded; threshold mode: a model pruned inside
            # EM decodes only its surviving slots (its own forward pass)
            base_keep = None if in_em else model.em_survivors(post, base_parts)
            if base_keep is not None and bool(base_keep.all()):
                base_keep = None
            attn_masks = model.attention_masks(post.attn, model.token_grid)
            batch = _Batch(model, images, gt_mask, timing_repeats)
            batch.baseline(slots, base_keep, attn_masks)
            base["flops"] += batch.base_dec
            base["enc_flops"] += enc_flops
            base["time"] += batch.base_time * b
            base["mse"] += float(batch.base_mse.sum())
            if batch.fg is not None:
                ari_count += int(batch.fg.sum())
                base["ari"] += batch.base_ari()
            all_pi.append(post.pi.detach().float().cpu())
            all_objects.append(objects.detach().cpu().double())
            for tally, tau in zip(tallies, taus):
                post_t, slots_t, attn_t = post, slots, attn_masks
                if in_em and (tau > 0 or trained_merge > 0):
                    post_t = encode(tau)[0]
                    slots_t = post_t.slots
                    attn_t = model.attention_masks(post_t.attn, model.token_grid)
                    # slots pruned or merged away inside EM have π = 0: not relevant at τ = 0
                    keep = relevant(post_t.pi, 0.0)
                else:
                    keep = relevant(post.pi, tau)
                tally.add(keep, objects, batch.rule(keep, slots_t, attn_t, post_t is post))
            if gate is not None:
                # the gate's rule on the model's own forward pass (its trained EM settings)
                post_g = _encode(model, images, {}, seed_b)[0] if in_em else post
                attn_g = attn_masks
                if post_g is not post:
                    attn_g = model.attention_masks(post_g.attn, model.token_grid)
                keep = _gate_keep(model, post_g)
                gate_tally.add(
                    keep, objects, batch.rule(keep, post_g.slots, attn_g, post_g is post)
                )
                keep_prob_sum += float(post_g.keep_prob.double().sum())
            seen += b
    finally:
        if was_training:
            model.train()
    if seen == 0:
        raise ValueError("the loader yielded no images; prune_analysis needs at least one batch")

    means = {
        "flops": base["flops"] / seen,
        "model_flops": (base["enc_flops"] + base["flops"]) / seen,
        "time": base["time"] / seen,
        "mse": base["mse"] / seen,
        "ari": base["ari"] / ari_count if ari_count else math.nan,
    }
    results = tuple(
        TauResult(tau=tau, **tally.figures(seen, ari_count, means))
        for tally, tau in zip(tallies, taus)
    )
    counts = torch.cat(all_objects)  # (m,) true objects per image
    pis = torch.cat(all_pi)  # (m, k)
    qs = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
    qv = torch.quantile(pis.flatten().double(), torch.tensor(qs, dtype=torch.float64))
    bins = (0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
    hist = torch.histogram(pis.flatten().double(), bins=torch.tensor(bins, dtype=torch.float64))
    k = int(pis.shape[1])
    return PruningReport(
        results=results,
        num_images=seen,
        num_slots=k,
        additive=bool(getattr(model, "additive", False)),
        object_count=object_count,
        mean_objects=float(counts.mean()),
        baseline_mse=means["mse"],
        baseline_fg_ari=means["ari"],
        decoder_flops=means["flops"],
        model_flops=means["model_flops"],
        decoder_seconds=means["time"],
        pi_sorted_mean=tuple(pis.sort(dim=1, descending=True).values.mean(0).tolist()),
        pi_quantiles={f"{q:g}": float(v) for q, v in zip(qs, qv)},
        pi_histogram=tuple(int(c) for c in hist.hist.tolist()),
        pi_bins=bins,
        in_em=in_em,
        constant_mae=_constant_mae(counts),
        merge_dist=trained_merge if in_em else 0.0,
        prune_start=start if in_em else 1,
        seed=seed,
        keep_gate=None
        if gate is None
        else _gate_result(gate_tally, keep_prob_sum, seen, ari_count, means, k),
    )


def _constant_mae(counts: Tensor) -> float:
    """The slot-count MAE of always answering the median true count (the best constant answer
    under absolute error)."""
    return float((counts - counts.median()).abs().mean())


@torch.inference_mode()
def keep_gate_result(
    model: nn.Module,
    loader: Iterable[Mapping[str, Tensor]],
    max_images: int | None = None,
    object_count: ObjectCount = "visible",
    timing_repeats: int = 3,
    progress: bool = False,
    seed: int | None = None,
) -> KeepGateResult:
    """The learned keep gate of `model` (`probslot.nn.KeepGate`, AdaSlot) on held-out `loader`.

    For any grouping inside the gate (PSA, SA, the AE baseline). Each batch is encoded once
    (the model's own forward pass, in eval mode); the baseline decodes every slot (for PSA
    pruned inside EM: every surviving slot), the gate's rule only the slots whose deterministic
    gate keep_prob > 0.5 is on. Slot counts, FLOPs, time, MSE and FG-ARI are measured as in
    `prune_analysis` (whose report carries the same entry for a gated PSA model, against its
    own baseline).

    Args:
        model: a `SlotAutoencoder` whose grouping is a `KeepGate` (``ModelConfig.keep_gate``).
        loader: dict batches with ``image``, ``num_objects`` and optionally ``mask`` and
            ``visibility``, as in `prune_analysis`.
        max_images: stop after this many images (None = the whole loader).
        object_count: ``"visible"`` or ``"placed"`` objects, as in `prune_analysis`.
        timing_repeats: decoder calls timed per batch and rule; the fastest counts.
        progress: print one line per 10 batches.
        seed: None: the model's fixed draw of the initial slots; an int: seeded random draws,
            one per batch, as in `prune_analysis`.

    Returns:
        a `KeepGateResult`.
    """
    from probslot.nn import keep_gate_of

    if keep_gate_of(model) is None:
        grouping = getattr(model, "grouping", None)
        raise TypeError(
            "keep_gate_result needs a model with a learned keep gate (a SlotAutoencoder whose "
            f"grouping is a KeepGate: set ModelConfig.keep_gate); got {type(model).__name__} "
            f"with grouping {type(grouping).__name__}"
        )
    rng = _check_common(max_images, object_count, timing_repeats, seed)
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters())).device
    seen, ari_count, k = 0, 0, 0
    tally, keep_prob_sum = _Tally(), 0.0
    base = {"flops": 0.0, "enc_flops": 0.0, "time": 0.0, "mse": 0.0, "ari": 0.0}
    try:
        for images, objects, gt_mask, seed_b in _batches(
            loader, object_count, max_images, rng, device, progress, "keep gate"
        ):
            b = images.shape[0]
            post, enc_flops = _encode(model, images, {}, seed_b)
            k = post.slots.shape[1]
            base_keep = model.em_survivors(post)
            if base_keep is not None and bool(base_keep.all()):
                base_keep = None
            attn_masks = model.attention_masks(post.attn, model.token_grid)
            batch = _Batch(model, images, gt_mask, timing_repeats)
            batch.baseline(post.slots, base_keep, attn_masks)
            base["flops"] += batch.base_dec
            base["enc_flops"] += enc_flops
            base["time"] += batch.base_time * b
            base["mse"] += float(batch.base_mse.sum())
            if batch.fg is not None:
                ari_count += int(batch.fg.sum())
                base["ari"] += batch.base_ari()
            keep = _gate_keep(model, post)
            tally.add(keep, objects, batch.rule(keep, post.slots, attn_masks, True))
            keep_prob_sum += float(post.keep_prob.double().sum())
            seen += b
    finally:
        if was_training:
            model.train()
    if seen == 0:
        raise ValueError("the loader yielded no images; keep_gate_result needs at least one batch")
    means = {
        "flops": base["flops"] / seen,
        "model_flops": (base["enc_flops"] + base["flops"]) / seen,
        "time": base["time"] / seen,
        "mse": base["mse"] / seen,
        "ari": base["ari"] / ari_count if ari_count else math.nan,
    }
    return _gate_result(tally, keep_prob_sum, seen, ari_count, means, k)


def plot_sweep(report: PruningReport, path: Any, tau: float | None = None) -> Any:
    """Write a PNG of the τ sweep and return its (closed) matplotlib Figure.

    Four panels, each with its target drawn (the targets of `probslot prune`, at the headline τ:
    slot-count MAE ≤ 0.5, decoder FLOPs saved ≥ 40 %, MSE change ≤ +5 %) and the τ values where
    it is met shaded: slot counts, decoder compute saved, ΔMSE %, ΔFG-ARI. The ΔMSE axis is
    clipped at 4× its target so that a large loss at big τ does not squash the rest; clipped
    points sit on the top edge with their value written next to them. `tau` (the headline τ)
    is marked in every panel. A report with a learned keep gate (`PruningReport.keep_gate`)
    draws the gate's figures as a horizontal purple line in each panel (the gate has no τ).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rs = report.results
    taus = [r.tau for r in rs]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.2))
    (ax1, ax2), (ax3, ax4) = axes

    # each τ owns the span half-way to its neighbours: shaded where the panel's target holds
    mids = [(a + b) / 2 for a, b in zip(taus, taus[1:], strict=False)]
    pad = (taus[-1] - taus[0]) / 40 or 0.005
    spans = list(zip([taus[0] - pad, *mids], [*mids, taus[-1] + pad], strict=True))

    def targets(ax: Any, ok: Sequence[bool] | None) -> None:
        for (lo, hi), good in zip(spans, ok or [False] * len(spans), strict=True):
            if good:
                ax.axvspan(lo, hi, color="tab:green", alpha=0.12, lw=0)
        if tau is not None:
            ax.axvline(tau, color="black", ls="-.", lw=0.8, label=f"headline τ = {tau:g}")
        ax.set_xlabel("relevance threshold τ (keep slots with π > τ)")
        ax.grid(alpha=0.3)

    gate = report.keep_gate

    def gate_line(ax: Any, value: float, text: str) -> None:
        if gate is not None and math.isfinite(value):
            ax.axhline(value, color="tab:purple", ls=(0, (6, 2)), lw=1.2, label=text)

    mae = [r.mae(report.headline) for r in rs]
    ax1.plot(taus, [r.mean_kept for r in rs], "o-", label="kept slots (mean)")
    ax1.plot(taus, mae, "s-", label=f"slot-count MAE ({report.headline.replace('_', ' ')})")
    ax1.plot(taus, [r.mae_objects_only for r in rs], "^--", alpha=0.6, label="MAE (objects only)")
    ax1.axhline(report.mean_objects + 1, color="grey", ls=":", label="objects + background")
    ax1.axhline(0.5, color="tab:red", ls="--", lw=1, label="target: MAE ≤ 0.5")
    if gate is not None:
        gate_line(
            ax1, gate.mae(report.headline), f"{gate.label}: MAE {gate.mae(report.headline):.2f}"
        )
    targets(ax1, [m <= 0.5 for m in mae])
    ax1.set_ylabel("slots per image")
    ax1.set_title("slot count")
    ax1.legend(fontsize=7)

    ax2.plot(taus, [100 * r.decoder_flops_saved for r in rs], "o-", label="decoder FLOPs saved")
    ax2.plot(taus, [100 * r.decoder_time_saved for r in rs], "s--", label="decoder time saved")
    ax2.axhline(40, color="tab:red", ls="--", lw=1, label="target: FLOPs saved ≥ 40 %")
    if gate is not None:
        saved = 100 * gate.decoder_flops_saved
        gate_line(ax2, saved, f"{gate.label}: {saved:.0f} % saved")
    targets(ax2, [r.decoder_flops_saved >= 0.40 for r in rs])
    ax2.set_ylabel("saved (%)")
    ax2.set_ylim(min(-5.0, ax2.get_ylim()[0]), max(50.0, ax2.get_ylim()[1]))
    ax2.set_title("decoder compute saved")
    ax2.legend(fontsize=7)

    mse = [r.mse_change_pct for r in rs]
    top = 4 * 5.0
    shown = [min(v, top) for v in mse]
    ax3.plot(taus, shown, "^-", color="tab:green", label="ΔMSE vs no pruning")
    for t, v in zip(taus, mse, strict=True):
        if v > top:
            ax3.plot([t], [top], marker="^", color="tab:red", ms=9)
            ax3.annotate(
                f"{v:+.0f} %", (t, top), textcoords="offset points", xytext=(0, 7),
                ha="center", fontsize=8, color="tab:red",
            )  # fmt: skip
    ax3.axhline(5, color="tab:red", ls="--", lw=1, label="target: ΔMSE ≤ +5 %")
    ax3.axhline(0, color="grey", lw=0.5)
    if gate is not None:
        change = gate.mse_change_pct
        gate_line(ax3, min(change, top), f"{gate.label}: ΔMSE {change:+.1f} %")
    targets(ax3, [v <= 5 for v in mse])
    lowest = min([*mse, *([gate.mse_change_pct] if gate is not None else [])])
    ax3.set_ylim(min(-2.0, lowest - 1), top * 1.2)
    ax3.set_ylabel("MSE change (%)" + (f", clipped at +{top:.0f} %" if max(mse) > top else ""))
    ax3.set_title(f"reconstruction (MSE without pruning {report.baseline_mse:.4f})")
    ax3.legend(fontsize=7, loc="upper left")

    ax4.plot(taus, [100 * r.fg_ari_change for r in rs], "v-", color="tab:purple")
    ax4.axhline(0, color="grey", lw=0.5)
    if gate is not None:
        change = 100 * gate.fg_ari_change
        gate_line(ax4, change, f"{gate.label}: {change:+.1f}")
        ax4.legend(fontsize=7)
    targets(ax4, None)
    ax4.set_ylabel("FG-ARI change (points ×100)")
    ax4.set_title(f"segmentation (FG-ARI without pruning {report.baseline_fg_ari:.3f}; no target)")
    mode = "inside EM" if report.in_em else "on the final π"
    every = [
        r.tau
        for r, m in zip(rs, mae, strict=True)
        if m <= 0.5 and r.decoder_flops_saved >= 0.40 and r.mse_change_pct <= 5
    ]
    verdict = (
        "all three targets met at τ = " + ", ".join(f"{t:g}" for t in every)
        if every
        else "no τ meets all three targets"
    )
    fig.suptitle(
        f"ARD τ sweep: {report.num_images} images, K = {report.num_slots}, τ applied {mode}\n"
        f"green: τ where the panel's target holds; {verdict}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return fig
