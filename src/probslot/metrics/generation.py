"""Generation quality: Fréchet distance (FID) and kernel inception distance (KID) of features.

The maths works on any features; Inception features need weights supplied by the user as a file
(`InceptionFeatures.from_file`): nothing is ever downloaded. For batch-wise accumulation use
`fid_metric` / `kid_metric`, thin wrappers over torchmetrics that accept any `FeatureExtractor`.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from probslot.validation import check_float, check_int

if TYPE_CHECKING:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

__all__ = [
    "FeatureExtractor",
    "InceptionFeatures",
    "KIDResult",
    "extract_features",
    "fid_metric",
    "frechet_distance",
    "gaussian_frechet_distance",
    "kernel_inception_distance",
    "kid_metric",
]

_WEIGHTS_HELP = (
    "probslot never downloads weights. Supply a TorchScript Inception-v3 feature network, e.g. "
    "the 'inception-2015-12-05.pt' file used by StyleGAN2-ADA / clean-fid (uint8 (b, 3, H, W) "
    "input, called with return_features=True, 2048-d output), and pass its path: "
    "InceptionFeatures.from_file('path/to/inception-2015-12-05.pt')."
)


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images (b, 3, H, W) float in [0, 1] to features (b, num_features)."""

    num_features: int

    def __call__(self, images: Tensor) -> Tensor: ...


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features from a user-supplied TorchScript file (no download).

    Call with images (b, 3, H, W) float in [0, 1]; returns (b, 2048) float features.
    """

    def __init__(
        self,
        network: nn.Module,
        num_features: int = 2048,
        input_range: Literal["uint8", "unit"] = "uint8",
        return_features_kwarg: bool = True,
    ) -> None:
        super().__init__()
        self.network = network.eval()
        self.num_features = num_features
        self.input_range = input_range
        self.return_features_kwarg = return_features_kwarg

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        num_features: int = 2048,
        input_range: Literal["uint8", "unit"] = "uint8",
        return_features_kwarg: bool = True,
    ) -> InceptionFeatures:
        """Load a TorchScript feature network (or a `torch.export` ``.pt2`` archive) from ``path``
        onto the CPU. The network is called as ``network(x, return_features=True)`` with ``x``
        uint8 (b, 3, H, W) by default; set ``input_range='unit'`` for float [0, 1] input and
        ``return_features_kwarg=False`` for a plain ``network(x)`` call.

        Raises:
            FileNotFoundError: ``path`` does not exist (the message says how to supply the file).
            ValueError: the file is not a TorchScript archive.
        """
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(
                f"Inception weights file not found: {str(p)!r}. {_WEIGHTS_HELP}"
            )
        try:
            if p.suffix == ".pt2":  # a torch.export archive
                network = torch.export.load(str(p)).module()
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    network = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError subclasses for non-archives
            raise ValueError(
                f"{str(p)!r} is not a TorchScript archive or torch.export .pt2 file "
                f"({type(exc).__name__}). {_WEIGHTS_HELP}"
            ) from exc
        return cls(network, num_features, input_range, return_features_kwarg)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (b, 3, H, W) in [0, 1]; got {tuple(images.shape)}")
        x = images.clamp(0, 1)
        if self.input_range == "uint8":
            x = (x * 255).round().to(torch.uint8)
        if self.return_features_kwarg:
            feats = self.network(x, return_features=True)
        else:
            feats = self.network(x)
        return feats.reshape(images.shape[0], -1).float()


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images: Tensor, batch_size: int = 64) -> Tensor:
    """(m, num_features) features of images (m, 3, H, W) in [0, 1], computed in batches."""
    if images.ndim != 4:
        raise ValueError(f"images must be (m, 3, H, W); got {tuple(images.shape)}")
    return torch.cat(
        [extractor(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )


def _check_feats(feats_a: Tensor, feats_b: Tensor, min_rows: int) -> None:
    for name, f in (("feats_a", feats_a), ("feats_b", feats_b)):
        if f.ndim != 2:
            raise ValueError(f"{name} must be (m, f) features; got {tuple(f.shape)}")
        if f.shape[0] < min_rows:
            raise ValueError(f"{name} needs at least {min_rows} rows; got {f.shape[0]}")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(
            f"feature sizes differ: feats_a has {feats_a.shape[1]}, feats_b has {feats_b.shape[1]}; "
            "extract both with the same feature extractor"
        )


def _sqrtm_psd(mat: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(mat)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def gaussian_frechet_distance(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """Fréchet (2-Wasserstein²) distance between N(μ_a, Σ_a) and N(μ_b, Σ_b):

        ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}

    in float64 via symmetric eigendecompositions (no complex sqrtm round-off).
    """
    mu_a, mu_b, cov_a, cov_b = (x.double() for x in (mu_a, mu_b, cov_a, cov_b))
    root_a = _sqrtm_psd(cov_a)
    inner = root_a @ cov_b @ root_a
    inner = 0.5 * (inner + inner.T)
    tr_cross = torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum()
    dist = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2.0 * tr_cross
    return float(dist.clamp_min(0.0))


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """FID between two feature sets (m_a, f) and (m_b, f): the Fréchet distance of Gaussians with
    their sample means and unbiased covariances (float64)."""
    _check_feats(feats_a, feats_b, 2)
    a, b = feats_a.detach().double(), feats_b.detach().double()
    return gaussian_frechet_distance(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


@dataclass(frozen=True)
class KIDResult:
    """KID estimate: mean and std of the unbiased MMD² over ``subsets`` random subsets."""

    mean: float
    std: float
    subsets: int
    subset_size: int


def _poly_mmd2(x: Tensor, y: Tensor, degree: int, gamma: float | None, coef: float) -> Tensor:
    g = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (g * x @ x.T + coef) ** degree
    k_yy = (g * y @ y.T + coef) ** degree
    k_xy = (g * x @ y.T + coef) ** degree
    m = x.shape[0]
    sxx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    syy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2.0 * k_xy.mean()


def kernel_inception_distance(
    feats_a: Tensor,
    feats_b: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> KIDResult:
    """KID (Bińkowski et al. 2018): unbiased MMD² with the kernel k(x, y) = (γ xᵀy + coef)^degree
    (γ = 1/f by default), averaged over random equal-size subsets drawn without replacement.
    ``subset_size`` is capped at the smaller set size. Float64, seeded."""
    _check_feats(feats_a, feats_b, 2)
    subsets = check_int("subsets", subsets, low=1)
    subset_size = check_int("subset_size", subset_size, low=2)
    degree = check_int("degree", degree, low=1)
    seed = check_int("seed", seed)
    coef = check_float("coef", coef)
    if gamma is not None:
        gamma = check_float("gamma", gamma, low=0.0, low_open=True)
    size = min(subset_size, feats_a.shape[0], feats_b.shape[0])  # ≥ 2: _check_feats checked rows
    a, b = feats_a.detach().double(), feats_b.detach().double()
    gen = torch.Generator().manual_seed(seed)
    vals = torch.stack(
        [
            _poly_mmd2(
                a[torch.randperm(a.shape[0], generator=gen)[:size]],
                b[torch.randperm(b.shape[0], generator=gen)[:size]],
                degree,
                gamma,
                coef,
            )
            for _ in range(subsets)
        ]
    )
    std = float(vals.std()) if subsets > 1 else math.nan
    return KIDResult(mean=float(vals.mean()), std=std, subsets=subsets, subset_size=size)


def _as_module(extractor: FeatureExtractor) -> nn.Module:
    if isinstance(extractor, nn.Module):
        return extractor
    raise TypeError(
        f"extractor must be a torch.nn.Module with a num_features attribute; got {type(extractor).__name__}"
    )


def fid_metric(extractor: FeatureExtractor, **kwargs) -> FrechetInceptionDistance:
    """torchmetrics `FrechetInceptionDistance` over ``extractor``: ``update(images in [0, 1],
    real=bool)`` then ``compute()``. Works offline (torch-fidelity is not needed for a custom
    feature module). Extra kwargs go to torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=_as_module(extractor), normalize=True, **kwargs)


def kid_metric(
    extractor: FeatureExtractor, subsets: int = 100, subset_size: int = 1000, **kwargs
) -> KernelInceptionDistance:
    """torchmetrics `KernelInceptionDistance` over ``extractor`` (see `fid_metric`)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    return KernelInceptionDistance(
        feature=_as_module(extractor),
        normalize=True,
        subsets=subsets,
        subset_size=subset_size,
        **kwargs,
    )
