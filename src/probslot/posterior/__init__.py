"""The dataset-level aggregate posterior q(z) of a PSA model and compact mixtures (paper §4).

- `AggregatePosterior`: q(z) = (1/M) Σ_i Σ_k π_ik N(z; μ_ik, σ²_ik) (Lemma 1); `fit`, `sample`,
  `sample_scenes`, `log_prob`, `save`/`load`, `merge`, `subset`, `compress`.
- `GaussianMixture`: a flat diagonal mixture with the same sampling/density/file API (what
  `compress` returns).
- `dirichlet_weights`: Eqs. 29–33 for stochastic encoders.
- `model_fingerprint`: the ``model_hash`` a posterior records, a hash of the model's weights.

Modules, bottom up (each imports only those before it): `mixture` (the flat mixture, file
format), `compress`, `fingerprint`, `aggregate`, `pruning`, `commands`.
"""

from probslot.posterior.aggregate import AggregatePosterior, DirichletPosterior, dirichlet_weights
from probslot.posterior.compress import CompressionReport, compress_mixture
from probslot.posterior.fingerprint import model_fingerprint
from probslot.posterior.mixture import GaussianMixture, load_mixture
from probslot.posterior.pruning import (
    DEFAULT_TAUS,
    KeepGateResult,
    PruneFigures,
    PruningReport,
    TauResult,
    headline_tau,
    keep_gate_result,
    prune_analysis,
    slot_count_mae,
)

__all__ = [
    "AggregatePosterior",
    "CompressionReport",
    "DirichletPosterior",
    "GaussianMixture",
    "compress_mixture",
    "dirichlet_weights",
    "load_mixture",
    "model_fingerprint",
    "DEFAULT_TAUS",
    "KeepGateResult",
    "PruneFigures",
    "PruningReport",
    "TauResult",
    "headline_tau",
    "keep_gate_result",
    "prune_analysis",
    "slot_count_mae",
]
