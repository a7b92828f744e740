"""The aggregate posterior q(z) of a trained PSA model (paper §4, Lemma 1, Eqs. 10/13, 29–33).

q(z) = (1/M) Σ_i Σ_k π_ik N(z; μ_ik, diag σ²_ik) over M images × K slots: a Gaussian mixture
with M·K components, from which new scenes are composed by drawing slots i.i.d. and decoding
them. See docs/posterior.md for which weights are used and why.

Axis legend: see `probslot.typing` (m images, k slots, d slot dim, b batch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from probslot.posterior.compress import CompressionReport, compress_mixture
from probslot.posterior.fingerprint import model_fingerprint
from probslot.posterior.mixture import (
    GaussianMixture,
    _check_dim,
    normalise_metadata,
    read_safetensors,
    simplex_tolerance,
)
from probslot.registry import did_you_mean
from probslot.typing import SlotAttentionOutput, SlotPosterior
from probslot.validation import check_bool, check_float, check_positive_int

__all__ = ["AggregatePosterior", "DirichletPosterior", "dirichlet_weights", "job_process_group"]

Weighting = Literal["plain", "dirichlet"]
_WEIGHTINGS = ("plain", "dirichlet")


# ---------------------------------------------------------------------- Eqs. 29–33
@dataclass(frozen=True)
class DirichletPosterior:
    """Per-image components after the stochastic-encoder refinement (paper Eqs. 29–33).

    Attributes:
        mu:  (m, k, d) product-of-Gaussians means μ̂_ik.
        var: (m, k, d) product-of-Gaussians variances σ̂²_ik.
        pi:  (m, k) mixing weights π̂_ik (Dirichlet posterior means); rows sum to 1.
    """

    mu: Tensor
    var: Tensor
    pi: Tensor


def dirichlet_weights(
    mu: Tensor,
    var: Tensor,
    pi: Tensor,
    enc_mu: Tensor,
    enc_var: Tensor,
    alpha: float | Tensor | None = 1.0,
) -> DirichletPosterior:
    """Refine per-image slot Gaussians with a stochastic encoder's q(z|x_i) (Eqs. 29–33).

    With q(z|x_i) = N(μ(x_i), diag σ²(x_i)) and the local slot Gaussians N(μ_ik, σ²_ik):

    * Eq. 29 (product of Gaussians): σ̂²_ik = (1/σ²_ik + 1/σ²(x_i))⁻¹,
      μ̂_ik = σ̂²_ik (μ(x_i)/σ²(x_i) + μ_ik/σ²_ik).
    * Eq. 31 (pseudo-counts): c_ik = ∫ N(z; μ_ik, σ²_ik) N(z; μ(x_i), σ²(x_i)) dz
      = N(μ_ik; μ(x_i), σ²_ik + σ²(x_i)).
    * Eq. 33 (Dirichlet posterior mean): π̂_ik = (α_ik + c_ik) / Σ_j (α_ij + c_ij).

    Args:
        mu, var:  (m, k, d) local slot means and variances (> 0).
        pi:       (m, k) local mixing weights (rows on the simplex).
        enc_mu:   (m, d) or (m, k, d) mean of q(z|x_i).
        enc_var:  (m, d) or (m, k, d) variance of q(z|x_i) (> 0).
        alpha:    Dirichlet prior concentration. ``1.0`` (default) is the paper's symmetric
                  Dir(1) prior, which does not involve π; a float or an (m, k) tensor sets α_ik
                  directly; ``None`` centres the prior on the local weights, α_ik = K·π_ik (the
                  same total concentration as Dir(1)).

    The pseudo-counts are densities, evaluated in log space so that π̂ stays finite in high d.
    """
    m, k, d = _check_slot_tensors(mu, var, pi)
    enc_mu, enc_var = (
        _expand_encoder(name, x, m, k, d) for name, x in (("enc_mu", enc_mu), ("enc_var", enc_var))
    )
    if not bool((enc_var > 0).all()):
        raise ValueError("enc_var must be > 0 (variances of q(z|x_i))")
    if alpha is None:
        alpha_t = k * pi
    elif isinstance(alpha, Tensor):
        if alpha.shape != (m, k) or not bool((alpha >= 0).all()):
            raise ValueError(f"alpha tensor must be ({m}, {k}) and >= 0; got {tuple(alpha.shape)}")
        alpha_t = alpha.to(mu.dtype)
    else:
        hint = f"or an ({m}, {k}) tensor, or None for K·pi"
        alpha_t = torch.full_like(pi, check_float("alpha", alpha, low=0.0, hint=hint))

    var_hat = (var.reciprocal() + enc_var.reciprocal()).reciprocal()  # Eq. 29, (m, k, d)
    mu_hat = var_hat * (enc_mu / enc_var + mu / var)
    s2 = var + enc_var  # Eq. 31: Gaussian overlap integral, (m, k, d)
    log_c = -0.5 * (
        d * torch.log(torch.tensor(2 * torch.pi, dtype=mu.dtype))
        + s2.log().sum(-1)
        + ((mu - enc_mu) ** 2 / s2).sum(-1)
    )  # (m, k)
    log_counts = torch.logaddexp(alpha_t.log(), log_c)  # log(α + c)
    pi_hat = torch.softmax(log_counts, dim=-1)  # Eq. 33
    return DirichletPosterior(mu=mu_hat, var=var_hat, pi=pi_hat)


def _expand_encoder(name: str, x: Tensor, m: int, k: int, d: int) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {type(x).__name__}")
    if x.shape == (m, d):
        return x[:, None, :]
    if x.shape == (m, k, d):
        return x
    raise ValueError(f"{name} must be ({m}, {d}) or ({m}, {k}, {d}); got {tuple(x.shape)}")


# ---------------------------------------------------------------------- validation helpers
def _check_slot_tensors(mu: object, var: object, pi: object) -> tuple[int, int, int]:
    for name, x in (("mu", mu), ("var", var), ("pi", pi)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    assert isinstance(mu, Tensor) and isinstance(var, Tensor) and isinstance(pi, Tensor)
    if mu.ndim != 3:
        raise ValueError(
            f"mu must be (images, slots, dim) = (m, k, d); got shape {tuple(mu.shape)}"
        )
    m, k, d = mu.shape
    if m == 0:
        raise ValueError(
            "an aggregate posterior needs at least one image; got mu with m = 0 images "
            "(check that the dataloader is not empty and max_images > 0)"
        )
    if k == 0 or d == 0:
        raise ValueError(f"mu needs k >= 1 slots and d >= 1 dims; got shape {(m, k, d)}")
    if var.shape != mu.shape:
        raise ValueError(f"var must have the shape of mu {(m, k, d)}; got {tuple(var.shape)}")
    if pi.shape != (m, k):
        raise ValueError(f"pi must be (m, k) = {(m, k)} to match mu; got {tuple(pi.shape)}")
    if not (mu.dtype == var.dtype == pi.dtype):
        raise TypeError(
            f"mu, var and pi must share a dtype; got {mu.dtype}, {var.dtype}, {pi.dtype} "
            "(convert them with .to(dtype))"
        )
    if not (mu.device == var.device == pi.device):
        raise ValueError(
            f"mu, var and pi must be on one device; got {mu.device}, {var.device}, {pi.device}"
        )
    if not bool(torch.isfinite(mu).all()):
        raise ValueError("mu must be finite; found NaN or inf")
    ok = (var > 0) & torch.isfinite(var)
    if not bool(ok.all()):
        raise ValueError(f"var must be finite and > 0; found {var[~ok][0].item()}")
    if not bool(((pi >= 0) & torch.isfinite(pi)).all()):
        raise ValueError(
            "pi must be finite and >= 0 (mixing weights); found a negative or non-finite entry"
        )
    err = (pi.double().sum(-1) - 1).abs()
    tol = simplex_tolerance(pi.dtype)
    if bool((err > tol).any()):
        i = int(err.argmax())
        raise ValueError(
            f"each row of pi must sum to 1 (within {tol:g}); image {i} sums to "
            f"{pi[i].double().sum().item():.6g}; pass pi / pi.sum(-1, keepdim=True)"
        )
    return m, k, d


def _batch_images(batch: object) -> Tensor:
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise ValueError(
                f"dict batches must have key 'image' (b, 3, H, W); got keys {sorted(batch)}"
            )
        images = batch["image"]
    elif isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        images = batch[0]  # e.g. TensorDataset batches [images, ...]
    else:
        images = batch
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise TypeError(
            "batches must be image tensors (b, 3, H, W), dicts with key 'image', or "
            f"(images, ...) sequences; got {shape}"
        )
    return images


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


# ---------------------------------------------------------------------- the posterior
class AggregatePosterior(GaussianMixture):
    """q(z) = (1/M) Σ_i Σ_k π_ik N(z; μ_ik, diag σ²_ik), paper Lemma 1 (Eqs. 10 and 13).

    A `GaussianMixture` with M·K components of weight π_ik/M (rows of π renormalised), which
    also keeps the per-image structure (m, k) so that posteriors can be merged, subset and
    saved exactly.

    Args:
        mu:       (m, k, d) slot means μ_ik of M images.
        var:      (m, k, d) diagonal slot variances σ²_ik (> 0).
        pi:       (m, k) slot mixing weights π_ik; each row on the simplex (within 1e-3).
        metadata: JSON-serialisable dict (model hash, dataset, ...), written by `save`.

    Tensors are held, not copied (700k components at d = 64 are ~360 MB); do not modify them
    in place afterwards.
    """

    _KIND = "AggregatePosterior"

    def __init__(
        self,
        mu: Tensor,
        var: Tensor,
        pi: Tensor,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        m, k, d = _check_slot_tensors(mu, var, pi)
        self._mu, self._var, self._pi = mu, var, pi
        weights = (pi / pi.sum(-1, keepdim=True)).reshape(m * k) / m  # (m·k,) = π_ik / M
        self._set_components(weights, mu.reshape(m * k, d), var.reshape(m * k, d), metadata)

    # ------------------------------------------------------------------ properties
    @property
    def num_images(self) -> int:
        """Number of images M."""
        return self._mu.shape[0]

    @property
    def num_slots(self) -> int:
        """Slots per image K."""
        return self._mu.shape[1]

    @property
    def mu(self) -> Tensor:
        """(m, k, d) per-image slot means."""
        return self._mu

    @property
    def var(self) -> Tensor:
        """(m, k, d) per-image slot variances."""
        return self._var

    @property
    def pi(self) -> Tensor:
        """(m, k) per-image slot weights, as given."""
        return self._pi

    def _default_num_slots(self) -> int:
        return self.num_slots

    def __repr__(self) -> str:
        return (
            f"AggregatePosterior(num_images={self.num_images}, num_slots={self.num_slots}, "
            f"dim={self.dim}, dtype={self.dtype}, device={self.device})"
        )

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> AggregatePosterior:
        """A copy on `device` and/or in floating `dtype`."""
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype; got {dtype!r}")
        return AggregatePosterior(
            self._mu.to(device=device, dtype=dtype),
            self._var.to(device=device, dtype=dtype),
            self._pi.to(device=device, dtype=dtype),
            self._metadata,
        )

    def subset(self, index: Tensor | Sequence[int] | slice) -> AggregatePosterior:
        """The aggregate posterior of a subset of the images (paper §4: a large subset suffices)."""
        if isinstance(index, slice):
            mu, var, pi = self._mu[index], self._var[index], self._pi[index]
        else:
            idx = torch.as_tensor(index, device=self.device)
            if idx.dtype == torch.bool or idx.ndim != 1:
                raise TypeError("index must be a slice or a 1-D sequence/tensor of image indices")
            mu, var, pi = self._mu[idx], self._var[idx], self._pi[idx]
        return AggregatePosterior(mu, var, pi, self._metadata)

    # ------------------------------------------------------------------ combining
    @classmethod
    def merge(cls, posteriors: Sequence[AggregatePosterior]) -> AggregatePosterior:
        """Combine partial posteriors (e.g. one per process or data shard) exactly.

        The result equals `AggregatePosterior(cat(mu), cat(var), cat(pi))`, so each component's
        weight is π_ik / M_total. All parts must share K, d, dtype and device, and, where they
        record one, the same `model_hash`. Metadata keys on which all parts agree are kept.
        """
        if isinstance(posteriors, AggregatePosterior) or not isinstance(posteriors, Sequence):
            raise TypeError(
                "merge takes a list of AggregatePosterior, e.g. AggregatePosterior.merge([a, b]); "
                f"got {type(posteriors).__name__}"
            )
        if not posteriors:
            raise ValueError("merge needs at least one AggregatePosterior; got an empty list")
        for i, p in enumerate(posteriors):
            if not isinstance(p, AggregatePosterior):
                raise TypeError(
                    f"merge: item {i} must be an AggregatePosterior; got {type(p).__name__}"
                )
        first = posteriors[0]
        for i, p in enumerate(posteriors[1:], start=1):
            if p.dim != first.dim:
                raise ValueError(
                    f"merge: slot dimension mismatch: part 0 has d = {first.dim}, part {i} has "
                    f"d = {p.dim}; posteriors from different models cannot be merged"
                )
            if p.num_slots != first.num_slots:
                raise ValueError(
                    f"merge: slot count mismatch: part 0 has K = {first.num_slots}, part {i} has "
                    f"K = {p.num_slots}; fit all parts with the same num_slots"
                )
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    f"merge: part {i} is {p.dtype} on {p.device} but part 0 is {first.dtype} on "
                    f"{first.device}; convert with .to(device, dtype) first"
                )
        hashes = {p._metadata["model_hash"] for p in posteriors if "model_hash" in p._metadata}
        if len(hashes) > 1:
            raise ValueError(
                f"merge: parts were fitted with different models (model_hash values {sorted(hashes)}); "
                "only posteriors of the same model share a latent space"
            )
        metadata = {
            key: value
            for key, value in first._metadata.items()
            if all(key in p._metadata and p._metadata[key] == value for p in posteriors)
        }
        return cls(
            torch.cat([p._mu for p in posteriors]),
            torch.cat([p._var for p in posteriors]),
            torch.cat([p._pi for p in posteriors]),
            metadata,
        )

    # ------------------------------------------------------------------ compression
    def compress(
        self,
        n_components: int,
        num_samples: int = 100_000,
        iters: int = 100,
        seed: int = 0,
        *,
        num_holdout: int = 4096,
        tol: float = 1e-5,
        reg_covar: float = 1e-6,
        chunk_size: int = 2048,
    ) -> tuple[GaussianMixture, CompressionReport]:
        """Fit a small diagonal GMM to q(z); see `probslot.posterior.compress_mixture`."""
        return compress_mixture(
            self,
            n_components,
            num_samples=num_samples,
            iters=iters,
            seed=seed,
            num_holdout=num_holdout,
            tol=tol,
            reg_covar=reg_covar,
            chunk_size=chunk_size,
        )

    # ------------------------------------------------------------------ files
    def _header(self) -> dict[str, Any]:
        header = super()._header()
        header.update(num_images=self.num_images, num_slots=self.num_slots)
        return header

    def _tensors(self) -> dict[str, Tensor]:
        return {"mu": self._mu, "var": self._var, "pi": self._pi}

    @classmethod
    def _from_file(
        cls, tensors: dict[str, Tensor], header: dict[str, Any], path: Path
    ) -> AggregatePosterior:
        try:
            mu, var, pi = tensors["mu"], tensors["var"], tensors["pi"]
        except KeyError as err:
            raise ValueError(f"{path} lacks tensor {err} of an AggregatePosterior file") from None
        expected = (header["num_images"], header["num_slots"], header["dim"])
        if tuple(mu.shape) != expected:
            raise ValueError(
                f"{path}: mu shape {tuple(mu.shape)} disagrees with the header {expected}; "
                "the file is corrupt"
            )
        return cls(mu, var, pi, header.get("metadata"))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        dim: int | None = None,
        device: str | torch.device = "cpu",
    ) -> AggregatePosterior:
        """Read a file written by `AggregatePosterior.save` (bit-identical tensors and metadata).

        Args:
            dim: the slot dimension the caller's model uses; a mismatch raises ValueError.
        """
        path = Path(path)
        tensors, header = read_safetensors(path, device)
        if header.get("kind") != cls._KIND:
            raise ValueError(
                f"{path} holds a {header.get('kind')!r}, not an AggregatePosterior; load it "
                "with probslot.posterior.load_mixture or GaussianMixture.load"
            )
        _check_dim(path, header, dim)
        return cls._from_file(tensors, header, path)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        model: nn.Module,
        dataloader: Iterable[Any],
        max_images: int | None = None,
        dtype: torch.dtype = torch.float32,
        weighting: Weighting = "plain",
        num_slots: int | None = None,
        progress: bool = True,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> AggregatePosterior:
        """Stream a dataset through a PSA model's encoder and keep q(z)'s components.

        For each batch, ``model.encode(images)`` (images (b, 3, H, W) in [0, 1]) must return a
        `SlotPosterior`; only its μ (b, k, d), σ² (b, k, d) and π (b, k) are kept (on the CPU,
        in `dtype`), so memory is O(M·K·d). On a GPU they are gathered on the device and
        moved to the CPU in blocks of about 64 MiB, so the device is not synchronised on
        every batch. Runs under `torch.inference_mode()` with the model
        in eval mode (its previous mode is restored).

        Args:
            model:      a PSA slot autoencoder (`encode` returning `SlotPosterior`). Slot
                        attention (`SlotAttentionOutput`) has no posterior and is rejected.
            dataloader: iterable of batches: tensors (b, 3, H, W), dicts with key ``"image"``,
                        or sequences whose first item is the image tensor.
            max_images: stop after this many images (the last batch is truncated).
            dtype:      floating dtype in which μ, σ², π are stored.
            weighting:  ``"plain"``: weights π_ik/M, Lemma 1 with a deterministic encoder
                        (Dirac q(z|x), Eqs. 23–24), which is what our encoders are.
                        ``"dirichlet"``: Eqs. 29–33 (see `dirichlet_weights`), only for a
                        stochastic encoder: the model must provide
                        ``encoder_posterior(images) -> (mean, var)`` of shape (b, d) or (b, k, d).
            num_slots:  passed to ``model.encode(images, num_slots=...)`` when given.
            progress:   show a rich progress bar (images done / total when known).
            metadata:   extra JSON metadata (e.g. ``{"dataset": "sprites", "split": "train"}``);
                        ``model_class``, ``weighting``, ``num_slots`` and, for an ``nn.Module``,
                        ``model_hash`` = `model_fingerprint(model)` are added (a ``model_hash``
                        given here must equal it).
        """
        # -- validate everything before any work
        encode = getattr(model, "encode", None)
        if not callable(encode):
            raise TypeError(
                f"fit needs a PSA model with encode(images) -> SlotPosterior; "
                f"{type(model).__name__} has no encode method"
            )
        if max_images is not None:
            check_positive_int("max_images", max_images)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(
                f"dtype must be a floating torch.dtype (e.g. torch.float32); got {dtype!r}"
            )
        if weighting not in _WEIGHTINGS:
            suggestion = did_you_mean(str(weighting), list(_WEIGHTINGS))
            raise ValueError(
                f"unknown weighting {weighting!r}.{suggestion} Available: plain, dirichlet"
            )
        encoder_posterior = getattr(model, "encoder_posterior", None)
        if weighting == "dirichlet" and not callable(encoder_posterior):
            raise ValueError(
                "weighting='dirichlet' (paper Eqs. 29–33) needs a stochastic encoder: the model "
                "must provide encoder_posterior(images) -> (mean, var) of q(z|x); "
                f"{type(model).__name__} does not. probslot's encoders are deterministic, for "
                "which Lemma 1 gives the plain weights π_ik/M: use weighting='plain'"
            )
        if num_slots is not None:
            check_positive_int("num_slots", num_slots)
        check_bool("progress", progress)
        if not isinstance(dataloader, Iterable):
            raise TypeError(
                f"dataloader must be iterable over batches; got {type(dataloader).__name__}"
            )
        user_metadata = normalise_metadata(metadata)
        fingerprint = model_fingerprint(model) if isinstance(model, nn.Module) else None
        given = user_metadata.get("model_hash")
        if given is not None and fingerprint is not None and given != fingerprint:
            raise ValueError(
                f"metadata['model_hash'] = {str(given)[:12]}… is not this model's fingerprint "
                f"({str(fingerprint)[:12]}…); fit records model_hash itself "
                "(probslot.posterior.model_fingerprint(model)), so leave it out of metadata"
            )

        total = _dataset_size(dataloader)
        if max_images is not None:
            total = max_images if total is None else min(total, max_images)
        device = _model_device(model) if isinstance(model, nn.Module) else torch.device("cpu")
        kwargs = {} if num_slots is None else {"num_slots": num_slots}

        chunks = _HostChunks(dtype)
        seen = 0
        was_training = model.training if isinstance(model, nn.Module) else None
        if isinstance(model, nn.Module):
            model.eval()
        try:
            with torch.inference_mode(), _progress_bar(progress, total) as advance:
                for batch in dataloader:
                    images = _batch_images(batch)
                    if max_images is not None:
                        images = images[: max_images - seen]
                    if images.shape[0] == 0:
                        continue
                    images = images.to(device, non_blocking=True)
                    out = encode(images, **kwargs)
                    if not isinstance(out, SlotPosterior):
                        kind = (
                            "slot attention (SlotAttentionOutput), which has no posterior"
                            if isinstance(out, SlotAttentionOutput)
                            else type(out).__name__
                        )
                        raise TypeError(
                            "the aggregate posterior needs a PSA model whose encode() returns a "
                            f"SlotPosterior (mu, var, pi); {type(model).__name__}.encode returned "
                            f"{kind}. Train a PSA preset (PSA, PSA-Proj, PSA-NoA)"
                        )
                    mu, var, pi = out.mu, out.var, out.pi
                    if weighting == "dirichlet":
                        enc_mu, enc_var = encoder_posterior(images, **kwargs)
                        refined = dirichlet_weights(mu, var, pi, enc_mu, enc_var)
                        mu, var, pi = refined.mu, refined.var, refined.pi
                    if chunks.slot_shape is not None and mu.shape[1:] != chunks.slot_shape:
                        raise ValueError(
                            f"encode returned slots of shape {tuple(mu.shape[1:])} after "
                            f"{tuple(chunks.slot_shape)}; all batches must give (k, d) alike"
                        )
                    chunks.append(mu, var, pi)
                    seen += images.shape[0]
                    advance(images.shape[0])
                    if max_images is not None and seen >= max_images:
                        break
        finally:
            if isinstance(model, nn.Module) and was_training:
                model.train()
        if chunks.slot_shape is None:
            raise ValueError("the dataloader yielded no images; an aggregate posterior needs >= 1")
        # one concatenation: peak memory ≈ 2 × O(M·K·d) for a moment, then O(M·K·d)
        mu, var, pi = chunks.concatenate()
        info: dict[str, Any] = {
            "model_class": type(model).__qualname__,
            "weighting": weighting,
            "num_images": int(mu.shape[0]),
            "num_slots": int(mu.shape[1]),
        }
        if fingerprint is not None:
            info["model_hash"] = fingerprint  # what `probslot sample` / `evaluate` check
        dataset = getattr(dataloader, "dataset", None)
        if dataset is not None:
            info["dataset"] = type(dataset).__name__
        info.update(user_metadata)
        return cls(mu, var, pi, info)

    @classmethod
    def fit_distributed(
        cls,
        model: nn.Module,
        dataset: Any,
        batch_size: int = 64,
        *,
        max_images: int | None = None,
        collate_fn: Any = None,
        dtype: torch.dtype = torch.float32,
        weighting: Weighting = "plain",
        num_slots: int | None = None,
        progress: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> AggregatePosterior:
        """`fit` with every process of an initialised ``torch.distributed`` group.

        Of the first M = min(len(dataset), max_images) images, process r encodes the contiguous
        block [r·M/W, (r+1)·M/W); the parts are gathered and merged in rank order (`merge`), so
        every process returns the posterior of the M images in dataset order, as one process
        fitting them would (eval-mode encoding treats every image alone: the slot noise is the
        fixed draw of inference, `probslot.nn.layers.slot_noise`). Without a process group, or
        with one process, this is `fit` on the M images. The metadata is that of `fit`; the
        other arguments are `fit`'s.

        Args:
            model: a PSA slot autoencoder, as for `fit` (the same weights on every process).
            dataset: a map-style dataset of items accepted by `fit`'s batches (e.g. dicts with
                ``"image"``).
            batch_size: images per `encode` call on each process.
            max_images: use the first this many images of `dataset`.
            collate_fn: builds a batch from items (``probslot.data.contract.collate`` for
                probslot's datasets).
        """
        from torch.utils.data import DataLoader, Subset

        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                "fit_distributed needs a map-style dataset (len and indexing) to share among "
                f"processes; got {type(dataset).__name__}. Use fit(model, loader) on one process"
            )
        check_positive_int("batch_size", batch_size)
        if max_images is not None:
            check_positive_int("max_images", max_images)
        total = len(dataset) if max_images is None else min(len(dataset), max_images)
        dist = torch.distributed
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        rank = dist.get_rank() if world > 1 else 0
        if total < world:
            raise ValueError(
                f"fit_distributed: {total} images cannot be shared among {world} processes; "
                "use fewer processes or more images"
            )
        lo, hi = rank * total // world, (rank + 1) * total // world
        loader = DataLoader(
            Subset(dataset, range(lo, hi)), batch_size=batch_size, collate_fn=collate_fn
        )
        part = cls.fit(
            model,
            loader,
            dtype=dtype,
            weighting=weighting,
            num_slots=num_slots,
            progress=progress and rank == 0,
            metadata=metadata,
        )
        info = part.metadata
        if "dataset" not in (metadata or {}):
            info["dataset"] = type(dataset).__name__  # not the Subset of this process
        if world == 1:
            return cls(part.mu, part.var, part.pi, info)
        local = (part.mu.cpu(), part.var.cpu(), part.pi.cpu())
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, local)  # within the job's own process group
        merged = cls.merge([cls(mu, var, pi) for mu, var, pi in gathered])
        info["num_images"] = merged.num_images
        return cls(merged.mu, merged.var, merged.pi, info)


def job_process_group() -> tuple[int, int]:
    """(rank, world size) of this process in a ``torchrun`` job: with ``WORLD_SIZE`` > 1 in the
    environment, ``torch.distributed`` is initialised from it (gloo: the models run on the CPU)
    unless it already is; (0, 1) for a single process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return 0, 1
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def _keep(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x in `dtype` on its device, owning its memory (a view would pin the model's whole output)."""
    x = x.to(dtype=dtype)
    if x.untyped_storage().nbytes() > x.numel() * x.element_size():
        x = x.clone()
    return x


#: bytes of (μ, σ², π) gathered on a GPU before one copy to the CPU (`AggregatePosterior.fit`)
_HOST_BLOCK_BYTES = 64 * 2**20


class _HostChunks:
    """Per-batch (μ, σ², π) collected on the CPU in `dtype`.

    CPU tensors go straight into the host list. Device tensors wait on the device until about
    `_HOST_BLOCK_BYTES` have gathered and then move in one copy, so a GPU fit synchronises once per
    block rather than three times per batch.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.host: list[tuple[Tensor, Tensor, Tensor]] = []
        self.pending: list[tuple[Tensor, Tensor, Tensor]] = []
        self.pending_bytes = 0
        self.slot_shape: torch.Size | None = None

    def append(self, mu: Tensor, var: Tensor, pi: Tensor) -> None:
        self.slot_shape = mu.shape[1:]
        item = (_keep(mu, self.dtype), _keep(var, self.dtype), _keep(pi, self.dtype))
        if mu.device.type == "cpu":
            self.host.append(item)
            return
        self.pending.append(item)
        self.pending_bytes += sum(t.numel() * t.element_size() for t in item)
        if self.pending_bytes >= _HOST_BLOCK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            mu, var, pi = (torch.cat(parts).cpu() for parts in zip(*self.pending))
            self.host.append((mu, var, pi))
        self.pending, self.pending_bytes = [], 0

    def concatenate(self) -> tuple[Tensor, Tensor, Tensor]:
        self.flush()
        mu, var, pi = (torch.cat(parts) for parts in zip(*self.host))
        self.host = []
        return mu, var, pi


def _dataset_size(dataloader: object) -> int | None:
    dataset = getattr(dataloader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None  # type: ignore[arg-type]
    except TypeError:
        return None


class _progress_bar:
    """Context manager yielding `advance(n)`; a rich bar over images when enabled."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled, self.total = enabled, total
        self._progress: Any = None

    def __enter__(self):  # noqa: ANN204
        if not self.enabled:
            return lambda n: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("aggregate posterior"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("images"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._progress.__enter__()
        task = self._progress.add_task("fit", total=self.total)
        progress = self._progress
        return lambda n: progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
