"""Evaluation of trained runs: `evaluate_run` (one run → eval.json) and `compare_runs` (runs of
one configuration trained with different seeds → compare.json). See ``docs/evaluation.md``."""

from probslot.evaluation.compare import (
    COMPARE_FILE,
    CompareConfig,
    compare_runs,
    config_differences,
)
from probslot.evaluation.evaluate import (
    EVAL_FILE,
    POSTERIOR_FILE,
    EvalConfig,
    encode_split,
    evaluate_run,
    match_objects_to_slots,
    min_images_for_identifiability,
)

__all__ = [
    "COMPARE_FILE",
    "EVAL_FILE",
    "POSTERIOR_FILE",
    "CompareConfig",
    "EvalConfig",
    "compare_runs",
    "config_differences",
    "encode_split",
    "evaluate_run",
    "match_objects_to_slots",
    "min_images_for_identifiability",
]
