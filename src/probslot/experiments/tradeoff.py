"""Study ``tradeoff``: identifiability against reconstruction quality (paper §6: "a trade-off
between identifiability and expressivity that depends on the decoder structure").

PSA-Proj on the sprites setting of the ``sprites`` study, one setting changed at a time around
the reference (slot size 32, 5 EM iterations, 4 slots, the maximum-likelihood variance update):
slot size 16 and 64, 1 and 3 iterations, 6 slots, and the authors' prior-regularised ("map")
variance update (paper notes §11.2). Each point: SMCC against the ground-truth latents and
reconstruction MSE (FID too where Inception weights are supplied:
``evaluate.inception=PATH``), mean over seeds; the figure marks the Pareto front (lower MSE,
higher SMCC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probslot.experiments.images import (
    PSA_KWARGS,
    SweepStudy,
    sprites_scales,
)
from probslot.experiments.study import Scale, Study, StudyContext, StudyOutput, register_study

__all__ = ["TradeoffStudy", "pareto_front"]

_PSA_PROJ = {"model": {"preset": "PSA-Proj", "grouping_kwargs": PSA_KWARGS}}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (mse, smcc) no other point beats in both (lower mse, higher smcc)."""
    front = []
    for i, (m, s) in enumerate(points):
        beaten = any(
            (m2 <= m and s2 >= s) and (m2 < m or s2 > s)
            for j, (m2, s2) in enumerate(points)
            if j != i
        )
        if not beaten:
            front.append(i)
    return front


def _figure(stats: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probslot.reports.figures import save_figure

    labels = [k for k, v in stats.items() if v["smcc_gt"]["mean"] is not None]
    pts = [(stats[k]["mse"]["mean"], stats[k]["smcc_gt"]["mean"]) for k in labels]
    front = set(pareto_front(pts))
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for i, (label, (m, s)) in enumerate(zip(labels, pts, strict=True)):
        ax.scatter([m], [s], s=50, c="tab:red" if i in front else "tab:blue", edgecolors="k")
        # alternate the labels above and below their points so that neighbours stay readable
        ax.annotate(label, (m, s), fontsize=7, xytext=(5, 4 if i % 2 == 0 else -10),
                    textcoords="offset points")  # fmt: skip
    order = sorted(front, key=lambda i: pts[i][0])
    ax.plot([pts[i][0] for i in order], [pts[i][1] for i in order], "r--", lw=0.8,
            label="Pareto front")  # fmt: skip
    ax.set_xlabel("reconstruction MSE (held-out)")
    ax.set_ylabel("SMCC vs ground-truth latents")
    ax.set_title("identifiability vs reconstruction (PSA-Proj sweep)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


@register_study
class TradeoffStudy(SweepStudy, Study):
    name = "tradeoff"
    title = "tradeoff: SMCC against reconstruction across slot size, iterations, slots, variance"
    description = (
        "PSA-Proj on the sprites setting; one setting changed at a time around the reference; "
        "SMCC against ground truth vs reconstruction MSE, with the Pareto front."
    )
    scales = sprites_scales(
        _PSA_PROJ,
        cpu=(1, "7 settings × 1 seed × 2,000 steps: about 20 minutes on 2 cores"),
        gpu=(3, "7 settings × 3 seeds × 30,000 steps on one GPU"),
        tiny=(1, "smoke test: 4 steps per run"),
        tiny_settings={
            "tiny": True,
            "variants": ["reference (d=8, T=5, K=4, mle)", "slot size 4", "1 EM iteration"],
        },
    )
    columns = (
        ("smcc_gt", "SMCC vs GT"),
        ("r2_gt", "R² vs GT"),
        ("mse", "MSE"),
        ("fg_ari", "FG-ARI"),
        ("minutes", "minutes / run"),
    )

    def variants(self, scale: Scale) -> dict[str, dict[str, Any]]:
        d = 8 if scale.settings.get("tiny") else 32
        return {
            f"reference (d={d}, T=5, K=4, mle)": {},
            f"slot size {d // 2}": {"model": {"slot_dim": d // 2}},
            f"slot size {2 * d}": {"model": {"slot_dim": 2 * d}},
            "1 EM iteration": {"model": {"iters": 1}},
            "3 EM iterations": {"model": {"iters": 3}},
            "6 slots": {"model": {"num_slots": 6}},
            "map variance": {"model": {"grouping_kwargs": {"variance": "map"}}},
        }

    def analyse(self, ctx: StudyContext) -> StudyOutput:
        stats = self.variant_stats(ctx)
        table = self.variant_table(f"tradeoff: PSA-Proj sweep, {ctx.seeds} seed(s) each", stats)
        fig = _figure(stats, ctx.figure_path("tradeoff_pareto.png"))
        labels = [k for k, v in stats.items() if v["smcc_gt"]["mean"] is not None]
        pts = [(stats[k]["mse"]["mean"], stats[k]["smcc_gt"]["mean"]) for k in labels]
        front = [labels[i] for i in pareto_front(pts)]
        reading = [
            f"Pareto front (lower MSE and higher SMCC than any other setting in one of the two): "
            f"{', '.join(front)}.",
        ]
        mses = [p[0] for p in pts]
        smccs = [p[1] for p in pts]
        if len(pts) > 2:
            import numpy as np

            r = float(np.corrcoef(mses, smccs)[0, 1])
            reading.append(
                f"Across the {len(pts)} settings, MSE and SMCC correlate with r = {r:+.2f} "
                "(negative: better reconstruction goes with higher identifiability)."
            )
        summary = {"variants": stats, "pareto_front": front}
        return StudyOutput(summary, [table], [fig], reading)
