"""Studies ``clevr6`` and ``objects-room``: the paper's Tables 2 and 4 on the real data.

Each trains AE, SA, SA-NoA, PSA, PSA-NoA and PSA-Proj from the repository's paper configs
(``configs/clevr6_*.yaml`` at 64×64 with 7 slots; ``configs/objects_room_*.yaml`` at 64×64 with
7 slots; AE = the PSA config with the ``AE`` preset) on a converted store (docs/data.md), over
seeds, and reports the same figures as the ``sprites`` study except those that need
ground-truth latents: cross-seed SMCC and R² over all pairs (Table 2), FG-ARI, MSE (Table 4;
FID where Inception weights are supplied, ``evaluate.inception=PATH``), beside the paper's.

They need a GPU and the data: ``probslot experiment clevr6 --scale gpu data.root=STORE``. The
``tiny`` scale trains 4-step models on a store built from the format fixtures (the tests), so the
pipeline is checked without either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from probslot.experiments.images import TINY_EVALUATE, merge
from probslot.experiments.spec import RunSpec
from probslot.experiments.sprites import SpritesStudy
from probslot.experiments.study import Scale, StudyContext, StudyOutput, register_study

__all__ = ["CLEVR6Study", "ObjectsRoomStudy"]

_GPU = {"trainer": {"accelerator": "gpu", "precision": "bf16-mixed", "num_threads": None}}
_TINY = {
    "data": {"num_train": 8, "num_val": 4, "num_test": 16, "batch_size": 4, "num_workers": 0},
    "model": {"slot_dim": 8, "num_slots": 4},
    "trainer": {"max_steps": 4, "val_every": 2, "val_batches": 1, "log_every": 1,
                "panel_every": 1_000_000, "accelerator": "cpu", "precision": "32",
                "num_threads": 1},
}  # fmt: skip


class _RealDataStudy(SpritesStudy):
    prefix = ""
    paper_name = ""
    #: the paper's figures: Table 2 (SMCC, R² across seeds) and Table 4 (FG-ARI)
    paper: dict[str, dict[str, float]] = {}

    def models(self) -> dict[str, dict[str, Any]]:
        return {label: {} for label in ("AE", "SA", "SA-NoA", "PSA", "PSA-NoA", "PSA-Proj")}

    def base_config(self, scale: Scale, label: str) -> dict[str, Any]:
        from probslot.config import config_to_dict, load_config

        stem = {"AE": "psa", "SA": "sa", "SA-NoA": "sa_noa", "PSA": "psa", "PSA-NoA": "psa_noa",
                "PSA-Proj": "psa_proj"}[label]  # fmt: skip
        cfg = config_to_dict(load_config(f"{self.prefix}_{stem}"))
        if label == "AE":
            cfg["model"] = merge(
                cfg["model"], {"preset": "AE", "grouping_kwargs": {}, "iters": None}
            )
        cfg.pop("prune", None)
        return merge(cfg, scale.settings.get("changes", {}))

    def plan(self, scale: Scale, seeds: int, overrides: Sequence[str] = ()) -> list[RunSpec]:
        if not any(o.startswith("data.root=") for o in overrides):
            raise ValueError(
                f"study {self.name!r} trains on the converted {self.paper_name} store: pass "
                f"data.root=STORE (convert the published files with `probslot data convert`; "
                "docs/data.md says which files and how)"
            )
        return super().plan(scale, seeds, overrides)

    def analyse(self, ctx: StudyContext) -> StudyOutput:
        out = super().analyse(ctx)
        from probslot.reports.tables import Table

        rows = []
        for label in self.models():
            ours = out.summary["models"].get(label, {})
            paper = self.paper.get(label, {})

            def both(key: str, ours_key: str, ours=ours, paper=paper) -> tuple[str, str]:
                st = ours.get(ours_key) or {}
                mine = "–" if st.get("mean") is None else f"{st['mean']:.2f}"
                return f"{paper[key]:.2f}" if key in paper else "–", mine

            rows.append((label, *both("smcc", "smcc_cross"), *both("r2", "r2_cross"),
                         *both("fg_ari", "fg_ari")))  # fmt: skip
        beside = Table(
            f"{self.name}: the paper's figures beside ours",
            ("model", "SMCC paper", "SMCC ours", "R² paper", "R² ours", "FG-ARI paper",
             "FG-ARI ours"),
            rows,
        )  # fmt: skip
        return StudyOutput(out.summary, [*out.tables, beside], out.figures, out.reading)


def _scales(tiny_models: list[str]) -> dict[str, Scale]:
    return {
        "gpu": Scale("gpu", 3, "6 models × 3 seeds from the paper configs on one GPU each "
                     "(see docs/results.md for the time)", {"changes": _GPU}, min_seeds=2),
        "tiny": Scale("tiny", 2, "smoke test on a fixture store: 4 steps per run",
                      {"changes": _TINY, "models": tiny_models,
                       "evaluate": TINY_EVALUATE}, min_seeds=2),
    }  # fmt: skip


@register_study
class CLEVR6Study(_RealDataStudy):
    name = "clevr6"
    prefix = "clevr6"
    paper_name = "CLEVR (with masks)"
    title = "clevr6: Table 2 and Table 4 on CLEVR6 (GPU)"
    description = (
        "AE, SA, SA-NoA, PSA, PSA-NoA and PSA-Proj from configs/clevr6_*.yaml (64×64, 7 slots) "
        "over seeds; cross-seed SMCC and R², FG-ARI and MSE beside the paper's Tables 2 and 4."
    )
    scales = _scales(["AE", "PSA-Proj"])
    paper = {
        "AE": {"smcc": 0.43, "r2": 0.26},
        "SA": {"smcc": 0.56, "r2": 0.55, "fg_ari": 0.96},
        "SA-NoA": {"smcc": 0.23, "r2": 0.24, "fg_ari": 0.62},
        "PSA-NoA": {"smcc": 0.56, "r2": 0.42, "fg_ari": 0.84},
        "PSA": {"smcc": 0.58, "r2": 0.48, "fg_ari": 0.85},
        "PSA-Proj": {"smcc": 0.66, "r2": 0.62, "fg_ari": 0.95},
    }


@register_study
class ObjectsRoomStudy(_RealDataStudy):
    name = "objects-room"
    prefix = "objects_room"
    paper_name = "Objects-Room"
    title = "objects-room: Table 2 and Table 4 on Objects-Room (GPU)"
    description = (
        "AE, SA, SA-NoA, PSA, PSA-NoA and PSA-Proj from configs/objects_room_*.yaml (64×64, "
        "7 slots) over seeds; cross-seed SMCC and R², FG-ARI and MSE beside the paper's Tables "
        "2 and 4."
    )
    scales = _scales(["PSA-Proj"])
    paper = {
        "AE": {"smcc": 0.46, "r2": 0.45},
        "SA": {"smcc": 0.66, "r2": 0.54, "fg_ari": 0.79},
        "SA-NoA": {"smcc": 0.48, "r2": 0.47, "fg_ari": 0.41},
        "PSA-NoA": {"smcc": 0.44, "r2": 0.45, "fg_ari": 0.78},
        "PSA": {"smcc": 0.66, "r2": 0.64, "fg_ari": 0.78},
        "PSA-Proj": {"smcc": 0.71, "r2": 0.62, "fg_ari": 0.81},
    }
