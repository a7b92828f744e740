"""Diagonal Gaussian mixtures: sampling, chunked log-density and safetensors files.

`GaussianMixture` is the flat object p(z) = Σ_c w_c N(z; m_c, diag(v_c)) over C components in
R^d. `AggregatePosterior` (the paper's q(z), Lemma 1) builds on it and adds the per-image
structure; `AggregatePosterior.compress` returns a plain `GaussianMixture`, so both share one API:
`sample`, `sample_scenes`, `log_prob`, `save` / `load`, `to`.

This module is the bottom of the package: it imports neither `aggregate` nor `compress`. A
subclass registers its file kind by defining ``_KIND`` (see `GaussianMixture.__init_subclass__`),
which is how `load_mixture` returns an `AggregatePosterior` without importing it.

Axis legend: see `probslot.typing` (c = mixture components, p = query points).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probslot.validation import check_int, check_positive_int, is_int

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "GaussianMixture", "load_mixture"]

FORMAT_NAME = "probslot.posterior"
FORMAT_VERSION = 1
_HEADER_KEY = "probslot"

# Elements of one (points × components) block in `log_prob` and the EM E-step: 2**20 float32 =
# 4 MiB, small enough that the element-wise passes after the matmul stay in cache.
_BLOCK_ELEMENTS = 1 << 20


def simplex_tolerance(dtype: torch.dtype) -> float:
    """Absolute tolerance for 'sums to one' checks: 1e-3, looser for half-precision dtypes."""
    return max(1e-3, 10.0 * torch.finfo(dtype).eps)


def check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None; got {type(generator).__name__}"
        )
    return generator


def normalise_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON round-tripped copy of `metadata`, so what is held equals what `load` returns."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict or None; got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"metadata must be JSON-serialisable (str keys; str/int/float/bool/None/list/dict "
            f"values, no NaN) because it is stored in the safetensors header; {err}"
        ) from None


def _check_float_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    return x


def check_mixture_tensors(weights: Tensor, means: Tensor, variances: Tensor) -> None:
    """Validate flat mixture parameters: weights (c,), means (c, d), variances (c, d)."""
    for name, x in (("weights", weights), ("means", means), ("variances", variances)):
        _check_float_tensor(name, x)
    if means.ndim != 2:
        raise ValueError(f"means must be (components, dim); got shape {tuple(means.shape)}")
    c, d = means.shape
    if c == 0 or d == 0:
        raise ValueError(
            f"a mixture needs at least one component of dimension >= 1; got means of shape {(c, d)}"
        )
    if variances.shape != means.shape:
        raise ValueError(
            f"variances must have the shape of means {(c, d)}; got {tuple(variances.shape)}"
        )
    if weights.shape != (c,):
        raise ValueError(f"weights must be ({c},) to match means; got {tuple(weights.shape)}")
    if not (weights.dtype == means.dtype == variances.dtype):
        raise TypeError(
            f"weights, means and variances must share a dtype; got {weights.dtype}, "
            f"{means.dtype}, {variances.dtype} (convert them with .to(dtype))"
        )
    if not (weights.device == means.device == variances.device):
        raise ValueError(
            f"weights, means and variances must be on one device; got {weights.device}, "
            f"{means.device}, {variances.device}"
        )
    if not bool(torch.isfinite(means).all()):
        raise ValueError("means must be finite; found NaN or inf")
    if not bool(((variances > 0) & torch.isfinite(variances)).all()):
        bad = variances[~((variances > 0) & torch.isfinite(variances))][0].item()
        raise ValueError(f"variances must be finite and > 0; found {bad}")
    if not bool(((weights >= 0) & torch.isfinite(weights)).all()):
        raise ValueError("weights must be finite and >= 0; found a negative or non-finite weight")
    total = weights.double().sum().item()
    tol = simplex_tolerance(weights.dtype)
    if abs(total - 1.0) > tol:
        raise ValueError(
            f"weights must sum to 1 (within {tol:g}); got {total:.6g}; divide them by their sum"
        )


def atomic_save_safetensors(tensors: dict[str, Tensor], header: dict[str, Any], path: Path) -> None:
    """Write `tensors` with the JSON `header` to `path` atomically (temp file + os.replace)."""
    from safetensors.torch import save_file

    from probslot.atomic import atomic_path

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, tmp, metadata={_HEADER_KEY: json.dumps(header, sort_keys=True)})


def read_safetensors(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and the probslot JSON header of a file written by `atomic_save_safetensors`."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no posterior file at {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            raw = (f.metadata() or {}).get(_HEADER_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except SafetensorError as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    if raw is None:
        raise ValueError(
            f"{path} has no {_HEADER_KEY!r} header, so it was not written by probslot's "
            "posterior save(); write it with AggregatePosterior.save / GaussianMixture.save"
        )
    header = json.loads(raw)
    if header.get("format") != FORMAT_NAME:
        raise ValueError(
            f"{path}: header format must be {FORMAT_NAME!r}; got {header.get('format')!r}"
        )
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses format version {header.get('format_version')}, newer than this "
            f"probslot reads ({FORMAT_VERSION}); upgrade probslot"
        )
    return tensors, header


def _check_dim(path: Path, header: dict[str, Any], dim: int | None) -> None:
    if dim is not None and header["dim"] != check_positive_int("dim", dim):
        raise ValueError(
            f"{path} holds a posterior over {header['dim']}-dimensional slots but dim={dim} was "
            "expected; it was fitted with a different model (slot_dim) — refit it with this model"
        )


def log_density_params(
    log_weights: Tensor, means: Tensor, variances: Tensor, shift: Tensor
) -> tuple[Tensor, Tensor]:
    """Matmul form of a diagonal-Gaussian mixture's per-component log-joint.

    With x = z - shift, m = means - shift, v = variances:
    log w_c + log N(z; m_c, v_c) = [x², x] @ W + b with
    W = [-1/(2v) ; m/v]ᵀ (2d, c) and b_c = log w_c - ½(d log 2π + Σ log v_c + Σ m_c²/v_c).
    Centring by `shift` (the mixture's mean) limits cancellation in low precision.

    Returns W (2d, c) and b (c,).
    """
    m = means - shift  # (c, d)
    inv_v = variances.reciprocal()  # (c, d)
    d = means.shape[1]
    w = torch.cat([-0.5 * inv_v, m * inv_v], dim=1).T  # (2d, c)
    b = log_weights - 0.5 * (
        d * math.log(2 * math.pi) + variances.log().sum(1) + (m * m * inv_v).sum(1)
    )
    return w, b


def _logsumexp_(x: Tensor) -> Tensor:
    """(p,) log Σ_c exp x[p, c], overwriting x (p, c): ~2× faster than torch.logsumexp."""
    peak = x.amax(1, keepdim=True)  # (p, 1)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # all -inf rows
    return x.sub_(peak).exp_().sum(1).log_().add_(peak[:, 0])


def point_features(z: Tensor, shift: Tensor) -> Tensor:
    """(p, 2d) features [x², x] of points x = z - shift for `log_density_params`."""
    x = z - shift
    return torch.cat([x * x, x], dim=1)


def draw_from_cdf(cdf: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n,) int64 indices drawn from the unnormalised cumulative weights `cdf` (float64)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=cdf.device) * cdf[-1]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[0] - 1)


#: file kind (the header's ``"kind"``) → the class that reads it; see `GaussianMixture.__init_subclass__`
_KINDS: dict[str, type[GaussianMixture]] = {}


class GaussianMixture:
    """A diagonal Gaussian mixture p(z) = Σ_c w_c N(z; m_c, diag(v_c)) in R^d.

    Args:
        weights:   (c,) mixing weights on the simplex (within `simplex_tolerance`). They are held
                   as given; `sample` and `log_prob` use them divided by their sum.
        means:     (c, d) component means.
        variances: (c, d) diagonal variances, > 0.
        metadata:  JSON-serialisable dict kept with the mixture and written by `save`.

    Tensors are held, not copied; do not modify them in place afterwards.
    """

    _KIND = "GaussianMixture"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass with its own file kind registers itself, so that `load_mixture` can return it
        # while this module imports no subclass (no import cycle with aggregate.py).
        super().__init_subclass__(**kwargs)
        if "_KIND" in vars(cls):
            known = _KINDS.get(cls._KIND)
            if known is not None and known.__qualname__ != cls.__qualname__:
                raise TypeError(
                    f"mixture kind {cls._KIND!r} is already read by {known.__qualname__}"
                )
            _KINDS[cls._KIND] = cls

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        variances: Tensor,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        check_mixture_tensors(weights, means, variances)
        self._set_components(weights, means, variances, metadata)

    def _set_components(
        self,
        weights: Tensor,
        means: Tensor,
        variances: Tensor,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self._weights = weights
        self._means = means
        self._variances = variances
        self._metadata = normalise_metadata(metadata)
        self._cdf: Tensor | None = None
        self._shift: Tensor | None = None

    # ------------------------------------------------------------------ properties
    @property
    def num_components(self) -> int:
        """Number of mixture components c."""
        return self._means.shape[0]

    @property
    def dim(self) -> int:
        """Slot dimension d."""
        return self._means.shape[1]

    @property
    def weights(self) -> Tensor:
        """(c,) mixing weights, summing to 1 (within `simplex_tolerance`)."""
        return self._weights

    @property
    def means(self) -> Tensor:
        """(c, d) component means."""
        return self._means

    @property
    def variances(self) -> Tensor:
        """(c, d) diagonal component variances."""
        return self._variances

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the JSON metadata (model hash, dataset, ...)."""
        return json.loads(json.dumps(self._metadata))

    @property
    def dtype(self) -> torch.dtype:
        return self._means.dtype

    @property
    def device(self) -> torch.device:
        return self._means.device

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_components={self.num_components}, dim={self.dim}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> GaussianMixture:
        """A copy on `device` and/or in floating `dtype` (self when nothing changes)."""
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
        return GaussianMixture(
            self._weights.to(device=device, dtype=dtype),
            self._means.to(device=device, dtype=dtype),
            self._variances.to(device=device, dtype=dtype),
            self._metadata,
        )

    # ------------------------------------------------------------------ sampling
    def _component_cdf(self) -> Tensor:
        # float64 cumulative weights: inverse-CDF sampling has no category limit (unlike
        # torch.multinomial's 2**24) and never picks a zero-weight component.
        if self._cdf is None:
            self._cdf = torch.cumsum(self._weights.double(), 0)
        return self._cdf

    def sample_components(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n,) int64 component indices drawn with probabilities `weights`."""
        check_int("n", n, low=0)
        check_generator(generator)
        return draw_from_cdf(self._component_cdf(), n, generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, d) i.i.d. draws z ~ p(z): a component c ~ w, then z = m_c + sqrt(v_c) ε.

        `n = 0` returns an empty (0, d) tensor; negative `n` raises ValueError.
        """
        idx = self.sample_components(n, generator)
        eps = torch.randn((n, self.dim), generator=generator, dtype=self.dtype, device=self.device)
        return self._means[idx] + self._variances[idx].sqrt() * eps

    def _default_num_slots(self) -> int | None:
        value = self._metadata.get("num_slots")
        return value if is_int(value) else None

    def sample_scenes(
        self,
        num_scenes: int,
        num_slots: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """(num_scenes, num_slots, d) slots drawn i.i.d. from p(z), ready for `model.decode`.

        Every slot of every scene is an independent draw, as in the paper's compositional
        generation (Sec. 4). `num_slots` defaults to the number of slots K of the model the
        mixture was fitted with (kept in the metadata).
        """
        check_int("num_scenes", num_scenes, low=0)
        if num_slots is None:
            num_slots = self._default_num_slots()
            if num_slots is None:
                raise ValueError(
                    "num_slots is required: this mixture's metadata has no 'num_slots'; pass "
                    "the number of slots the decoder expects, e.g. num_slots=7"
                )
        check_positive_int("num_slots", num_slots)
        z = self.sample(num_scenes * num_slots, generator)  # (s*k, d)
        return z.reshape(num_scenes, num_slots, self.dim)

    # ------------------------------------------------------------------ density
    def _centre(self) -> Tensor:
        if self._shift is None:
            # Any shift is exact; the weighted mean keeps |z - shift| small. Native dtype (no
            # float64 copy of a possibly huge means tensor).
            w = self._weights / self._weights.sum()
            self._shift = w @ self._means  # (d,)
        return self._shift

    def log_prob(self, z: Tensor, chunk_size: int = 2048) -> Tensor:
        """log p(z) for points z (..., d) → (...), exactly, in bounded memory.

        Components are processed `chunk_size` at a time (and points in blocks of at most
        2**20 / chunk_size), combined with a running log-sum-exp; memory is
        O(p·d + chunk_size·(d + block)) whatever the number of components. Each block is one
        matmul of [z², z] against per-component coefficients, as in an EM E-step. Computation
        is in the promoted dtype of z and the mixture (at least float32).
        """
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(f"z must be a floating-point tensor (..., {self.dim}); got {z!r:.80}")
        if z.ndim < 1 or z.shape[-1] != self.dim:
            raise ValueError(
                f"z must have shape (..., {self.dim}) (the mixture's slot dim); got {tuple(z.shape)}"
            )
        check_positive_int("chunk_size", chunk_size)
        compute = torch.promote_types(torch.promote_types(z.dtype, self.dtype), torch.float32)
        lead = z.shape[:-1]
        pts = z.reshape(-1, self.dim).to(device=self.device, dtype=compute)  # (p, d)
        p = pts.shape[0]
        shift = self._centre().to(compute)
        feats = point_features(pts, shift)  # (p, 2d)
        out = torch.full((p,), -math.inf, dtype=compute, device=self.device)
        block = max(1, _BLOCK_ELEMENTS // chunk_size)
        log_w = self._weights.to(compute).log() - math.log(self._component_cdf()[-1].item())
        for c0 in range(0, self.num_components, chunk_size):
            c1 = min(c0 + chunk_size, self.num_components)
            w, b = log_density_params(
                log_w[c0:c1],
                self._means[c0:c1].to(compute),
                self._variances[c0:c1].to(compute),
                shift,
            )  # (2d, c'), (c',)
            for p0 in range(0, p, block):
                p1 = min(p0 + block, p)
                joint = torch.addmm(b, feats[p0:p1], w)  # (p', c')
                out[p0:p1] = torch.logaddexp(out[p0:p1], _logsumexp_(joint))
        return out.reshape(lead)

    # ------------------------------------------------------------------ files
    def _header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": self._KIND,
            "num_components": self.num_components,
            "dim": self.dim,
            "dtype": str(self.dtype).removeprefix("torch."),
            "metadata": self._metadata,
        }

    def _tensors(self) -> dict[str, Tensor]:
        return {"weights": self._weights, "means": self._means, "variances": self._variances}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the mixture to a safetensors file (atomically) and return its path.

        The JSON header (key ``"probslot"``) holds the kind, sizes, dtype and `metadata`.
        """
        path = Path(path)
        atomic_save_safetensors(self._tensors(), self._header(), path)
        return path

    @classmethod
    def _from_file(
        cls, tensors: dict[str, Tensor], header: dict[str, Any], path: Path
    ) -> GaussianMixture:
        try:
            weights, means, variances = tensors["weights"], tensors["means"], tensors["variances"]
        except KeyError as err:
            raise ValueError(f"{path} lacks tensor {err} of a GaussianMixture file") from None
        if tuple(means.shape) != (header["num_components"], header["dim"]):
            raise ValueError(
                f"{path}: means shape {tuple(means.shape)} disagrees with the header "
                f"({header['num_components']}, {header['dim']}); the file is corrupt"
            )
        return GaussianMixture(weights, means, variances, header.get("metadata"))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        dim: int | None = None,
        device: str | torch.device = "cpu",
    ) -> GaussianMixture:
        """Read a file written by `save` (a compressed mixture or an aggregate posterior).

        Args:
            dim: when given, the slot dimension the caller expects; a mismatch raises ValueError.
        """
        return load_mixture(path, dim=dim, device=device)


_KINDS[GaussianMixture._KIND] = GaussianMixture


def load_mixture(
    path: str | os.PathLike[str], dim: int | None = None, device: str | torch.device = "cpu"
) -> GaussianMixture:
    """Load any probslot mixture file as the class of its kind: an `AggregatePosterior` or a
    `GaussianMixture` (importing `probslot.posterior` registers both)."""
    path = Path(path)
    tensors, header = read_safetensors(path, device)
    _check_dim(path, header, dim)
    kind = header.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{path}: unknown mixture kind {kind!r}; expected one of {sorted(_KINDS)}")
    return _KINDS[kind]._from_file(tensors, header, path)
