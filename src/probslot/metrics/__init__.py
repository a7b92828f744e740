"""Evaluation metrics: pure tensor functions plus `torchmetrics.Metric` accumulators.

Identifiability (slot sets are (m images, k slots, d dims); ``slots_a`` is the target):
    `smcc`, `smcc_details` (paper Eq. 12), `slot_r2`, `slot_r2_details`, `sis`,
    `compositional_contrast` (paper Def. 1).
Matching: `match_slots`, `match_masks`, `permute_slots`, `hungarian`, `pairwise_cost`.
Segmentation ((b, h, w) integer label maps): `ari`, `fg_ari`, `mbo`, `best_overlap`,
    `masks_to_labels`, `ARIMetric`, `MBOMetric`.
Real images (with ignore masks): `mbo_instance`, `mbo_class`, `fg_ari_ignore`, `corloc`,
    `mask_boxes`, `object_metrics`.
Reconstruction: `mse`, `fg_mse`, `MSEMetric`.
Generation: `frechet_distance`, `gaussian_frechet_distance`, `kernel_inception_distance`,
    `FeatureExtractor`, `InceptionFeatures`, `extract_features`, `fid_metric`, `kid_metric`.

Conventions and defaults are documented in ``docs/metrics.md``.
"""

from probslot.metrics.generation import (
    FeatureExtractor,
    InceptionFeatures,
    KIDResult,
    extract_features,
    fid_metric,
    frechet_distance,
    gaussian_frechet_distance,
    kernel_inception_distance,
    kid_metric,
)
from probslot.metrics.identifiability import (
    SISResult,
    SlotR2Result,
    SMCCResult,
    compositional_contrast,
    min_images,
    sis,
    slot_r2,
    slot_r2_details,
    smcc,
    smcc_details,
    train_eval_split,
)
from probslot.metrics.matching import (
    SlotMatching,
    hungarian,
    match_masks,
    match_slots,
    match_slots_mapped,
    pairwise_cost,
    permute_slots,
)
from probslot.metrics.objects import (
    corloc,
    fg_ari_ignore,
    mask_boxes,
    mbo_class,
    mbo_instance,
    object_metrics,
)
from probslot.metrics.reconstruction import MSEMetric, fg_mse, mse
from probslot.metrics.regression import KRRConfig
from probslot.metrics.segmentation import (
    ARIMetric,
    MaskSource,
    MBOMetric,
    ari,
    best_overlap,
    contingency,
    fg_ari,
    masks_to_labels,
    mbo,
)

__all__ = [
    "ARIMetric",
    "FeatureExtractor",
    "InceptionFeatures",
    "KIDResult",
    "KRRConfig",
    "MBOMetric",
    "MSEMetric",
    "MaskSource",
    "SISResult",
    "SMCCResult",
    "SlotMatching",
    "SlotR2Result",
    "ari",
    "best_overlap",
    "compositional_contrast",
    "contingency",
    "corloc",
    "extract_features",
    "fg_ari",
    "fg_ari_ignore",
    "fg_mse",
    "fid_metric",
    "frechet_distance",
    "gaussian_frechet_distance",
    "hungarian",
    "kernel_inception_distance",
    "kid_metric",
    "mask_boxes",
    "masks_to_labels",
    "match_masks",
    "match_slots",
    "match_slots_mapped",
    "mbo",
    "mbo_class",
    "mbo_instance",
    "mse",
    "object_metrics",
    "pairwise_cost",
    "permute_slots",
    "sis",
    "slot_r2",
    "slot_r2_details",
    "smcc",
    "smcc_details",
    "min_images",
    "train_eval_split",
]
