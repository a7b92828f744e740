"""Image likelihoods p(x | slots) for training: MSE and the discretised Gaussian of the authors' code.

Both work in the model's internal image space [−1, 1] and return the **mean negative
log-likelihood per sub-pixel** (averaged over batch, channels, height and width), a scalar. The
mean (not the per-image sum) keeps the loss scale independent of image size and batch size, so one
learning rate fits 32×32 and 128×128 runs; multiply by 3·H·W for nats per image.

Registry ``LIKELIHOODS``: ``mse`` → `MSE`, ``dgauss`` → `DiscretisedGaussian`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.special import log_ndtr

from probslot.registry import Registry

__all__ = ["LIKELIHOODS", "MSE", "DiscretisedGaussian", "build_likelihood", "log_diff_ndtr"]

LIKELIHOODS: Registry[nn.Module] = Registry("likelihood")


def _check_pair(recon: Tensor, target: Tensor) -> None:
    if not isinstance(recon, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"recon and target must be tensors; got {type(recon).__name__} and {type(target).__name__}"
        )
    if recon.shape != target.shape:
        raise ValueError(
            f"recon and target must have the same shape (batch, 3, H, W); got {tuple(recon.shape)} "
            f"and {tuple(target.shape)}"
        )


def _upcast(x: Tensor) -> Tensor:
    """Half/bfloat16 → float32: the NLL (and the 2/255-wide bins) need more than 8 mantissa bits."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@LIKELIHOODS.register("mse")
class MSE(nn.Module):
    """Gaussian likelihood with fixed unit variance up to constants: mean (recon − target)².

    nll(recon (b, 3, H, W), target (b, 3, H, W)) → scalar, both in [−1, 1]. No parameters.
    """

    def nll(self, recon: Tensor, target: Tensor) -> Tensor:
        _check_pair(recon, target)
        return (_upcast(recon) - _upcast(target)).pow(2).mean()

    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        return self.nll(recon, target)


def log_diff_ndtr(upper: Tensor, lower: Tensor) -> Tensor:
    """log(Φ(upper) − Φ(lower)) for upper > lower, stable in both tails.

    When both are positive, uses the symmetry Φ(a) − Φ(b) = Φ(−b) − Φ(−a) so the subtraction
    happens between small numbers; the difference itself is formed as log Φ(a) + log(1 − e^{log Φ(b) − log Φ(a)}).
    """
    flip = lower > 0
    a = torch.where(flip, -lower, upper)
    b = torch.where(flip, -upper, lower)
    log_a, log_b = log_ndtr(a), log_ndtr(b)
    return log_a + torch.log(-torch.expm1(log_b - log_a))


@LIKELIHOODS.register("dgauss")
class DiscretisedGaussian(nn.Module):
    """Discretised Gaussian likelihood over 256 bins in [−1, 1] (the authors' ``shared_dgauss``, notes §7).

    Sub-pixel values are 8-bit levels x = 2i/255 − 1, i ∈ {0..255}; each owns a bin of width 2/255.
        p(x | μ, σ) = Φ((x + 1/255 − μ)/σ) − Φ((x − 1/255 − μ)/σ),
    with the two edge bins open: p(−1) = Φ((−1 + 1/255 − μ)/σ) and p(1) = 1 − Φ((1 − 1/255 − μ)/σ),
    so the 256 probabilities sum to 1. μ is the decoder output; σ = exp(log σ) is one learned
    scale shared by all pixels (``per_channel=True``: one per RGB channel), initialised at 0.1,
    clamped below at ``min_scale``. The target is rounded to the nearest level first, so
    continuous-valued images (e.g. synthetic sprites) are scored like 8-bit images.

    ``autoregressive=True`` adds the authors' RGB channel coupling with learned scalar
    coefficients (α, β, γ, initialised at 0): μ_G ← μ_G + α·x_R, μ_B ← μ_B + β·x_R + γ·x_G, where
    x is the target (teacher forcing, as PixelCNN++). It is off by default: with it the decoder
    output alone is no longer the predictive mean, and it affects only the loss, not `recon`.

    nll(recon (b, 3, H, W), target (b, 3, H, W)) → scalar mean NLL in nats per sub-pixel.
    """

    def __init__(
        self,
        init_scale: float = 0.1,
        per_channel: bool = False,
        autoregressive: bool = False,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        if (
            isinstance(init_scale, bool)
            or not isinstance(init_scale, (int, float))
            or init_scale <= 0
        ):
            raise ValueError(f"init_scale must be a positive float; got {init_scale!r}")
        if isinstance(min_scale, bool) or not isinstance(min_scale, (int, float)) or min_scale <= 0:
            raise ValueError(f"min_scale must be a positive float; got {min_scale!r}")
        if min_scale >= init_scale:
            raise ValueError(f"min_scale ({min_scale}) must be below init_scale ({init_scale})")
        self.min_scale = float(min_scale)
        shape = (1, 3, 1, 1) if per_channel else (1, 1, 1, 1)
        self.log_scale = nn.Parameter(torch.full(shape, math.log(init_scale)))
        self.autoregressive = bool(autoregressive)
        if self.autoregressive:
            self.coeffs = nn.Parameter(torch.zeros(3))  # α (R→G), β (R→B), γ (G→B)
        else:
            self.register_parameter("coeffs", None)

    @property
    def scale(self) -> Tensor:
        """The learned σ (shape (1, 1|3, 1, 1)), clamped at ``min_scale``."""
        return self.log_scale.exp().clamp_min(self.min_scale)

    @staticmethod
    def quantise(target: Tensor) -> Tensor:
        """Round values in [−1, 1] to the nearest of the 256 levels 2i/255 − 1."""
        return torch.round((target.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0

    def log_prob(self, recon: Tensor, target: Tensor) -> Tensor:
        """(b, 3, H, W) log p(x | μ = recon) per sub-pixel."""
        _check_pair(recon, target)
        if recon.ndim != 4 or recon.shape[1] != 3:
            raise ValueError(f"recon must be (batch, 3, H, W); got {tuple(recon.shape)}")
        x = self.quantise(_upcast(target))
        mean = _upcast(recon)
        if self.coeffs is not None:
            alpha, beta, gamma = self.coeffs
            r, g, bl = mean.unbind(dim=1)
            xr, xg = x[:, 0], x[:, 1]
            mean = torch.stack([r, g + alpha * xr, bl + beta * xr + gamma * xg], dim=1)
        inv = 1.0 / self.scale
        half = 1.0 / 255.0
        upper = (x + half - mean) * inv
        lower = (x - half - mean) * inv
        inner = log_diff_ndtr(upper, lower)
        low_edge = log_ndtr(upper)  # x = −1: all mass below the upper edge
        high_edge = log_ndtr(-lower)  # x = +1: all mass above the lower edge
        lp = torch.where(x < -1.0 + half, low_edge, inner)
        return torch.where(x > 1.0 - half, high_edge, lp)

    def nll(self, recon: Tensor, target: Tensor) -> Tensor:
        return -self.log_prob(recon, target).mean()

    def forward(self, recon: Tensor, target: Tensor) -> Tensor:
        return self.nll(recon, target)


def build_likelihood(name: str, **kwargs) -> nn.Module:
    """Build a registered likelihood by name (``mse`` or ``dgauss``)."""
    return LIKELIHOODS.build(name, **kwargs)
