"""Typed results of `evaluate_run` (``RUN/eval.json``) and `compare_runs` (``OUT/compare.json``).

Both functions return a frozen dataclass; the CLI prints its `summary_lines` and the file is its
`to_dict` (`save`). ``to_dict`` keeps the JSON layout that reports (`probslot.reports`) and study
results (``result.json``) read as plain dicts: the same keys, nesting and order, optional sections
absent rather than null. ``from_dict`` / ``load`` read a file back (``from_dict(r.to_dict()) == r``)
and accept files of older versions that lack newer keys (they read as None). Figures that were not
finite are None, as in the files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

from probslot.evaluation.options import CompareConfig, EvalConfig
from probslot.io import write_metrics

__all__ = [
    "Comparison",
    "CompositionalContrast",
    "DrawSpread",
    "DrawStats",
    "EvalResult",
    "Generation",
    "Identifiability",
    "MaskScores",
    "Matrix",
    "ObjectDiscovery",
    "ObjectScores",
    "PairStats",
    "PosteriorSamples",
    "Reconstruction",
    "SlotCounts",
    "ThresholdCounts",
]

#: a runs × runs matrix, row i the target run and column j the predictor (None: not computed)
Matrix = tuple[tuple[float | None, ...], ...]


class _SavedResult:
    """``load`` and ``save`` of a result kept as one JSON file (`FILE`, in a run or output
    directory); `MISSING` says how to make it."""

    FILE: ClassVar[str]
    MISSING: ClassVar[str]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Read the file (or the directory holding it)."""
        p = Path(path)
        if p.is_dir():
            p = p / cls.FILE
        if not p.is_file():
            raise FileNotFoundError(f"no {cls.FILE} at {str(p)!r}; {cls.MISSING}")
        return cls.from_dict(json.loads(p.read_text()))  # type: ignore[attr-defined]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_dict` as indented JSON with sorted keys (atomically); returns the path."""
        return write_metrics(path, self.to_dict())  # type: ignore[attr-defined]


def _config_dict(config: EvalConfig | CompareConfig) -> dict[str, Any]:
    """The options as JSON keeps them (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def _require(data: Mapping[str, Any], keys: Sequence[str], kind: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(
            f"expected the layout of {kind}: the keys {missing} are missing (got the keys "
            f"{sorted(data)}); pass a {kind} written by probslot"
        )


# =========================================================================== eval.json
@dataclass(frozen=True)
class MaskScores:
    """Segmentation of one mask source against the ground-truth label maps (pixel models).

    Each figure is the mean over the evaluated images (`probslot.metrics.ARIMetric`,
    `MBOMetric`), on the slot masks' argmax labels.

    Attributes:
        ari: adjusted Rand index over all pixels, background included; in [-1, 1].
        fg_ari: ARI over the ground-truth foreground pixels (FG-ARI); images without foreground
            are skipped.
        mbo: mean best overlap: each ground-truth object's best IoU with a predicted segment,
            averaged over objects; in [0, 1].
    """

    ari: float | None
    fg_ari: float | None
    mbo: float | None


@dataclass(frozen=True)
class Reconstruction:
    """Reconstruction error of the clamped reconstructions (pixel values in [0, 1]).

    Attributes:
        mse: squared error per pixel and channel, mean per image, then over images.
        fg_mse: the same over the ground-truth foreground pixels only (images without foreground
            are skipped); None when the dataset has no masks.
    """

    mse: float | None
    fg_mse: float | None


@dataclass(frozen=True)
class Identifiability:
    """Slots against the ground-truth object latents (paper §5), objects matched to slots by
    mask IoU and pooled over the images (see `probslot.evaluation.evaluate`).

    Attributes:
        num_objects: matched (object, slot) pairs pooled over the images.
        matching: how objects were paired with slots (``"mask-iou-hungarian"``).
        mask_source: the masks the matching used (decoder alpha masks, else attention).
        smcc: slot mean correlation coefficient (paper Eq. 12) of an affine map slot → latents,
            on the held-out 20 % of the objects; in [-1, 1].
        smcc_chance: the same pipeline's SMCC on a null pair (slots shuffled across objects).
        smcc_adjusted: chance-adjusted SMCC, (smcc − chance) / (1 − chance); about 0 at chance.
        per_latent_corr: held-out Pearson correlation per latent (``x``, ``y``, ``scale``, ...;
            ``z<j>`` for unnamed latents).
        r2_affine: held-out R² of the affine map (same matching and split as the SMCC); ≤ 1.
        r2_krr: held-out R² of an RBF kernel-ridge map (the authors' code).
        sis: slot identifiability score (Brady et al. 2023) on pairs of matched objects of one
            image; None when fewer pairs than the fit needs, or in files that predate it.
        sis_pairs: object pairs SIS was computed on (None in files that predate it).
    """

    num_objects: int
    matching: str
    mask_source: Literal["decoder", "attention"]
    smcc: float | None
    smcc_chance: float | None
    smcc_adjusted: float | None
    per_latent_corr: dict[str, float | None]
    r2_affine: float | None
    r2_krr: float | None
    sis: float | None = None
    sis_pairs: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Identifiability:
        """From eval.json's ``identifiability_gt`` (keys it lacks read as None)."""
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class CompositionalContrast:
    """Compositional contrast of the decoder (paper Def. 1,
    `probslot.metrics.compositional_contrast`) at the slots of the first images: Σ over output
    values of the products of the gradient norms of every two slots (0 iff no output value
    depends on two slots).

    Attributes:
        mean: mean over the images (summed over the 3·H·W output values).
        std: standard deviation over the images (0 for one image).
        mean_per_pixel: ``mean`` / (3·H·W), comparable across image sizes.
        num_images: images it was computed on (`EvalConfig.contrast_images`).
    """

    mean: float | None
    std: float | None
    mean_per_pixel: float | None
    num_images: int


@dataclass(frozen=True)
class ThresholdCounts:
    """Slot counts at one relevance threshold τ on π (`probslot.relevance.relevant`, the rule
    of ``probslot prune``).

    Attributes:
        mean_active: mean number of relevant slots per image.
        mae_vs_objects: mean |relevant slots − objects| per image.
        mae_vs_objects_plus_background: mean |relevant slots − (objects + 1)|: a background slot
            counted as one more object.
    """

    mean_active: float | None
    mae_vs_objects: float | None
    mae_vs_objects_plus_background: float | None


@dataclass(frozen=True)
class SlotCounts:
    """How many slots PSA's mixing weights π keep (paper Eq. 7 / App. H).

    Attributes:
        mean_objects: mean number of objects placed per image (``num_objects``).
        pi_sorted_mean: (k,) mean over images of π sorted in decreasing order.
        thresholds: {τ: counts at τ}, written as ``"tau=<τ>"`` keys in eval.json.
    """

    mean_objects: float | None
    pi_sorted_mean: tuple[float | None, ...]
    thresholds: dict[float, ThresholdCounts]

    def to_dict(self) -> dict[str, Any]:
        """eval.json's ``slot_counts``: thresholds keyed ``"tau=<τ>"``."""
        return {
            "mean_objects": self.mean_objects,
            "pi_sorted_mean": list(self.pi_sorted_mean),
            "thresholds": {f"tau={tau}": asdict(c) for tau, c in self.thresholds.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlotCounts:
        """From eval.json's ``slot_counts``."""
        return cls(
            mean_objects=data.get("mean_objects"),
            pi_sorted_mean=tuple(data.get("pi_sorted_mean", ())),
            thresholds={
                float(key.removeprefix("tau=")): ThresholdCounts(**value)
                for key, value in data.get("thresholds", {}).items()
            },
        )


@dataclass(frozen=True)
class PosteriorSamples:
    """Scenes drawn from the run's aggregate posterior and decoded (panels, sample FID).

    Attributes:
        file: the ``posterior.safetensors`` they were drawn from.
        samples: scenes drawn (`EvalConfig.posterior_samples`).
    """

    file: str
    samples: int


@dataclass(frozen=True)
class Generation:
    """FID / KID in the feature space of the supplied extractor (Inception by default) against
    the evaluated real images.

    Attributes:
        rfid, rkid: FID and KID (mean over subsets) of the reconstructions.
        cfid, ckid: FID and KID of the scenes decoded from aggregate-posterior samples; None
            without a posterior (the keys are then absent from eval.json).
    """

    rfid: float | None
    rkid: float | None
    cfid: float | None = None
    ckid: float | None = None


@dataclass(frozen=True)
class DrawStats:
    """One figure over several draws of the initial slots.

    Attributes:
        mean, std: over the draws.
        values: one per draw, in the order of `DrawSpread.draws`.
    """

    mean: float | None
    std: float | None
    values: tuple[float, ...]


@dataclass(frozen=True)
class DrawSpread:
    """How much PSA's random initial slots move the headline figures (`EvalConfig.draws`).

    Attributes:
        draws: the draws evaluated (``draw``, ``draw + 1``, ...); the rest of the result is the
            first one's.
        stats: {figure: spread} for ``mse``, ``fg_ari_<source>``, ``mbo_<source>`` and
            ``smcc``; a figure not computed for every draw is left out.
    """

    draws: tuple[int, ...]
    stats: dict[str, DrawStats]

    def to_dict(self) -> dict[str, Any]:
        """eval.json's ``draws``: the draws, then one entry per figure."""
        out: dict[str, Any] = {"draws": list(self.draws)}
        for key, s in self.stats.items():
            out[key] = {"mean": s.mean, "std": s.std, "values": list(s.values)}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DrawSpread:
        """From eval.json's ``draws``."""
        return cls(
            draws=tuple(data["draws"]),
            stats={
                key: DrawStats(v["mean"], v["std"], tuple(v["values"]))
                for key, v in data.items()
                if key != "draws"
            },
        )


@dataclass(frozen=True)
class ObjectScores:
    """Object discovery of one mask source on real images (`probslot.metrics.object_metrics`,
    the paper's Table 3), each the mean over the images where it is defined.

    Attributes:
        mbo_i: mean best overlap against the instance masks; in [0, 1].
        mbo_c: the same against the class masks (None without class maps).
        fg_ari: FG-ARI against the instance masks, ignore regions left out.
        corloc: share of images whose best box hits an object (IoU ≥ 0.5); in [0, 1].
    """

    mbo_i: float | None
    mbo_c: float | None
    fg_ari: float | None
    corloc: float | None


@dataclass(frozen=True)
class ObjectDiscovery:
    """What `probslot.evaluation.objects.evaluate_objects` reports for a feature-reconstruction
    model (``target == "features"``, DINOSAUR-style).

    Attributes:
        segmentation: {mask source: scores} for ``decoder`` (alpha or cross-attention masks)
            and ``attention`` (the grouping's), masks upsampled to the image.
        feature_mse: squared error per feature value of the reconstructed features, mean per
            image, then over images.
        scored_images: {metric: images where it is defined} (images without objects are
            skipped); ``mbo_c`` is present only with class maps.
    """

    segmentation: dict[str, ObjectScores]
    feature_mse: float | None
    scored_images: dict[str, int]

    def _scores(self, s: ObjectScores) -> dict[str, float | None]:
        out = asdict(s)
        if "mbo_c" not in self.scored_images:  # no class maps: not computed, not written
            del out["mbo_c"]
        return out


def _mask_scores(data: Mapping[str, Any]) -> MaskScores:
    return MaskScores(data.get("ari"), data.get("fg_ari"), data.get("mbo"))


@dataclass(frozen=True)
class EvalResult(_SavedResult):
    """Everything `evaluate_run` measured on one run and split: the content of ``RUN/eval.json``.

    Sections that do not apply are None (their key is absent from eval.json) and `notes` says
    why. A feature-reconstruction model (`target` ``"features"``) has `objects` and none of the
    pixel sections (`num_slots` … `config` are None / empty).

    Attributes:
        run: the run directory.
        split: the evaluated split (``train``, ``val`` or ``test``).
        num_images: images evaluated (the first ones of the split).
        notes: one line per metric that was skipped or qualified, with the reason and the fix.
        num_slots: k, slots per image.
        slot_dim: d, dimensions per slot.
        grouping: ``"psa"`` (probabilistic slot attention, has π) or ``"sa"``.
        decoder_additive: whether the decoder has per-slot alpha masks (``decoder`` masks).
        segmentation: {mask source: scores}, ``decoder`` (alpha masks, additive decoders) and
            ``attention``; empty when the dataset has no masks.
        reconstruction: pixel reconstruction error.
        identifiability: slots vs ground-truth latents (``identifiability_gt`` in eval.json).
        compositional_contrast: of the decoder, on the first images.
        slot_counts: from π (PSA only).
        posterior: aggregate-posterior samples decoded (when the run has a posterior).
        generation: FID / KID (when a feature extractor was supplied).
        draws: spread over draws of the initial slots (``EvalConfig.draws`` > 1).
        figures: {panel: PNG path relative to the run directory}.
        config: the options the evaluation ran with.
        objects: object discovery of a feature model.
    """

    FILE: ClassVar[str] = "eval.json"
    MISSING: ClassVar[str] = "run `probslot evaluate --run_dir RUN` first"

    run: str
    split: str
    num_images: int
    notes: tuple[str, ...] = ()
    num_slots: int | None = None
    slot_dim: int | None = None
    grouping: Literal["sa", "psa"] | None = None
    decoder_additive: bool | None = None
    segmentation: dict[str, MaskScores] = field(default_factory=dict)
    reconstruction: Reconstruction | None = None
    identifiability: Identifiability | None = None
    compositional_contrast: CompositionalContrast | None = None
    slot_counts: SlotCounts | None = None
    posterior: PosteriorSamples | None = None
    generation: Generation | None = None
    draws: DrawSpread | None = None
    figures: dict[str, str] = field(default_factory=dict)
    config: EvalConfig | None = None
    objects: ObjectDiscovery | None = None

    @property
    def target(self) -> Literal["pixels", "features"]:
        """What the model reconstructs: ``pixels``, or ``features`` (object discovery)."""
        return "features" if self.objects is not None else "pixels"

    # ------------------------------------------------------------------ eval.json
    def to_dict(self) -> dict[str, Any]:
        """The eval.json content: JSON types only (lists, not tuples), sections in file order."""
        if self.objects is not None:
            obj = self.objects
            return {
                "run": self.run,
                "split": self.split,
                "target": "features",
                "segmentation": {s: obj._scores(v) for s, v in obj.segmentation.items()},
                "reconstruction": {"feature_mse": obj.feature_mse},
                "images": self.num_images,
                "scored_images": dict(obj.scored_images),
                "notes": list(self.notes),
            }
        out: dict[str, Any] = {
            "run": self.run,
            "split": self.split,
            "num_images": self.num_images,
            "num_slots": self.num_slots,
            "slot_dim": self.slot_dim,
            "grouping": self.grouping,
            "decoder_additive": self.decoder_additive,
            "notes": list(self.notes),
            "segmentation": {s: asdict(v) for s, v in self.segmentation.items()},
        }
        if self.reconstruction is not None:
            out["reconstruction"] = asdict(self.reconstruction)
        if self.identifiability is not None:
            out["identifiability_gt"] = asdict(self.identifiability)
        if self.compositional_contrast is not None:
            out["compositional_contrast"] = asdict(self.compositional_contrast)
        if self.slot_counts is not None:
            out["slot_counts"] = self.slot_counts.to_dict()
        if self.posterior is not None:
            out["posterior"] = asdict(self.posterior)
        if self.generation is not None:
            gen = asdict(self.generation)
            if self.posterior is None:  # no samples were scored: cfid/ckid are not written
                del gen["cfid"], gen["ckid"]
            out["generation"] = gen
        if self.draws is not None:
            out["draws"] = self.draws.to_dict()
        out["figures"] = dict(self.figures)
        if self.config is not None:
            out["config"] = _config_dict(self.config)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        """The result an eval.json dict describes (missing optional sections read as None).

        Raises:
            ValueError: `data` lacks ``run``, ``split`` or the image count.
        """
        features = data.get("target") == "features"
        _require(data, ("run", "split", "images" if features else "num_images"), "eval.json")
        notes = tuple(data.get("notes", ()))
        if features:
            scored = dict(data.get("scored_images", {}))
            objects = ObjectDiscovery(
                segmentation={
                    source: ObjectScores(
                        v.get("mbo_i"), v.get("mbo_c"), v.get("fg_ari"), v.get("corloc")
                    )
                    for source, v in data.get("segmentation", {}).items()
                },
                feature_mse=data.get("reconstruction", {}).get("feature_mse"),
                scored_images=scored,
            )
            return cls(data["run"], data["split"], data["images"], notes, objects=objects)

        def section(key: str, build: Any) -> Any:
            return build(data[key]) if data.get(key) is not None else None

        return cls(
            run=data["run"],
            split=data["split"],
            num_images=data["num_images"],
            notes=notes,
            num_slots=data.get("num_slots"),
            slot_dim=data.get("slot_dim"),
            grouping=data.get("grouping"),
            decoder_additive=data.get("decoder_additive"),
            segmentation={s: _mask_scores(v) for s, v in data.get("segmentation", {}).items()},
            reconstruction=section(
                "reconstruction", lambda d: Reconstruction(d.get("mse"), d.get("fg_mse"))
            ),
            identifiability=section("identifiability_gt", Identifiability.from_dict),
            compositional_contrast=section(
                "compositional_contrast", lambda d: CompositionalContrast(**d)
            ),
            slot_counts=section("slot_counts", SlotCounts.from_dict),
            posterior=section("posterior", lambda d: PosteriorSamples(**d)),
            generation=section("generation", lambda d: Generation(**d)),
            draws=section("draws", DrawSpread.from_dict),
            figures=dict(data.get("figures", {})),
            config=section("config", EvalConfig.from_dict),
        )

    # ------------------------------------------------------------------ printing
    def summary_lines(self) -> list[str]:
        """The lines ``probslot evaluate`` prints: the segmentation figures per mask source, the
        reconstruction error, SMCC and R² against ground truth, the spread over draws."""
        lines = []
        if self.objects is not None:
            seg: Mapping[str, Mapping[str, Any]] = {
                s: self.objects._scores(v) for s, v in self.objects.segmentation.items()
            }
            rec: Mapping[str, Any] = {"feature_mse": self.objects.feature_mse}
        else:
            seg = {s: asdict(v) for s, v in self.segmentation.items()}
            rec = asdict(self.reconstruction) if self.reconstruction is not None else {}
        for source, vals in seg.items():
            figs = ", ".join(f"{k}={v:.4f}" for k, v in vals.items() if v is not None)
            lines.append(f"{source} masks: {figs}")
        figs = ", ".join(f"{k}={v:.5f}" for k, v in rec.items() if v is not None)
        if figs:
            lines.append(figs)
        ident = self.identifiability
        if ident is not None:
            shown = {"smcc": ident.smcc, "r2_affine": ident.r2_affine}
            figs = ", ".join(f"{k}={v:.4f}" for k, v in shown.items() if v is not None)
            lines.append(f"vs ground-truth latents: {figs}")
        if self.draws is not None:
            d = self.draws.draws
            figs = ", ".join(f"{k}={v.mean:.4f} ± {v.std:.4f}" for k, v in self.draws.stats.items())
            lines.append(f"over initial-slot draws {d[0]}-{d[-1]} (mean ± std): {figs}")
        return lines


# =========================================================================== compare.json
#: which pairs `Comparison.summary` is over (the ``pairs`` entry of compare.json)
PAIRS = "all unordered pairs i < j (the authors' code: consecutive pairs only)"


@dataclass(frozen=True)
class PairStats:
    """One figure over pairs of runs.

    Attributes:
        mean: mean over the pairs' finite values (None when none is).
        std: standard deviation over them; None for a single pair (no spread to report).
        n: pairs with a finite value.
    """

    mean: float | None
    std: float | None
    n: int


def _matrix(rows: Sequence[Sequence[float | None]]) -> Matrix:
    return tuple(tuple(row) for row in rows)


def _num(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.3g}"


@dataclass(frozen=True)
class Comparison(_SavedResult):
    """What `compare_runs` measured across runs of one configuration: the content of
    ``OUT/compare.json`` (see `probslot.evaluation.compare` for the definitions).

    Matrices are runs × runs, row i the target and column j the predictor, ordered as `names`.

    Attributes:
        runs: the run directories.
        names: their short names (directory names), the matrices' row and column labels.
        split: the split every run encoded (the first run's data config).
        num_images: images encoded (the same for every run).
        num_slots: k, slots per image.
        slot_dim: d, dimensions per slot.
        matrices: {figure: symmetrised matrix (x_ij + x_ji) / 2}: ``smcc``, ``r2``, ``r2_krr``
            and, for PSA runs, ``posterior_kl``, ``posterior_bhattacharyya`` (nats per
            dimension) and ``posterior_mean_error``.
        directed: {figure: directed matrix}: those figures and ``smcc_chance``, plus for PSA
            runs ``posterior_map_condition`` (condition number of the affine map W) and
            ``posterior_resolved_dims`` (directions the robust map resolves).
        summary: {figure of `matrices`: over all unordered pairs i < j}.
        consecutive: {``smcc``, ``r2``, ``r2_krr``: over consecutive pairs (i, i + 1)}, the
            authors' protocol.
        notes: figures not computed and why.
        warnings: one line per ordered pair whose posterior KL is degenerate (`KL_DEGENERATE`).
        figure: the heatmap PNG's file name, next to compare.json.
        config: the options the comparison ran with.
    """

    FILE: ClassVar[str] = "compare.json"
    MISSING: ClassVar[str] = "run `probslot compare --run_dirs '[A, B]' --out DIR` first"

    runs: tuple[str, ...]
    names: tuple[str, ...]
    split: str
    num_images: int
    num_slots: int
    slot_dim: int
    matrices: dict[str, Matrix]
    directed: dict[str, Matrix]
    summary: dict[str, PairStats]
    consecutive: dict[str, PairStats]
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    figure: str = "compare.png"
    config: CompareConfig | None = None

    @property
    def has_posterior(self) -> bool:
        """Whether the aggregate-posterior agreement was computed (PSA runs)."""
        return "posterior_kl" in self.matrices

    def pair_values(self, key: str) -> Iterator[tuple[str, str, float | None]]:
        """(name i, name j, symmetrised value) of `matrices[key]` for every pair i < j."""
        mat = self.matrices[key]
        n = len(self.names)
        for i in range(n):
            for j in range(i + 1, n):
                yield self.names[i], self.names[j], mat[i][j]

    def to_dict(self) -> dict[str, Any]:
        """The compare.json content: JSON types only, entries in file order."""

        def rows(mat: Matrix) -> list[list[float | None]]:
            return [list(row) for row in mat]

        out: dict[str, Any] = {
            "runs": list(self.runs),
            "names": list(self.names),
            "split": self.split,
            "num_images": self.num_images,
            "num_slots": self.num_slots,
            "slot_dim": self.slot_dim,
            "pairs": PAIRS,
            "matrices": {k: rows(v) for k, v in self.matrices.items()},
            "directed": {k: rows(v) for k, v in self.directed.items()},
            "summary": {k: asdict(v) for k, v in self.summary.items()},
            "consecutive": {k: asdict(v) for k, v in self.consecutive.items()},
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "figure": self.figure,
        }
        if self.config is not None:
            out["config"] = _config_dict(self.config)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """The comparison a compare.json dict describes (older files without ``warnings`` or
        ``config`` read as empty / None).

        Raises:
            ValueError: `data` lacks one of the entries every comparison has.
        """
        required = ("runs", "names", "split", "num_images", "num_slots", "slot_dim", "matrices")
        _require(data, required, "compare.json")

        def stats(section: Mapping[str, Any]) -> dict[str, PairStats]:
            return {
                k: PairStats(v.get("mean"), v.get("std"), v.get("n", 0)) for k, v in section.items()
            }

        config = data.get("config")
        return cls(
            runs=tuple(data["runs"]),
            names=tuple(data["names"]),
            split=data["split"],
            num_images=data["num_images"],
            num_slots=data["num_slots"],
            slot_dim=data["slot_dim"],
            matrices={k: _matrix(v) for k, v in data["matrices"].items()},
            directed={k: _matrix(v) for k, v in data.get("directed", {}).items()},
            summary=stats(data.get("summary", {})),
            consecutive=stats(data.get("consecutive", {})),
            notes=tuple(data.get("notes", ())),
            warnings=tuple(data.get("warnings", ())),
            figure=data.get("figure", "compare.png"),
            config=None if config is None else CompareConfig.from_dict(config),
        )

    def summary_lines(self) -> list[str]:
        """The lines ``probslot compare`` prints: each figure over the pairs ("0.8123 ± 0.0100
        over 3 pairs", or just the value for one pair), then the warnings."""
        lines = []
        for key, s in self.summary.items():
            if s.mean is None:
                continue
            if s.n > 1 and s.std is not None:
                value = f"{_num(s.mean)} ± {_num(s.std)} over {s.n} pairs"
            else:
                value = f"{_num(s.mean)} (one pair)"
            lines.append(f"{key}: {value}")
        lines += [f"warning: {w}" for w in self.warnings]
        return lines
