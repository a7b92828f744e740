"""Readable tables from saved results, shared by the HTML page and the Markdown summary.

Every table has labels a reader understands ("FG-ARI (decoder masks)", not ``fg_ari``) and
numbers formatted by what they are (percentages, durations, 3–4 significant digits); what is not
for reading (file hashes, π histograms, quantile lists, paths) stays in the JSON files, which the
report links to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Table",
    "compare_order",
    "compare_tables",
    "evaluation_tables",
    "final_validation_table",
    "fmt",
    "label",
    "pair_summary",
    "pruning_tables",
]


@dataclass(frozen=True)
class Table:
    """A titled table of formatted strings; ``rows[i][0]`` is the row's label."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)


#: labels of the keys that saved results use (eval.json, metrics.json, pruning.json, compare.json)
LABELS: dict[str, str] = {
    "fg_ari": "FG-ARI (decoder masks)",
    "fg_ari_attn": "FG-ARI (attention masks)",
    "ari": "ARI (all pixels)",
    "mbo": "mBO",
    "mse": "reconstruction MSE",
    "fg_mse": "reconstruction MSE (foreground pixels)",
    "nll": "negative log-likelihood",
    "skipped_updates": "skipped updates (gradient norm too large)",
    "steps": "optimiser steps",
    "train_seconds": "training time",
    "smcc": "SMCC",
    "smcc_chance": "SMCC of shuffled latents (chance)",
    "smcc_adjusted": "SMCC adjusted for chance",
    "r2_affine": "R² (affine map)",
    "r2": "R² (affine map)",
    "r2_krr": "R² (kernel ridge)",
    "num_objects": "objects matched to slots",
    "mask_source": "masks used for the matching",
    "matching": "matching rule",
    "rfid": "reconstruction FID",
    "rkid": "reconstruction KID",
    "cfid": "FID of generated scenes",
    "ckid": "KID of generated scenes",
    "posterior_kl": "posterior KL (nats per dimension)",
    "posterior_bhattacharyya": "posterior Bhattacharyya distance (moment-matched, nats per dimension)",
    "posterior_mean_error": "posterior mean error (relative)",
    "fg_ari_decoder": "FG-ARI (decoder masks)",
    "fg_ari_attention": "FG-ARI (attention masks)",
    "mbo_decoder": "mBO (decoder masks)",
    "mbo_attention": "mBO (attention masks)",
}


def label(key: str) -> str:
    """A reader's label for a result key: the known one, else the key in words."""
    if key in LABELS:
        return LABELS[key]
    return key.replace("_", " ").replace("/", " ").replace(".", " ").strip()


def fmt(v: Any, kind: str = "num") -> str:
    """A value for reading: ``num`` (4 significant digits), ``pct`` (a fraction as %),
    ``dpct`` (a percentage change, signed), ``delta`` (signed), ``int``, ``secs`` (a duration)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if not isinstance(v, (int, float)):
        return str(v)
    if kind == "pct":
        return f"{100 * v:.1f} %"
    if kind == "dpct":
        return f"{v:+.1f} %"
    if kind == "delta":
        return f"{v:+.4f}"
    if kind == "int" or (isinstance(v, int) and kind == "num"):
        return f"{int(v):,}"
    if kind == "secs":
        minutes, seconds = divmod(float(v), 60.0)
        hours, minutes = divmod(minutes, 60.0)
        if hours:
            return f"{int(hours)} h {int(minutes)} min"
        return f"{int(minutes)} min {seconds:.0f} s" if minutes else f"{seconds:.1f} s"
    if abs(v) < 1e-9:  # zero up to rounding (a run against itself)
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.3g}"
    return f"{v:.4g}"


def final_validation_table(metrics: Mapping[str, Any]) -> Table:
    """metrics.json: the final validation figures of training."""
    kinds = {"train_seconds": "secs", "steps": "int", "skipped_updates": "int"}
    rows = [
        (label(k), fmt(v, kinds.get(k, "num")))
        for k, v in metrics.items()
        if isinstance(v, (int, float)) or v is None
    ]
    return Table("Final validation (end of training)", ("quantity", "value"), rows)


# --------------------------------------------------------------------------- eval.json
def evaluation_tables(ev: Mapping[str, Any]) -> list[Table]:
    """eval.json as tables: segmentation, reconstruction, identifiability, slot counts, ..."""
    tables: list[Table] = []
    seg = ev.get("segmentation") or {}
    if seg:
        metrics = [m for m in ("ari", "fg_ari", "mbo") if any(m in v for v in seg.values())]
        head = {"ari": "ARI (all pixels)", "fg_ari": "FG-ARI", "mbo": "mBO"}
        tables.append(
            Table(
                "Segmentation",
                ("masks", *(head[m] for m in metrics)),
                [
                    (f"{src} masks", *(fmt(seg[src].get(m)) for m in metrics))
                    for src in sorted(seg, key=lambda x: (x != "decoder", x))  # decoder first
                ],
            )
        )
    rec = ev.get("reconstruction") or {}
    rows = [(label(k), fmt(rec[k])) for k in sorted(rec, key=lambda x: (x != "mse", x))]
    cc = ev.get("compositional_contrast")
    if cc:
        rows.append(
            (
                f"compositional contrast (mean ± std over {cc.get('num_images')} images)",
                f"{fmt(cc.get('mean'))} ± {fmt(cc.get('std'))} "
                f"({fmt(cc.get('mean_per_pixel'))} per pixel)",
            )
        )
    rows += [(label(k), fmt(v)) for k, v in (ev.get("generation") or {}).items()]
    if ev.get("posterior"):
        rows.append(
            ("scenes sampled from the aggregate posterior", fmt(ev["posterior"].get("samples")))
        )
    if rows:
        tables.append(Table("Reconstruction and generation", ("quantity", "value"), rows))
    ident = ev.get("identifiability_gt")
    if ident:
        keys = ("smcc", "smcc_chance", "smcc_adjusted", "r2_affine", "r2_krr", "num_objects")
        rows = [(label(k), fmt(ident[k])) for k in keys if k in ident]
        if "mask_source" in ident:
            rows.append((label("mask_source"), f"{ident['mask_source']} (Hungarian on mask IoU)"))
        tables.append(
            Table("Identifiability against the ground-truth latents", ("quantity", "value"), rows)
        )
        per = ident.get("per_latent_corr") or {}
        if per:
            tables.append(
                Table(
                    "Correlation of each ground-truth latent with its affine prediction",
                    ("latent", "correlation"),
                    [(name, fmt(v)) for name, v in per.items()],
                )
            )
    counts = ev.get("slot_counts")
    if counts:
        rows = [
            (
                f"τ = {tau.split('=')[-1]}",
                fmt(v.get("mean_active")),
                fmt(v.get("mae_vs_objects_plus_background")),
                fmt(v.get("mae_vs_objects")),
            )
            for tau, v in (counts.get("thresholds") or {}).items()
        ]
        tables.append(
            Table(
                f"Slot counts from π (Eq. 7); {fmt(counts.get('mean_objects'))} objects per image",
                ("threshold", "active slots", "MAE vs objects + background", "MAE vs objects"),
                rows,
            )
        )
    spread = ev.get("draws")
    if spread:
        draws = spread.get("draws") or []
        rows = [
            (label(k), f"{fmt(v.get('mean'))} ± {fmt(v.get('std'))}")
            for k, v in spread.items()
            if k != "draws" and isinstance(v, Mapping)
        ]
        which = f"draws {draws[0]}–{draws[-1]}" if len(draws) > 1 else "draws"
        tables.append(
            Table(f"Spread over initial-slot {which} (mean ± std)", ("quantity", "value"), rows)
        )
    return tables


# --------------------------------------------------------------------------- pruning.json
_SWEEP = (
    ("mean_kept", "kept slots", "num"),
    ("mae_with_background", "MAE (background counts)", "num"),
    ("mae_objects_only", "MAE (objects only)", "num"),
    ("decoder_flops_saved", "decoder FLOPs saved", "pct"),
    ("decoder_time_saved", "decoder time saved", "pct"),
    ("mse", "MSE", "num"),
    ("mse_change_pct", "MSE change", "dpct"),
    ("fg_ari", "FG-ARI", "num"),
    ("fg_ari_change", "FG-ARI change", "delta"),
)


def pruning_tables(pr: Mapping[str, Any]) -> list[Table]:
    """pruning.json: the headline τ against the targets, the setting, and the τ sweep."""
    tables: list[Table] = []
    results = pr.get("results") or []
    tau = pr.get("tau")
    at = next((r for r in results if tau is not None and math.isclose(r["tau"], tau)), None)
    if at is not None:
        convention = pr.get("headline_convention", "with_background")
        mae = at["mae_with_background" if convention == "with_background" else "mae_objects_only"]
        checks = (
            ("slot-count MAE ≤ 0.5", fmt(mae), mae is not None and mae <= 0.5),
            (
                "decoder FLOPs saved ≥ 40 %",
                fmt(at["decoder_flops_saved"], "pct"),
                at["decoder_flops_saved"] >= 0.40,
            ),
            (
                "MSE change ≤ +5 %",
                fmt(at["mse_change_pct"], "dpct"),
                at["mse_change_pct"] <= 5.0,
            ),
        )
        tables.append(
            Table(
                f"Targets at the headline τ = {tau:g}",
                ("target", "value", "met"),
                [(name, value, "✓ yes" if ok else "✗ no") for name, value, ok in checks],
            )
        )
    mode = "inside the EM iterations" if pr.get("in_em") else "on the final π"
    rows = [
        ("images", f"{fmt(pr.get('num_images'), 'int')} ({pr.get('split', '?')} split)"),
        ("slots per image K", fmt(pr.get("num_slots"), "int")),
        (
            f"objects per image ({pr.get('object_count', 'visible')})",
            fmt(pr.get("mean_objects")),
        ),
        ("τ applied", mode),
        ("MSE without pruning", fmt(pr.get("baseline_mse"))),
        ("FG-ARI without pruning", fmt(pr.get("baseline_fg_ari"))),
        ("MAE of always guessing the median count", fmt(pr.get("constant_mae"))),
    ]
    if pr.get("merge_dist"):
        rows.append(("slot merging distance", fmt(pr.get("merge_dist"))))
    tables.append(Table("Setting", ("quantity", "value"), rows))
    if results:
        tables.append(
            Table(
                "τ sweep",
                ("τ", *(h for _, h, _ in _SWEEP)),
                [
                    (f"{r['tau']:g}", *(fmt(r.get(k), kind) for k, _, kind in _SWEEP))
                    for r in results
                ],
            )
        )
    return tables


# --------------------------------------------------------------------------- compare.json
def pair_summary(stats: Mapping[str, Any] | None) -> str:
    """ "0.81 ± 0.02 over 3 pairs", "0.81 (one pair)" or "–"."""
    if not stats or stats.get("mean") is None:
        return "–"
    n = stats.get("n") or 0
    if n <= 1 or stats.get("std") is None:
        return f"{fmt(stats['mean'])} (one pair)"
    return f"{fmt(stats['mean'])} ± {fmt(stats['std'])} over {n} pairs"


#: the order in which comparison figures are shown (others follow, alphabetically)
COMPARE_ORDER = (
    "smcc",
    "r2",
    "r2_krr",
    "posterior_mean_error",
    "posterior_bhattacharyya",
    "posterior_kl",
)


def compare_order(keys: Iterable[str]) -> list[str]:
    """`keys` in `COMPARE_ORDER`, then the rest sorted."""
    keys = list(keys)
    return [k for k in COMPARE_ORDER if k in keys] + sorted(set(keys) - set(COMPARE_ORDER))


def compare_tables(compare: Mapping[str, Any]) -> list[Table]:
    """compare.json: the summary over pairs (all and consecutive)."""
    summary = compare.get("summary") or {}
    rows = [
        (
            label(key),
            pair_summary(summary[key]),
            pair_summary((compare.get("consecutive") or {}).get(key)),
        )
        for key in compare_order(summary)
    ]
    return [Table("Agreement between runs", ("quantity", "all pairs", "consecutive pairs"), rows)]
