"""Pieces the image studies share: configs, training runs, per-model statistics, cross-seed
comparison and the figures.

Every training run of a study is a `RunSpec` of kind ``train`` whose payload holds a complete
run config (`probslot.config.RunConfig` as a dict; the worker sets its output folder), the
options of `probslot.evaluation.evaluate.evaluate_run` and, for the pruning studies, those of
`probslot.posterior.commands.prune`. Cross-seed identifiability of a model is
`probslot.evaluation.compare.compare_runs` over its seeds: every run encodes the same held-out
images with the same slot initialisation, and SMCC / R² are taken over **all** pairs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from probslot.config import apply_overrides
from probslot.experiments.analysis import cell, mean_std
from probslot.experiments.spec import RunSpec
from probslot.experiments.study import Scale, StudyContext

__all__ = [
    "COLLAPSED_FG_ARI",
    "SPRITES_CPU",
    "SPRITES_GPU",
    "SPRITES_TINY",
    "TINY_EVALUATE",
    "collapsed_runs",
    "cross_seed",
    "eval_figures",
    "merge",
    "model_stats",
    "scatter_figure",
    "train_run",
]

#: a run whose held-out FG-ARI is below this has not learned to separate objects (one slot
#: takes the scene); it is listed as collapsed, never silently pooled
COLLAPSED_FG_ARI = 0.3

#: the CPU-scale sprites setting of the studies: the demo's data (24×24, 2–3 objects placed
#: apart, a 12×12 token grid) and architecture sizes, with no positions in the mixture (they
#: exist only for the base PSA) so that every model has the same encoder and decoder
SPRITES_CPU: dict[str, Any] = {
    "data": {
        "name": "sprites",
        "num_train": 20000,
        "num_val": 256,
        "num_test": 512,
        "image_size": 24,
        "min_objects": 2,
        "max_objects": 3,
        "batch_size": 16,
        "dataset_kwargs": {"min_distance": 0.2},
    },
    "model": {
        "likelihood": "mse",
        "image_size": 24,
        "num_slots": 4,
        "slot_dim": 32,
        "encoder_kwargs": {
            "channels": [32, 32, 32],
            "kernel_sizes": [5, 3, 3],
            "strides": [2, 1, 1],
        },
        "decoder_kwargs": {"channels": [16, 16, 16], "init_size": 6, "kernel_size": 3},
    },
    "optim": {
        "lr": 0.002,
        "warmup_steps": 200,
        "cosine": True,
        "min_lr": 0.0001,
        "grad_clip": 1.0,
        "skip_grad_norm": 1000.0,
        "ema_decay": 0.99,
    },
    "trainer": {
        "max_steps": 2000,
        "val_every": 500,
        "val_batches": 4,
        "panel_every": 1_000_000,
        "log_every": 50,
        "num_threads": 1,
        "checkpoint_every": 500,
    },
}

#: the tiny scale of every sprites study: a few steps on a few images, for the smoke tests
SPRITES_TINY: dict[str, Any] = {
    "data": {"num_train": 32, "num_val": 8, "num_test": 32, "batch_size": 8},
    "model": {
        "slot_dim": 8,
        "encoder_kwargs": {"channels": [8, 8, 8]},
        "decoder_kwargs": {"channels": [8, 8, 8]},
    },
    "trainer": {"max_steps": 4, "val_every": 2, "val_batches": 1, "log_every": 1},
}

#: the GPU scale of every sprites study, merged over `SPRITES_CPU`: 30,000 steps at batch 64 in
#: bf16 on one accelerator, with the learning rate, warm-up and clip of the full-length configs
SPRITES_GPU: dict[str, Any] = {
    "data": {"num_train": 100000, "num_test": 1024, "batch_size": 64},
    "trainer": {
        "max_steps": 30000,
        "val_every": 2000,
        "accelerator": "gpu",
        "precision": "bf16-mixed",
        "num_threads": None,
    },
    "optim": {"lr": 0.0004, "warmup_steps": 1000, "grad_clip": 100.0},
}
#: the evaluation options of every tiny scale (fewer Jacobians and panels)
TINY_EVALUATE: dict[str, Any] = {"contrast_images": 2, "num_panels": 2}

#: PSA settings the CPU-scale sprites runs need (docs/training.md, "What made the demo work"):
#: a tempered E-step and EM on per-image standardised tokens
PSA_KWARGS: dict[str, Any] = {"temperature": 5.66, "standardize": True}
#: decoder options of the non-additive decoder at the sprites sizes
NOA_DECODER: dict[str, Any] = {
    "init_size": 6,
    "slot_channels": [16, 16],
    "feature_dim": 16,
    "channels": [16, 16, 16],
    "kernel_size": 3,
}


def merge(base: Mapping[str, Any], *changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with each mapping of `changes` merged in (dicts recursively;
    a value None removes the key)."""
    out = copy.deepcopy(dict(base))
    for change in changes:
        for key, value in change.items():
            if value is None:
                out.pop(key, None)
            elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def train_run(
    name: str,
    group: str,
    seed: int,
    config: Mapping[str, Any],
    overrides: Sequence[str] = (),
    evaluate: Mapping[str, Any] | None = None,
    prune: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    info: Mapping[str, Any] | None = None,
) -> RunSpec:
    """A ``train`` run: `config` with ``trainer.seed = seed`` and the dotted `overrides`."""
    cfg = merge(config, {"trainer": {"seed": seed}})
    cfg = apply_overrides(cfg, overrides)
    payload: dict[str, Any] = {"config": cfg, "evaluate": dict(evaluate or {})}
    if prune is not None:
        payload["prune"] = dict(prune) if isinstance(prune, Mapping) else [dict(p) for p in prune]
    return RunSpec(name, group, seed, "train", payload, info=dict(info or {}))


def eval_figures(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The per-run figures of an image run's result (None where not computed)."""
    ev = result.get("eval", {})
    seg = ev.get("segmentation", {})
    ident = ev.get("identifiability_gt", {})
    cc = ev.get("compositional_contrast", {})
    return {
        "fg_ari": seg.get("decoder", {}).get("fg_ari", seg.get("attention", {}).get("fg_ari")),
        "fg_ari_attn": seg.get("attention", {}).get("fg_ari"),
        "mse": ev.get("reconstruction", {}).get("mse"),
        "smcc_gt": ident.get("smcc"),
        "r2_gt": ident.get("r2_affine"),
        "sis": ident.get("sis"),
        "compositional_contrast": cc.get("mean_per_pixel"),
        "minutes": result.get("seconds", math.nan) / 60,
    }


def collapsed_runs(ctx: StudyContext, specs: Sequence[RunSpec]) -> list[str]:
    """Names of the runs of `specs` whose FG-ARI is below `COLLAPSED_FG_ARI` (or missing)."""
    out = []
    for spec in specs:
        fg = eval_figures(ctx.results[spec.name])["fg_ari"]
        if fg is None or not math.isfinite(fg) or fg < COLLAPSED_FG_ARI:
            out.append(spec.name)
    return out


def model_stats(ctx: StudyContext, specs: Sequence[RunSpec]) -> dict[str, Any]:
    """mean ± std over the runs of `specs` of every per-run figure, plus the collapsed runs."""
    figs = [eval_figures(ctx.results[s.name]) for s in specs]
    stats = {key: mean_std(f[key] for f in figs) for key in figs[0]}
    stats["collapsed"] = collapsed_runs(ctx, specs)
    stats["runs"] = [s.name for s in specs]
    return stats


def cross_seed(ctx: StudyContext, group: str, specs: Sequence[RunSpec]) -> dict[str, Any] | None:
    """`compare_runs` over the seeds of one model (None for fewer than 2): SMCC and R² over all
    pairs, with each pair's figure, plus the aggregate-posterior agreement for PSA models."""
    from probslot.evaluation.compare import CompareConfig, compare_runs

    if len(specs) < 2:
        return None
    out = ctx.out / "compare" / group
    res = compare_runs(
        [ctx.run_dir(s.name) for s in specs], out, CompareConfig(split="test", progress=False)
    )
    summary: dict[str, Any] = {}
    for key in ("smcc", "r2", "posterior_bhattacharyya", "posterior_mean_error"):
        if key in res.matrices:
            pairs = [{"runs": [a, b], key: value} for a, b, value in res.pair_values(key)]
            summary[key] = {**asdict(res.summary[key]), "pairs": pairs}
    summary["file"] = str(Path("compare") / group / "compare.json")
    return summary


def seed_stats(ctx: StudyContext, group: str, specs: Sequence[RunSpec]) -> dict[str, Any]:
    """`model_stats` of one model's runs plus their agreement across seeds (`cross_seed`, when
    there are 2 or more): ``smcc_cross``, ``r2_cross``, ``posterior_bhattacharyya`` (PSA) and
    ``compare_file``."""
    stats = model_stats(ctx, specs)
    cross = cross_seed(ctx, group, specs)
    if cross is not None:
        stats["smcc_cross"] = cross["smcc"]
        stats["r2_cross"] = cross["r2"]
        if "posterior_bhattacharyya" in cross:
            stats["posterior_bhattacharyya"] = cross["posterior_bhattacharyya"]
        stats["compare_file"] = cross["file"]
    return stats


def sprites_scales(
    *base: Mapping[str, Any],
    cpu: tuple[int, str],
    gpu: tuple[int, str],
    tiny: tuple[int, str],
    min_seeds: int = 1,
    tiny_settings: Mapping[str, Any] | None = None,
) -> dict[str, Scale]:
    """The cpu, gpu and tiny scales of a study in the sprites setting: `SPRITES_CPU` with the
    study's `base` changes merged in, then `SPRITES_GPU` or `SPRITES_TINY` on top. Each of
    `cpu`, `gpu`, `tiny` is (default seeds, description); `tiny_settings` (e.g. the variants a
    smoke test trains) and `TINY_EVALUATE` go into the tiny scale's settings."""
    return {
        "cpu": Scale("cpu", *cpu, {"config": merge(SPRITES_CPU, *base)}, min_seeds),
        "gpu": Scale("gpu", *gpu, {"config": merge(SPRITES_CPU, *base, SPRITES_GPU)}, min_seeds),
        "tiny": Scale(
            "tiny",
            *tiny,
            {
                "config": merge(SPRITES_CPU, *base, SPRITES_TINY),
                **(tiny_settings or {}),
                "evaluate": TINY_EVALUATE,
            },
            min_seeds,
        ),
    }


#: axis and colour-bar labels of the per-run figures
FIGURE_LABELS = {
    "smcc_gt": "SMCC vs ground-truth latents",
    "r2_gt": "R² vs ground-truth latents",
    "sis": "SIS vs ground-truth latents",
    "compositional_contrast": "compositional contrast per pixel",
    "mse": "reconstruction MSE",
}


def scatter_figure(
    points: Sequence[Mapping[str, Any]], path: Path, x: str, y: str, colour: str, title: str
) -> Path:
    """Log-log scatter of runs (``points``: dicts with ``label`` and the keys), coloured by
    `colour` (the paper's Fig. 5 layout); one marker per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    from probslot.reports.figures import save_figure
    from probslot.reports.tables import label

    def nice(key: str) -> str:
        return FIGURE_LABELS.get(key, label(key))

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    labels = list(dict.fromkeys(p["label"] for p in points))
    markers = "os^DvP*Xh<>"
    values = [p[colour] for p in points if p.get(colour) is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    sc = None
    for i, lab in enumerate(labels):
        pts = [
            p
            for p in points
            if p["label"] == lab and p.get(x) and p.get(y) and p.get(colour) is not None
        ]
        if not pts:
            continue
        sc = ax.scatter(
            [p[x] for p in pts], [p[y] for p in pts], c=[p[colour] for p in pts],
            cmap="viridis", vmin=lo, vmax=hi, marker=markers[i % len(markers)], s=46,
            edgecolors="k", linewidths=0.4, label=lab,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # ticks at 1, 2, 5 × 10^n, labelled plainly
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(nice(x))
    ax.set_ylabel(nice(y))
    ax.set_title(title, fontsize=9)
    if sc is not None:
        fig.colorbar(sc, ax=ax, label=nice(colour))
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, f"no run has {nice(x)}, {nice(y)} and {nice(colour)}",
                ha="center", va="center", transform=ax.transAxes, fontsize=8)  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Dotted overrides → (config overrides, `evaluate_run` options from ``evaluate.KEY=VALUE``),
    e.g. ``evaluate.inception=inception.pt`` for FID where Inception weights are supplied."""
    from probslot.config import parse_override

    config, evaluate = [], {}
    for item in overrides:
        if item.startswith("evaluate."):
            keys, value = parse_override(item)
            evaluate[keys[-1]] = value
        else:
            config.append(item)
    return config, evaluate


class SweepStudy:
    """Mixin of the studies that train named variants of one sprites setting over seeds.

    A subclass defines ``variants(scale) → {label: config changes}`` (merged into the scale's
    ``settings["config"]``) and may override `reading`; `plan` and the per-variant table come
    from here: per-run figures as mean ± std over seeds and, with ≥ 2 seeds, SMCC and R² across
    seeds over all pairs.
    """

    columns: tuple[tuple[str, str], ...] = (
        ("smcc_gt", "SMCC vs GT"),
        ("r2_gt", "R² vs GT"),
        ("smcc_cross", "SMCC across seeds"),
        ("mse", "MSE"),
        ("fg_ari", "FG-ARI"),
        ("minutes", "minutes / run"),
    )

    def variants(self, scale: Any) -> dict[str, dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def plan(self, scale: Any, seeds: int, overrides: Sequence[str] = ()) -> list[RunSpec]:
        config_overrides, evaluate = split_overrides(overrides)
        base = scale.settings["config"]
        specs = []
        chosen = scale.settings.get("variants")
        for label, change in self.variants(scale).items():
            if chosen is not None and label not in chosen:
                continue
            slug = label.lower().replace(" ", "-").replace("=", "").replace("/", "-")
            slug = "".join(c for c in slug if c.isalnum() or c in "._-")
            for s in range(seeds):
                specs.append(
                    train_run(
                        f"{slug}-seed{s}",
                        label,
                        s,
                        merge(base, change),
                        config_overrides,
                        evaluate={
                            "split": "test",
                            **scale.settings.get("evaluate", {}),
                            **evaluate,
                        },
                        info={"variant": label},
                    )  # fmt: skip
                )
        return specs

    def variant_stats(self, ctx: StudyContext) -> dict[str, dict[str, Any]]:
        out = {}
        for group, specs in ctx.groups().items():
            out[group] = seed_stats(ctx, group, specs)
        return out

    def variant_table(self, title: str, stats: Mapping[str, Mapping[str, Any]]) -> Any:
        from probslot.reports.tables import Table

        rows = []
        for group, st in stats.items():
            flag = f" ({len(st['collapsed'])} collapsed)" if st["collapsed"] else ""
            rows.append(
                (
                    group + flag,
                    *(cell(st.get(k), 2 if k == "minutes" else 3) for k, _ in self.columns),
                )
            )
        return Table(title, ("variant", *(t for _, t in self.columns)), rows)


def bar_figure(
    bars: Mapping[str, Mapping[str, Any]], path: Path, ylabel: str, title: str,
    floor: float | None = None, floor_label: str = "",
) -> Path:  # fmt: skip
    """Horizontal bars of ``{label: mean_std}`` with the std as error bars (and a dashed
    reference line at `floor`, e.g. chance or an unrelated model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probslot.reports.figures import save_figure

    labels = [k for k, v in bars.items() if v.get("mean") is not None]
    fig, ax = plt.subplots(figsize=(5.6, 0.45 * len(labels) + 1.2))
    means = [bars[k]["mean"] for k in labels]
    errs = [bars[k].get("std") or 0.0 for k in labels]
    ax.barh(range(len(labels)), means, xerr=errs, color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    if floor is not None:
        ax.axvline(floor, color="k", ls="--", lw=0.8, label=floor_label)
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
