"""Maps fitted from one slot set to another: affine least squares and RBF kernel ridge.

All functions are batched over a leading "problem" axis s (one problem per slot index) and work
in float64. They are the building blocks of SMCC, slot R² and SIS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from probslot.validation import check_float, check_int

__all__ = [
    "KRRConfig",
    "fit_predict",
    "fit_predict_affine",
    "fit_predict_krr",
    "r2_per_problem",
    "rbf_kernel",
    "standardize",
]

Transform = Literal["none", "affine", "krr"]


@dataclass(frozen=True)
class KRRConfig:
    """RBF kernel ridge settings.

    Attributes:
        alpha: ridge strength (the authors' code uses sklearn's default 1.0).
        gamma: RBF width, k(x, y) = exp(−γ‖x − y‖²); None → 1 / n_features (sklearn's default).
        exact_max: solve exactly when the train split has at most this many points; otherwise use a
            Nyström approximation (an n² solve per slot is too slow for 8,000 points on a CPU).
        n_components: Nyström landmarks, drawn uniformly without replacement from the train split.
        seed: seed for the landmark draw (results are deterministic for a fixed seed).
    """

    alpha: float = 1.0
    gamma: float | None = None
    exact_max: int = 2000
    n_components: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        check_float("KRRConfig.alpha", self.alpha, low=0.0, low_open=True)
        if self.gamma is not None:
            check_float("KRRConfig.gamma", self.gamma, low=0.0, low_open=True, hint="or None")
        check_int("KRRConfig.exact_max", self.exact_max, low=1)
        check_int("KRRConfig.n_components", self.n_components, low=1)
        check_int("KRRConfig.seed", self.seed)


def standardize(train: Tensor, evaluation: Tensor, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Scale (s, n, p) data to zero mean and unit variance per column using train-split statistics
    (sklearn `StandardScaler`: population std, constant columns left unscaled)."""
    mean = train.mean(1, keepdim=True)
    std = train.std(1, keepdim=True, correction=0)
    std = torch.where(std > eps, std, torch.ones_like(std))
    return (train - mean) / std, (evaluation - mean) / std


def fit_predict_affine(x_train: Tensor, y_train: Tensor, x_eval: Tensor) -> Tensor:
    """Least-squares affine map y ≈ x W + c per problem.

    Args:
        x_train: (s, n, p), y_train: (s, n, q), x_eval: (s, n_eval, p).

    Returns:
        (s, n_eval, q) predictions.
    """
    # Centring both sides is equivalent to a ones column in the design; normal equations with a
    # tiny relative jitter are fast and accurate for the standardised, well-conditioned inputs.
    xm, ym = x_train.mean(1, keepdim=True), y_train.mean(1, keepdim=True)
    xc = x_train - xm
    gram = xc.transpose(1, 2) @ xc  # (s, p, p)
    jitter = 1e-10 * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-300)
    gram = gram + jitter.view(-1, 1, 1) * torch.eye(gram.shape[-1], dtype=gram.dtype)
    chol = torch.linalg.cholesky(gram)
    coef = torch.cholesky_solve(xc.transpose(1, 2) @ (y_train - ym), chol)  # (s, p, q)
    return (x_eval - xm) @ coef + ym


def rbf_kernel(x: Tensor, y: Tensor, gamma: float) -> Tensor:
    """(s, n, m) RBF kernel exp(−γ‖x_i − y_j‖²) for x (s, n, p), y (s, m, p)."""
    sq = (
        (x * x).sum(-1, keepdim=True)
        + (y * y).sum(-1).unsqueeze(-2)
        - 2.0 * x @ y.transpose(-1, -2)
    )
    return torch.exp(-gamma * sq.clamp_min(0.0))


def fit_predict_krr(
    x_train: Tensor, y_train: Tensor, x_eval: Tensor, config: KRRConfig | None = None
) -> Tensor:
    """RBF kernel ridge regression per problem, without intercept (as sklearn `KernelRidge`).

    Exact: c = (K + αI)⁻¹ Y, ŷ = K_eval c. Nyström (train split > ``exact_max``): with m
    landmarks Z drawn from the train split, β = (K_ZX K_XZ + α K_ZZ)⁻¹ K_ZX Y and
    ŷ = K_eval,Z β, which is exact KRR on the rank-m Nyström kernel K_XZ K_ZZ⁻¹ K_ZX.

    Args:
        x_train: (s, n, p), y_train: (s, n, q), x_eval: (s, n_eval, p).

    Returns:
        (s, n_eval, q) predictions.
    """
    cfg = config or KRRConfig()
    gamma = cfg.gamma if cfg.gamma is not None else 1.0 / x_train.shape[-1]
    s, n, _ = x_train.shape
    out = []
    if n <= cfg.exact_max:
        eye = torch.eye(n, dtype=x_train.dtype, device=x_train.device)
        for i in range(s):
            k_tt = rbf_kernel(x_train[i], x_train[i], gamma)
            chol = torch.linalg.cholesky(k_tt + cfg.alpha * eye)
            coef = torch.cholesky_solve(y_train[i], chol)
            out.append(rbf_kernel(x_eval[i], x_train[i], gamma) @ coef)
        return torch.stack(out)
    gen = torch.Generator().manual_seed(cfg.seed)
    m = min(cfg.n_components, n)
    for i in range(s):
        idx = torch.randperm(n, generator=gen)[:m].to(x_train.device)
        z = x_train[i, idx]  # (m, p) landmarks
        k_zz = rbf_kernel(z, z, gamma)
        k_nz = rbf_kernel(x_train[i], z, gamma)  # (n, m)
        # Subset-of-regressors form: β = (K_zn K_nz + α K_zz)⁻¹ K_zn Y, ŷ = K_ez β — the same
        # predictor as ridge on the Nyström features, with one n·m² product.
        lhs = k_nz.T @ k_nz + cfg.alpha * k_zz
        lhs.diagonal().add_(1e-10 * lhs.diagonal().mean())
        # Cholesky rather than LU: PD by construction, and much faster under CPU contention.
        beta = torch.cholesky_solve(k_nz.T @ y_train[i], torch.linalg.cholesky(lhs))
        out.append(rbf_kernel(x_eval[i], z, gamma) @ beta)
    return torch.stack(out)


def fit_predict(
    transform: Transform,
    x_train: Tensor,
    y_train: Tensor,
    x_eval: Tensor,
    krr: KRRConfig | None = None,
) -> Tensor:
    """Dispatch to the map named by ``transform`` (``none`` returns ``x_eval`` unchanged)."""
    if transform == "none":
        return x_eval
    if transform == "affine":
        return fit_predict_affine(x_train, y_train, x_eval)
    if transform == "krr":
        return fit_predict_krr(x_train, y_train, x_eval, krr)
    raise ValueError(f"transform must be 'none', 'affine' or 'krr'; got {transform!r}")


def r2_per_problem(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """(s,) coefficient of determination averaged uniformly over outputs, as sklearn `r2_score`
    (multioutput='uniform_average'): a constant target column scores 1 if predicted exactly, else 0.

    Args:
        y_true, y_pred: (s, n, q).
    """
    ss_res = (y_true - y_pred).square().sum(1)
    ss_tot = (y_true - y_true.mean(1, keepdim=True)).square().sum(1)
    r2 = torch.where(ss_tot > 0, 1.0 - ss_res / ss_tot.clamp_min(1e-300), torch.ones_like(ss_res))
    r2 = torch.where((ss_tot == 0) & (ss_res > 0), torch.zeros_like(r2), r2)
    return r2.mean(-1)
