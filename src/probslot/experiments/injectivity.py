"""Study ``injectivity``: does identifiability follow the decoder's weak injectivity?

The paper's Theorem 2 assumes a piecewise-affine, weakly injective decoder (Assumption 8); a
sufficient condition (App. C) is leaky-ReLU layers of non-decreasing width. The authors' own code
uses ReLU (paper notes §11.7), and the paper only asserts that LeakyReLU satisfies the
assumption. This study trains PSA-Proj on the sprites setting of the ``sprites`` study with the
assumption kept or broken, one change at a time:

- **LeakyReLU** (the reference: encoder and additive spatial-broadcast decoder with leaky ReLU);
- **ReLU** everywhere (not injective where a unit is off: the authors' code);
- **non-additive** decoder (feature-level compositing, notes §11.5) and a **transformer**
  decoder (patch queries attending to slots; GELU): Theorem 2 does not need additivity;
- **narrow bottleneck**: decoder widths 16 → 4 → 16 (a narrowing layer breaks App. C's
  non-decreasing widths), and **wide**: 32 → 32 → 32.

Reported per variant: SMCC and R² against the ground-truth latents, SMCC across seeds (all
pairs), MSE and FG-ARI.
"""

from __future__ import annotations

from typing import Any

from probslot.experiments.images import (
    NOA_DECODER,
    PSA_KWARGS,
    SweepStudy,
    bar_figure,
    sprites_scales,
)
from probslot.experiments.study import Scale, Study, StudyContext, StudyOutput, register_study

__all__ = ["InjectivityStudy"]

_PSA_PROJ = {"model": {"preset": "PSA-Proj", "grouping_kwargs": PSA_KWARGS}}


def _variants(tiny: bool) -> dict[str, dict[str, Any]]:
    w = 8 if tiny else 16
    return {
        "LeakyReLU (reference)": {},
        "ReLU": {"model": {"encoder_kwargs": {"activation": "relu"},
                           "decoder_kwargs": {"activation": "relu"}}},
        "non-additive decoder": {"model": {"decoder": "noa", "decoder_kwargs": {
            **NOA_DECODER, "slot_channels": [w, w], "feature_dim": w, "channels": [w, w, w]}}},
        "transformer decoder": {"model": {"decoder": "transformer", "decoder_kwargs": {
            "channels": None, "init_size": None, "kernel_size": None, "patch_size": 4,
            "dim": 2 * w, "depth": 2, "heads": 4}}},
        "narrow bottleneck 16-4-16": {"model": {"decoder_kwargs": {"channels": [w, 4, w]}}},
        "wide 32-32-32": {"model": {"decoder_kwargs": {"channels": [2 * w, 2 * w, 2 * w]}}},
    }  # fmt: skip


@register_study
class InjectivityStudy(SweepStudy, Study):
    name = "injectivity"
    title = "injectivity: identifiability as the decoder's weak injectivity is kept or broken"
    description = (
        "PSA-Proj on the sprites setting with LeakyReLU vs ReLU, additive vs non-additive vs "
        "transformer decoders, and a narrowing vs a wide decoder; SMCC against ground truth and "
        "across seeds."
    )
    scales = sprites_scales(
        _PSA_PROJ,
        cpu=(2, "6 variants × 2 seeds × 2,000 steps: about 35 minutes on 2 cores"),
        gpu=(3, "6 variants × 3 seeds × 30,000 steps on one GPU"),
        tiny=(1, "smoke test: 2 of the variants (all are built), 4 steps per run"),
        tiny_settings={"tiny": True, "variants": ["LeakyReLU (reference)", "transformer decoder"]},
    )

    def variants(self, scale: Scale) -> dict[str, dict[str, Any]]:
        return _variants(bool(scale.settings.get("tiny")))

    def analyse(self, ctx: StudyContext) -> StudyOutput:
        stats = self.variant_stats(ctx)
        table = self.variant_table(
            f"injectivity: PSA-Proj, {ctx.seeds} seed(s) per variant (mean ± std)", stats
        )
        ref = stats.get("LeakyReLU (reference)", {}).get("smcc_gt", {}).get("mean")
        reading = []
        if ref is not None:
            for label, st in stats.items():
                v = st.get("smcc_gt", {}).get("mean")
                if label.startswith("LeakyReLU") or v is None:
                    continue
                reading.append(
                    f"{label}: SMCC vs GT {v:.3f} ({v - ref:+.3f} against the LeakyReLU "
                    f"reference {ref:.3f}); FG-ARI {st['fg_ari']['mean']:.3f}, "
                    f"MSE {st['mse']['mean']:.4f}."
                )
        fig = bar_figure(
            {k: v["smcc_gt"] for k, v in stats.items()}, ctx.figure_path("injectivity_smcc.png"),
            "SMCC vs ground-truth latents (mean ± std over seeds)",
            "PSA-Proj: decoder assumptions kept or broken",
        )  # fmt: skip
        return StudyOutput({"variants": stats}, [table], [fig], reading)
