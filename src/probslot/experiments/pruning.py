"""Study ``pruning``: automatic relevance determination against fixed K and a learned keep gate.

Sprites with 1–6 objects (24×24, centres ≥ 0.15 of the side apart) and K = 7 slots, so that a
scene uses between 2 and 7 of them (objects plus background). Two models over seeds, the same
encoder, decoder and budget as the ``sprites`` study:

- **PSA** (Alg. 2, tempered E-step, standardised tokens), evaluated three ways on the same
  weights: **fixed K** (decode all 7 slots), **ARD after EM** (the paper's Eq. 7: decode the slots
  with π > τ; `probslot prune`) and **ARD inside EM** (drop slots with π < τ after every EM
  iteration and give their tokens to the others; ``--in_em``), each over a sweep of τ;
- **PSA + learned keep gate** in the style of AdaSlot (Fan et al. 2024; `probslot.nn.KeepGate`:
  a per-slot Gumbel-sigmoid gate trained with the sparsity penalty 0.1 · mean keep
  probability; the decoder weighs the alpha masks by the gate), evaluated with its own rule.

Reported: slot-count MAE (kept slots vs objects + 1, the paper's App. H figure), the share of
decoder FLOPs saved against decoding all K slots, and the change in reconstruction MSE, each
mean over seeds, on 512 held-out scenes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from probslot.experiments.analysis import cell, mean_std
from probslot.experiments.images import (
    PSA_KWARGS,
    eval_figures,
    merge,
    split_overrides,
    sprites_scales,
    train_run,
)
from probslot.experiments.spec import RunSpec
from probslot.experiments.study import Scale, Study, StudyContext, StudyOutput, register_study
from probslot.reports.tables import Table

__all__ = ["PruningStudy", "TAUS"]

TAUS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3)
_DATA = {"data": {"min_objects": 1, "max_objects": 6, "dataset_kwargs": {"min_distance": 0.15}}}
_PSA = {"model": {"preset": "PSA", "num_slots": 7, "grouping_kwargs": PSA_KWARGS}}
MODELS: dict[str, dict[str, Any]] = {
    "PSA": {},
    "PSA + keep gate": {"model": {"keep_gate": {"penalty": 0.1}}},
}
#: the prune analyses of each run: the paper's threshold after EM, and τ inside EM
ANALYSES = ({"sweep": True, "in_em": False}, {"sweep": True, "in_em": True})
FIGURES = ("mae_with_background", "decoder_flops_saved", "mse", "mse_change_pct", "fg_ari")


def _rows(pruning: Mapping[str, Any]) -> dict[float, dict[str, Any]]:
    return {float(r["tau"]): r for r in pruning["results"]}


def _figure(
    lines: Mapping[str, Sequence[tuple[float, float]]], gate: Any, const: float | None, path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probslot.reports.figures import save_figure

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, pts in lines.items():
        ax.plot([100 * p[0] for p in pts], [p[1] for p in pts], "o-", ms=4, label=label)
    if gate is not None:
        ax.scatter([100 * gate[0]], [gate[1]], marker="*", s=160, c="tab:red", edgecolors="k",
                   label="learned keep gate", zorder=5)  # fmt: skip
    if const is not None:
        ax.axhline(const, color="k", ls="--", lw=0.8, label="always the median count")
    ax.set_xlabel("decoder FLOPs saved vs all K slots (%)")
    ax.set_ylabel("slot-count MAE (objects + background)")
    ax.set_title("ARD vs a learned keep gate (points: τ sweep, mean over seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


@register_study
class PruningStudy(Study):
    name = "pruning"
    title = "pruning: ARD (after and inside EM) vs fixed K vs a learned keep gate"
    description = (
        "PSA with K = 7 on sprites with 1–6 objects: slot-count MAE, decoder FLOPs saved and "
        "MSE against τ for ARD after EM (paper Eq. 7) and inside EM, against decoding all K "
        "slots and against an AdaSlot-style learned keep gate."
    )
    scales = sprites_scales(
        _DATA,
        _PSA,
        cpu=(
            2,
            "2 models × 2 seeds × 2,000 steps, two runs at a time: about 20 minutes on 2 cores",
        ),
        gpu=(3, "2 models × 3 seeds × 30,000 steps on one GPU"),
        tiny=(1, "smoke test: 4 steps per run"),
    )

    def plan(self, scale: Scale, seeds: int, overrides: Sequence[str] = ()) -> list[RunSpec]:
        config_overrides, evaluate = split_overrides(overrides)
        specs = []
        for label, change in MODELS.items():
            slug = "psa-gate" if "gate" in label else "psa"
            for s in range(seeds):
                specs.append(train_run(
                    f"{slug}-seed{s}", label, s, merge(scale.settings["config"], change),
                    config_overrides, evaluate={"split": "test", **scale.settings.get("evaluate", {}), **evaluate}, prune=ANALYSES,
                ))  # fmt: skip
        return specs

    def analyse(self, ctx: StudyContext) -> StudyOutput:
        groups = ctx.groups()
        summary: dict[str, Any] = {"taus": list(TAUS), "rules": {}}
        rows = []
        lines = {}
        for group, specs in groups.items():
            results = [ctx.results[s.name] for s in specs]
            for mode, name in ((False, "ARD after EM"), (True, "ARD inside EM")):
                reports = [next(p for p in r["pruning"] if p["in_em"] == mode) for r in results]
                per_tau = {}
                for tau in TAUS:
                    vals = [_rows(rep).get(tau) for rep in reports]
                    if any(v is None for v in vals):
                        continue
                    per_tau[tau] = {k: mean_std(v[k] for v in vals) for k in FIGURES}
                label = f"{group}: {name}"
                summary["rules"][label] = {str(t): v for t, v in per_tau.items()}
                lines[label] = [
                    (v["decoder_flops_saved"]["mean"], v["mae_with_background"]["mean"])
                    for v in per_tau.values()
                ]
                for tau, v in per_tau.items():
                    k = reports[0]["num_slots"]
                    rule = f"{group}: τ = 0 (all slots with π > 0: fixed K = {k})" if tau == 0 else (
                        f"{label}, τ = {tau:g}")  # fmt: skip
                    if tau == 0 and mode:
                        continue  # τ = 0 inside EM is the same fixed-K decoding
                    rows.append((rule, *(cell(v[k], 3) for k in FIGURES)))
            gates = [r["pruning"][0].get("keep_gate") for r in results]
            if all(g is not None for g in gates):
                gate = {k: mean_std(g[k] for g in gates) for k in FIGURES}
                gate["mean_kept"] = mean_std(g["mean_kept"] for g in gates)
                summary["rules"][f"{group}: learned keep gate"] = gate
                rows.append((f"{group}: learned keep gate", *(cell(gate[k], 3) for k in FIGURES)))
        summary["constant_mae"] = mean_std(
            r["pruning"][0].get("constant_mae") for r in ctx.results.values()
        )
        summary["models"] = {
            g: {k: mean_std(eval_figures(ctx.results[s.name])[k] for s in specs)
                for k in ("fg_ari", "mse")}
            for g, specs in groups.items()
        }  # fmt: skip
        table = Table(
            f"pruning: {ctx.seeds} seed(s) per model, mean ± std over seeds",
            ("rule", "slot-count MAE", "decoder FLOPs saved", "MSE", "MSE change (%)", "FG-ARI"),
            rows,
        )
        gate_rule = summary["rules"].get("PSA + keep gate: learned keep gate")
        gate_pt = None
        if gate_rule:
            gate_pt = (gate_rule["decoder_flops_saved"]["mean"],
                       gate_rule["mae_with_background"]["mean"])  # fmt: skip
        const = summary["constant_mae"]["mean"]
        fig = _figure(lines, gate_pt, const, ctx.figure_path("pruning_tradeoff.png"))
        reading = _reading(summary)
        return StudyOutput(summary, [table], [fig], reading)


def _reading(summary: Mapping[str, Any]) -> list[str]:
    """One line per rule (its best slot count, what it saves, what it costs), then the winners."""
    const = summary.get("constant_mae", {}).get("mean")
    out, cands = [], []
    for label, rule in summary["rules"].items():
        if "keep gate" in label and "mae_with_background" in rule:
            points = [(None, rule)]
        else:
            points = [(float(t), v) for t, v in rule.items() if float(t) > 0]
        for tau, v in points:
            if v["mae_with_background"]["mean"] is None:
                continue
            cands.append((label, tau, v))
        best = min(
            (c for c in cands if c[0] == label), key=lambda c: c[2]["mae_with_background"]["mean"],
            default=None,
        )  # fmt: skip
        if best is None:
            continue
        _, tau, v = best
        at = "" if tau is None else f" at τ = {tau:g}"
        out.append(
            f"{label}: slot-count MAE {v['mae_with_background']['mean']:.3f}{at}, "
            f"{100 * v['decoder_flops_saved']['mean']:.1f} % of the decoder FLOPs saved, MSE "
            f"{v['mse_change_pct']['mean']:+.1f} % against decoding every slot."
        )
    if not cands:
        return out
    label, tau, v = min(cands, key=lambda c: c[2]["mae_with_background"]["mean"])
    at = "" if tau is None else f" at τ = {tau:g}"
    text = f"Most accurate slot count: {label}{at} (MAE {v['mae_with_background']['mean']:.3f}"
    if const is not None:
        text += f"; always answering the median count scores {const:.3f}"
    out.append(text + ").")
    free = [c for c in cands if c[2]["mse_change_pct"]["mean"] <= 1.0]
    if free:
        label, tau, v = max(free, key=lambda c: c[2]["decoder_flops_saved"]["mean"])
        at = "" if tau is None else f" at τ = {tau:g}"
        out.append(
            f"Most decoder FLOPs saved while MSE rises by at most 1 %: {label}{at} "
            f"({100 * v['decoder_flops_saved']['mean']:.1f} %)."
        )
    return out
