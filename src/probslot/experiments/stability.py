"""Study ``posterior-stability``: is the aggregate posterior stable across seeds and datasets?

The paper's Corollary 3 says q(z) is identifiable up to an affine map and a slot permutation;
the seed asks whether it is *stable* across runs. Distance between two runs' aggregate
posteriors (docs/metrics.md, "Distance between aggregate posteriors"): both runs encode the same
held-out inputs; their slots are matched per input and one pooled affine map is fitted from run
j's slot means to run i's by least squares (weights √(π_i π_j)) on 80 % of the inputs; on the
other 20 % the **Bhattacharyya distance** (nats per dimension) between the moment-matched
Gaussians of q_i and of q_j pushed through the map, and the **mean error** (matched-mean squared
error relative to the spread of the means: 0 = equal up to the map, 1 = no better than the mean)
(`probslot.evaluation.compare.posterior_agreement`), averaged over both directions.

Runs: PSA-Proj on three sprites data sets, the ``sprites`` study's setting (black background, five
shapes), a grey background, and three shapes only (circle, square, triangle), over seeds; and
PSA on the 2D toy data (the ``toy2d`` model) over seeds. Distances are computed on the reference
sprites test images (toy: the toy test items) for pairs

- of seeds of one data set (stability across seeds);
- of runs trained on different data sets (stability across data sets);
- floors: a trained run against an untrained model of the same architecture (an unrelated
  model), and a pair of seeds with the inputs of one run shuffled (no correspondence).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from probslot import metrics as M
from probslot.experiments.analysis import cell, mean_std
from probslot.experiments.images import (
    PSA_KWARGS,
    SPRITES_CPU,
    SPRITES_GPU,
    SPRITES_TINY,
    TINY_EVALUATE,
    bar_figure,
    merge,
    split_overrides,
    train_run,
)
from probslot.experiments.spec import RunSpec
from probslot.experiments.study import Scale, Study, StudyContext, StudyOutput, register_study
from probslot.experiments.toy2d import (
    SLOTS_FILE,
    Toy2DModel,
    Toy2DStudy,
    encode_toy,
    toy_test_set,
)
from probslot.reports.tables import Table

__all__ = ["DATASETS", "PosteriorStabilityStudy", "posterior_distance"]

#: data set label → data config changes over the sprites setting
DATASETS: dict[str, dict[str, Any]] = {
    "reference": {},
    "grey background": {"data": {"dataset_kwargs": {"background": "gray"}}},
    "three shapes": {"data": {"dataset_kwargs": {"shapes": ["circle", "square", "triangle"]}}},
}
_PSA_PROJ = {"model": {"preset": "PSA-Proj", "grouping_kwargs": PSA_KWARGS}}


def posterior_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], seed: int = 0) -> dict:
    """Symmetric distance between two runs' aggregate posteriors on the same inputs
    (``mu``, ``var`` (m, k, d), ``pi`` (m, k) each): ``bhattacharyya`` and ``mean_error``, each
    the mean of both directions (see the module docstring)."""
    from probslot.evaluation.compare import posterior_agreement

    out: dict[str, list[float]] = {"bhattacharyya": [], "mean_error": []}
    for x, y in ((a, b), (b, a)):
        res = M.smcc_details(x["mu"].double(), y["mu"].double(), transform="affine", seed=seed)
        agree = posterior_agreement(
            x["mu"], x["var"], x["pi"], y["mu"], y["var"], y["pi"], res.perm, seed=seed
        )
        for key in out:
            if agree[key] is not None:
                out[key].append(float(agree[key]))
    return {k: (sum(v) / len(v) if v else None) for k, v in out.items()}


def _shuffled(x: Mapping[str, Tensor], seed: int) -> dict[str, Tensor]:
    perm = torch.randperm(x["mu"].shape[0], generator=torch.Generator().manual_seed(seed))
    return {k: v[perm] for k, v in x.items()}


def _encode_image_runs(ctx: StudyContext, specs: Sequence[RunSpec]) -> tuple[dict, dict]:
    """(trained, untrained) slot posteriors of every image run on the reference test images."""
    from probslot.config import RunConfig
    from probslot.evaluation.evaluate import encode_split
    from probslot.io import load_model
    from probslot.models import build_model
    from probslot.runs import load_split

    ref = next(s for s in specs if s.info.get("dataset") == "reference")
    cfg = RunConfig.from_dict(ref.payload["config"])
    dataset = load_split(cfg, "test")
    m = len(dataset)
    trained, untrained = {}, {}
    for spec in specs:
        torch.manual_seed(0)
        enc = encode_split(load_model(ctx.run_dir(spec.name)), dataset, m)
        trained[spec.name] = {"mu": enc.mu, "var": enc.var, "pi": enc.pi}
        torch.manual_seed(10_000 + spec.seed)
        model = build_model(RunConfig.from_dict(spec.payload["config"]).model).eval()
        torch.manual_seed(0)
        enc = encode_split(model, dataset, m)
        untrained[spec.name] = {"mu": enc.mu, "var": enc.var, "pi": enc.pi}
    return trained, untrained


def _encode_toy_runs(ctx: StudyContext, specs: Sequence[RunSpec]) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    settings = specs[0].payload["settings"]
    points, labels = toy_test_set(settings)
    trained, untrained = {}, {}
    for spec in specs:
        s = load_file(str(ctx.run_dir(spec.name) / SLOTS_FILE))
        trained[spec.name] = {k: s[k] for k in ("mu", "var", "pi")}
        torch.manual_seed(10_000 + spec.seed)
        model = Toy2DModel(3, settings["dim"], settings["iters"], settings["variant"])
        enc = encode_toy(model, points, labels, settings["restarts"])
        untrained[spec.name] = {k: enc[k] for k in ("mu", "var", "pi")}
    return trained, untrained


def _pairs(specs: Sequence[RunSpec], trained: dict, untrained: dict, seed: int) -> dict[str, list]:
    """Distances by category (see the module docstring)."""
    cats: dict[str, list[dict[str, Any]]] = {}
    for a, b in itertools.combinations(specs, 2):
        da, db = a.info["dataset"], b.info["dataset"]
        cat = f"across seeds: {da}" if da == db else "across data sets"
        cats.setdefault(cat, []).append(
            {"runs": [a.name, b.name], **posterior_distance(trained[a.name], trained[b.name], seed)}
        )
        if da == db:
            shuffled = _shuffled(trained[b.name], seed + 1)
            cats.setdefault("floor: inputs shuffled", []).append(
                {"runs": [a.name, b.name], **posterior_distance(trained[a.name], shuffled, seed)}
            )
    for spec in specs:
        cats.setdefault("floor: untrained model", []).append(
            {"runs": [spec.name, "untrained"],
             **posterior_distance(trained[spec.name], untrained[spec.name], seed)}
        )  # fmt: skip
    return cats


@register_study
class PosteriorStabilityStudy(Study):
    name = "posterior-stability"
    title = "posterior-stability: the aggregate posterior across seeds and data sets"
    description = (
        "PSA-Proj on three sprites data sets and PSA on the 2D toy data, over seeds; the "
        "distance between aggregate posteriors after the best affine alignment, against "
        "unrelated models as the floor."
    )
    scales = {
        "cpu": Scale("cpu", 2, "3 sprites data sets × 2 seeds × 2,000 steps + 3 toy runs: about "
                     "25 minutes on 2 cores",
                     {"config": merge(SPRITES_CPU, _PSA_PROJ), "toy": Toy2DStudy.scales["cpu"].settings,
                      "toy_seeds": 3}, min_seeds=2),
        "gpu": Scale("gpu", 3, "3 data sets × 3 seeds × 30,000 steps on one GPU + 5 toy runs",
                     {"config": merge(SPRITES_CPU, _PSA_PROJ, SPRITES_GPU),
                      "toy": Toy2DStudy.scales["cpu"].settings, "toy_seeds": 5}, min_seeds=2),
        "tiny": Scale("tiny", 2, "smoke test: 4 steps per run",
                      {"config": merge(SPRITES_CPU, _PSA_PROJ, SPRITES_TINY),
                       "toy": Toy2DStudy.scales["tiny"].settings, "toy_seeds": 2,
                       "datasets": ["reference", "grey background"], "evaluate": TINY_EVALUATE}, min_seeds=2),
    }  # fmt: skip

    def plan(self, scale: Scale, seeds: int, overrides: Sequence[str] = ()) -> list[RunSpec]:
        config_overrides, evaluate = split_overrides(overrides)
        specs = []
        chosen = scale.settings.get("datasets", list(DATASETS))
        for label, change in DATASETS.items():
            if label not in chosen:
                continue
            slug = label.replace(" ", "-")
            for s in range(seeds):
                specs.append(train_run(
                    f"{slug}-seed{s}", label, s, merge(scale.settings["config"], change),
                    config_overrides, evaluate={"split": "test", **scale.settings.get("evaluate", {}), **evaluate},
                    info={"dataset": label},
                ))  # fmt: skip
        toy = dict(scale.settings["toy"])
        for s in range(scale.settings["toy_seeds"]):
            specs.append(RunSpec(f"toy2d-seed{s}", "toy2d", s, "toy2d",
                                 {"settings": toy, "seed": s}, info={"dataset": "toy2d"}))  # fmt: skip
        return specs

    def analyse(self, ctx: StudyContext) -> StudyOutput:
        image = [s for s in ctx.specs if s.kind == "train"]
        toy = [s for s in ctx.specs if s.kind == "toy2d"]
        cats = _pairs(image, *_encode_image_runs(ctx, image), seed=0)
        toy_cats = _pairs(toy, *_encode_toy_runs(ctx, toy), seed=0)
        summary: dict[str, Any] = {"sprites": {}, "toy2d": {}}
        rows = []

        def rank(cat: str) -> tuple[int, str]:
            order = ("across seeds", "across data sets", "floor: untrained", "floor: inputs")
            return next(i for i, p in enumerate(order) if cat.startswith(p)), cat

        for where, found in (("sprites", cats), ("toy2d", toy_cats)):
            for cat in sorted(found, key=rank):
                pairs = found[cat]
                stats = {
                    "bhattacharyya": mean_std(p["bhattacharyya"] for p in pairs),
                    "mean_error": mean_std(p["mean_error"] for p in pairs),
                    "pairs": pairs,
                }
                summary[where][cat] = stats
                rows.append((f"{where}: {cat}", cell(stats["bhattacharyya"]),
                             cell(stats["mean_error"]), str(len(pairs))))  # fmt: skip
        table = Table(
            "posterior-stability: distance between aggregate posteriors after affine alignment "
            "(mean ± std over pairs)",
            ("pairs", "Bhattacharyya (nats / dim)", "mean error (relative)", "pairs"),
            rows,
        )
        reading = []
        for where, found in summary.items():
            seeds = [
                v["mean_error"]["mean"] for k, v in found.items() if k.startswith("across seeds")
            ]
            floor = found.get("floor: untrained model", {}).get("mean_error", {}).get("mean")
            shuffled = found.get("floor: inputs shuffled", {}).get("mean_error", {}).get("mean")
            across = found.get("across data sets", {}).get("mean_error", {}).get("mean")
            if seeds and floor is not None:
                text = (
                    f"{where}: mean error across seeds {min(seeds):.3f}–{max(seeds):.3f} against "
                    f"{floor:.3f} for an untrained model"
                )
                if shuffled is not None:
                    text += f" and {shuffled:.3f} with shuffled inputs"
                if across is not None:
                    text += f"; across data sets {across:.3f}"
                reading.append(text + ".")
        bars = {
            f"{where}: {cat}": stats["mean_error"]
            for where, found in summary.items()
            for cat, stats in found.items()
        }
        fig = bar_figure(
            bars, ctx.figure_path("posterior_stability.png"),
            "posterior mean error after affine alignment (0 = equal up to the map)",
            "aggregate posteriors across seeds, data sets and against unrelated models",
        )  # fmt: skip
        return StudyOutput(summary, [table], [fig], reading)
