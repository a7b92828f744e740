"""AggregatePosterior.fit with stand-in PSA models, and the Dirichlet weights (Eqs. 29–33)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from probslot.posterior import AggregatePosterior, dirichlet_weights, model_fingerprint
from probslot.typing import SlotAttentionOutput, SlotPosterior

K, D = 3, 5  # slots, slot dim (distinct from batch 4, images 11, H 6, W 7)


class TinyPSA(nn.Module):
    """Stand-in PSA model: pooled 1×1 conv → per-slot (μ, σ², π) for each image."""

    def __init__(self, k: int = K, d: int = D) -> None:
        super().__init__()
        self.k, self.d = k, d
        self.proj = nn.Conv2d(3, k * (2 * d + 1), kernel_size=1)
        self.drop = nn.Dropout(0.5)  # must be off during fit (eval mode)

    def encode(self, images: torch.Tensor, num_slots: int | None = None) -> SlotPosterior:
        b, _, h, w = images.shape
        k = num_slots or self.k
        feats = self.drop(self.proj(images)).mean((2, 3)).view(b, self.k, 2 * self.d + 1)[:, :k]
        mu, raw_var, logit = feats[..., : self.d], feats[..., self.d : -1], feats[..., -1]
        attn = torch.full((b, k, h * w), 1.0 / k)
        return SlotPosterior(mu, F.softplus(raw_var) + 1e-3, torch.softmax(logit, -1), attn)


class StochasticPSA(TinyPSA):
    def encoder_posterior(self, images: torch.Tensor, num_slots: int | None = None):
        pooled = images.mean((2, 3))  # (b, 3)
        mean = pooled.repeat(1, 2)[:, : self.d]  # (b, d)
        return mean, 0.5 + mean.abs()


class TinySA(nn.Module):
    def encode(self, images, num_slots=None):
        b = images.shape[0]
        return SlotAttentionOutput(torch.zeros(b, K, D), torch.zeros(b, K, 4))


class DictImages(Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "num_objects": i % 3}


def images(n: int = 11) -> torch.Tensor:
    return torch.rand(n, 3, 6, 7, generator=torch.Generator().manual_seed(0))


def reference(model: TinyPSA, loader, limit: int | None = None):
    model.eval()
    mus, vars_, pis, seen = [], [], [], 0
    with torch.inference_mode():
        for batch in loader:
            x = batch["image"] if isinstance(batch, dict) else batch
            if limit is not None:
                x = x[: limit - seen]
            out = model.encode(x)
            mus.append(out.mu)
            vars_.append(out.var)
            pis.append(out.pi)
            seen += len(x)
            if limit is not None and seen >= limit:
                break
    return torch.cat(mus), torch.cat(vars_), torch.cat(pis)


def test_fit_equals_concatenated_encode_outputs():
    model = TinyPSA().train()
    loader = DataLoader(DictImages(images()), batch_size=4)
    q = AggregatePosterior.fit(model, loader, progress=False, metadata={"split": "train"})
    assert model.training  # mode restored
    mu, var, pi = reference(model, loader)
    assert (q.num_images, q.num_slots, q.dim) == (11, K, D)
    assert torch.equal(q.mu, mu) and torch.equal(q.var, var) and torch.equal(q.pi, pi)
    assert not q.mu.is_inference()  # usable outside inference mode (e.g. saved, merged)
    meta = q.metadata
    assert meta["model_hash"] == model_fingerprint(model)
    assert meta["dataset"] == "DictImages" and meta["split"] == "train"
    assert meta["weighting"] == "plain" and meta["num_slots"] == K
    assert meta["model_class"] == "TinyPSA"


def test_fit_respects_max_images_and_dtype():
    model = TinyPSA()
    loader = DataLoader(DictImages(images()), batch_size=4)
    q = AggregatePosterior.fit(model, loader, max_images=6, dtype=torch.float64, progress=False)
    mu, var, pi = reference(model, loader, limit=6)
    assert q.num_images == 6 and q.dtype == torch.float64
    assert torch.equal(q.mu, mu.double()) and torch.equal(q.pi, pi.double())


def test_fit_stops_pulling_batches_at_max_images():
    pulled = []

    def batches():
        for i in range(100):
            pulled.append(i)
            yield images(4)

    AggregatePosterior.fit(TinyPSA(), batches(), max_images=8, progress=False)
    assert pulled == [0, 1]


def test_fit_accepts_tensor_and_tuple_batches_and_num_slots(capsys):
    model = TinyPSA()
    x = images()
    tensors = AggregatePosterior.fit(model, DataLoader(x, batch_size=5), progress=True)
    assert "11/11 images" in capsys.readouterr().out  # rich progress over images
    tuples = AggregatePosterior.fit(
        model, DataLoader(TensorDataset(x), batch_size=5), progress=False
    )
    assert torch.equal(tensors.mu, tuples.mu)
    two = AggregatePosterior.fit(model, [x], num_slots=2, progress=False)
    assert two.num_slots == 2


def test_fit_rejects_non_psa_models_and_bad_arguments():
    loader = DataLoader(DictImages(images()), batch_size=4)
    with pytest.raises(TypeError, match="needs a PSA model.*SlotAttentionOutput.*has no posterior"):
        AggregatePosterior.fit(TinySA(), loader, progress=False)
    with pytest.raises(TypeError, match="has no encode method"):
        AggregatePosterior.fit(nn.Linear(2, 2), loader, progress=False)
    with pytest.raises(ValueError, match="unknown weighting 'dirichelt'. Did you mean 'dirichlet'"):
        AggregatePosterior.fit(TinyPSA(), loader, weighting="dirichelt", progress=False)
    with pytest.raises(ValueError, match="needs a stochastic encoder.*use weighting='plain'"):
        AggregatePosterior.fit(TinyPSA(), loader, weighting="dirichlet", progress=False)
    with pytest.raises(ValueError, match="max_images must be an integer >= 1; got 0"):
        AggregatePosterior.fit(TinyPSA(), loader, max_images=0, progress=False)
    with pytest.raises(TypeError, match="floating torch.dtype"):
        AggregatePosterior.fit(TinyPSA(), loader, dtype=torch.int64, progress=False)
    with pytest.raises(ValueError, match="yielded no images"):
        AggregatePosterior.fit(TinyPSA(), [], progress=False)
    with pytest.raises(ValueError, match="key 'image'"):
        AggregatePosterior.fit(TinyPSA(), [{"img": images(2)}], progress=False)
    with pytest.raises(TypeError, match=r"image tensors \(b, 3, H, W\)"):
        AggregatePosterior.fit(TinyPSA(), [torch.zeros(3, 6, 7)], progress=False)
    with pytest.raises(TypeError, match=r"max_images must be an integer >= 1; got 2.0 \(float\)"):
        AggregatePosterior.fit(TinyPSA(), loader, max_images=2.0, progress=False)
    with pytest.raises(TypeError, match="progress must be True or False; got 1"):
        AggregatePosterior.fit(TinyPSA(), loader, progress=1)


def test_fit_records_the_model_fingerprint_and_no_other_model_hash():
    model = TinyPSA()
    loader = DataLoader(DictImages(images()), batch_size=4)
    mine = {"model_hash": model_fingerprint(model)}
    q = AggregatePosterior.fit(model, loader, progress=False, metadata=mine)
    assert q.metadata["model_hash"] == model_fingerprint(model)
    with pytest.raises(ValueError, match=r"metadata\['model_hash'\] = .* is not this model's"):
        AggregatePosterior.fit(model, loader, progress=False, metadata={"model_hash": "ab12"})


def test_fit_dirichlet_weighting_applies_eqs_29_33_per_batch():
    model = StochasticPSA()
    loader = DataLoader(DictImages(images()), batch_size=4)
    q = AggregatePosterior.fit(model, loader, weighting="dirichlet", progress=False)
    mu, var, pi = reference(model, loader)
    with torch.inference_mode():
        enc_mu, enc_var = model.encoder_posterior(images())
    expected = dirichlet_weights(mu, var, pi, enc_mu, enc_var)
    torch.testing.assert_close(q.mu, expected.mu)
    torch.testing.assert_close(q.var, expected.var)
    torch.testing.assert_close(q.pi, expected.pi)
    assert q.metadata["weighting"] == "dirichlet"


# ---------------------------------------------------------------- Eqs. 29–33 by hand
def normal_pdf(x: float, mean: float, var: float) -> float:
    return math.exp(-((x - mean) ** 2) / (2 * var)) / math.sqrt(2 * math.pi * var)


def test_dirichlet_weights_match_hand_computation():
    # one image, two 1-d slots; q(z|x) = N(1, 0.5)
    mu = torch.tensor([[[0.0], [3.0]]], dtype=torch.float64)
    var = torch.tensor([[[1.0], [2.0]]], dtype=torch.float64)
    pi = torch.tensor([[0.4, 0.6]], dtype=torch.float64)
    enc_mu = torch.tensor([[1.0]], dtype=torch.float64)
    enc_var = torch.tensor([[0.5]], dtype=torch.float64)
    out = dirichlet_weights(mu, var, pi, enc_mu, enc_var)
    # Eq. 29: 1/σ̂² = 1/σ² + 1/σ²(x); μ̂ = σ̂² (μ(x)/σ²(x) + μ/σ²)
    v0, v1 = 1 / (1 / 1.0 + 1 / 0.5), 1 / (1 / 2.0 + 1 / 0.5)  # 1/3, 2/5
    m0, m1 = v0 * (1 / 0.5 + 0 / 1.0), v1 * (1 / 0.5 + 3 / 2.0)  # 2/3, 7/5
    torch.testing.assert_close(out.var[0, :, 0], torch.tensor([v0, v1], dtype=torch.float64))
    torch.testing.assert_close(out.mu[0, :, 0], torch.tensor([m0, m1], dtype=torch.float64))
    # Eq. 31: c = ∫ N(z; μ, σ²) N(z; μ(x), σ²(x)) dz = N(μ; μ(x), σ² + σ²(x)); Eq. 33 with α = 1
    c0, c1 = normal_pdf(0.0, 1.0, 1.5), normal_pdf(3.0, 1.0, 2.5)
    expected = torch.tensor(
        [(1 + c0) / (2 + c0 + c1), (1 + c1) / (2 + c0 + c1)], dtype=torch.float64
    )
    torch.testing.assert_close(out.pi[0], expected, rtol=1e-12, atol=1e-12)
    # α centred on the local weights: α_k = K π_k
    centred = dirichlet_weights(mu, var, pi, enc_mu, enc_var, alpha=None).pi[0]
    a0, a1 = 2 * 0.4, 2 * 0.6
    expected = torch.tensor([a0 + c0, a1 + c1], dtype=torch.float64) / (a0 + a1 + c0 + c1)
    torch.testing.assert_close(centred, expected, rtol=1e-12, atol=1e-12)
    # Corollary 4: the refined weights give a valid q(z)
    q = AggregatePosterior(out.mu, out.var, out.pi)
    assert math.isclose(q.weights.sum().item(), 1.0, abs_tol=1e-12)


def test_dirichlet_weights_stay_finite_in_high_dimension():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 3, 64, generator=g)
    var = torch.full((2, 3, 64), 1e-4)
    pi = torch.full((2, 3), 1 / 3)
    out = dirichlet_weights(mu, var, pi, mu[:, 0], torch.full((2, 64), 1e-4))
    assert torch.isfinite(out.pi).all()
    # slot 0 coincides with q(z|x): its huge pseudo-count takes all the weight
    assert (out.pi[:, 0] > 0.999).all()


def test_dirichlet_weights_reject_bad_shapes():
    mu, var, pi = torch.zeros(2, 3, 5), torch.ones(2, 3, 5), torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"enc_mu must be \(2, 5\) or \(2, 3, 5\); got \(2, 4\)"):
        dirichlet_weights(mu, var, pi, torch.zeros(2, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match="enc_var must be > 0"):
        dirichlet_weights(mu, var, pi, torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"alpha must be a number >= 0 \(or an \(2, 3\) tensor"):
        dirichlet_weights(mu, var, pi, torch.zeros(2, 5), torch.ones(2, 5), alpha=-1.0)
    with pytest.raises(TypeError, match="alpha must be a number >= 0 .*; got 'one' "):
        dirichlet_weights(mu, var, pi, torch.zeros(2, 5), torch.ones(2, 5), alpha="one")


def test_fit_keeps_only_compact_copies_of_slot_views():
    # TinyPSA's μ is a view into a (b, k, 2d+1) tensor; fit must not pin that whole storage
    q = AggregatePosterior.fit(TinyPSA(), [images(4)], progress=False)
    for t in (q.mu, q.var, q.pi):
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


class TinyAutoencoder(TinyPSA):
    """TinyPSA plus an additive decode(slots (b, k, d), keep=None) -> DecoderOutput."""

    def __init__(self) -> None:
        super().__init__()
        self.dec = nn.Linear(D, 4 * 6 * 7)

    def decode(self, slots: torch.Tensor, keep: torch.Tensor | None = None):
        from probslot.typing import DecoderOutput

        b, k, _ = slots.shape
        out = self.dec(slots).view(b, k, 4, 6, 7)  # (b, k, rgb + alpha, H, W)
        masks = torch.softmax(out[:, :, 3:], dim=1)  # (b, k, 1, H, W)
        per_slot = torch.sigmoid(out[:, :, :3])
        return DecoderOutput((masks * per_slot).sum(1), masks, per_slot)


def test_fit_save_load_sample_decode_pipeline(tmp_path):
    model = TinyAutoencoder()
    loader = DataLoader(DictImages(images()), batch_size=4)
    q = AggregatePosterior.fit(model, loader, progress=False)
    path = q.save(tmp_path / "posterior.safetensors")
    r = AggregatePosterior.load(path, dim=D)
    assert r.metadata["model_hash"] == model_fingerprint(model)
    scenes = r.sample_scenes(5, generator=torch.Generator().manual_seed(0))  # (5, K, D)
    with torch.no_grad():
        out = model.decode(scenes)
    assert out.recon.shape == (5, 3, 6, 7) and torch.isfinite(out.recon).all()
    compact, report = r.compress(2, num_samples=500, iters=10, num_holdout=100)
    assert model.decode(compact.sample_scenes(2)).recon.shape == (2, 3, 6, 7)
    assert report.original_components == 11 * K
