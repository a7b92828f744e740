"""CUDA checks: the same numbers on the GPU as on the CPU, bf16 autocast that stays finite and
close to float32, and a Lightning training run with ``precision="bf16-mixed"`` on the GPU.

Every test here is skipped without CUDA (CI has no GPU); they run on a lent GPU machine with
``python -m pytest -m cuda``. The CPU float64 computation is the reference throughout.
"""

from __future__ import annotations

import math

import pytest
import torch

from probslot.nn import ProbabilisticSlotAttention
from probslot.nn.functional import em_step

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _clustered_tokens(
    b: int, n: int, d: int, k: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, n, d) tokens drawn around k well-separated centres, and their (b, n) cluster ids."""
    g = torch.Generator().manual_seed(seed)
    centres = 4.0 * torch.randn(b, k, d, generator=g)
    labels = torch.randint(0, k, (b, n), generator=g)
    tokens = centres.gather(1, labels[..., None].expand(b, n, d)) + 0.3 * torch.randn(
        b, n, d, generator=g
    )
    return tokens, labels


def test_em_step_on_cuda_matches_cpu_float64() -> None:
    b, n, d, k = 3, 257, 16, 5
    keys, _ = _clustered_tokens(b, n, d, k, seed=0)
    values = keys.clone()
    g = torch.Generator().manual_seed(1)
    query = torch.randn(b, k, d, generator=g)
    var = torch.rand(b, k, d, generator=g) + 0.5
    log_pi = torch.log_softmax(torch.randn(b, k, generator=g), dim=-1)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 200:] = False  # padded tokens must be ignored on the GPU too

    ref = em_step(*(t.double() for t in (keys, values, query, var, log_pi)), mask)
    got = em_step(*(t.cuda() for t in (keys, values, query, var, log_pi)), mask.cuda())
    for name in ("mu", "var", "pi", "attn"):
        r, x = getattr(ref, name), getattr(got, name).cpu().double()
        assert x.shape == r.shape, name
        torch.testing.assert_close(x, r, rtol=1e-4, atol=1e-4, msg=name)


def test_psa_bf16_autocast_keeps_em_in_float32_and_matches_fp32() -> None:
    b, n, d, k = 4, 196, 32, 4
    tokens, labels = _clustered_tokens(b, n, d, k, seed=2)
    torch.manual_seed(0)
    psa = ProbabilisticSlotAttention(k, d, iters=5, variant="base", init="standard").cuda()
    x = tokens.cuda()

    torch.manual_seed(3)
    ref = psa(x)
    torch.manual_seed(3)  # same initial slots
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = psa(x)

    # EM runs in float32 inside autocast: posteriors come out float32, π on the simplex
    for name in ("mu", "var", "pi", "attn"):
        assert getattr(got, name).dtype == torch.float32, name
        assert torch.isfinite(getattr(got, name)).all(), name
    torch.testing.assert_close(got.pi.sum(-1), torch.ones(b, device="cuda"))
    torch.testing.assert_close(got.attn.sum(1), torch.ones(b, n, device="cuda"))
    # bf16 only rounds the LayerNorm'd inputs: the same grouping of tokens as float32
    agree = (got.attn.argmax(1) == ref.attn.argmax(1)).float().mean().item()
    assert agree > 0.99, f"bf16 and fp32 assign {agree:.3f} of the tokens alike"
    torch.testing.assert_close(got.pi, ref.pi, rtol=0.0, atol=2e-2)


def test_autoencoder_forward_on_cuda_matches_cpu() -> None:
    from probslot.models import ModelConfig, build_model

    cfg = ModelConfig(
        preset="PSA",
        likelihood="mse",
        image_size=24,
        num_slots=4,
        slot_dim=32,
        iters=3,
        grouping_kwargs={"standardize": True, "coord_dims": 2},
        encoder_kwargs={
            "channels": [16, 32],
            "kernel_sizes": [5, 3],
            "strides": [2, 1],
            "coord_dims": 2,
        },
        decoder_kwargs={
            "channels": [16, 16, 16],
            "init_size": 6,
            "kernel_size": 3,
            "coord_dims": 2,
        },
    )
    torch.manual_seed(0)
    cpu = build_model(cfg).double().eval()
    gpu = build_model(cfg).eval()
    gpu.load_state_dict({k: v.float() for k, v in cpu.state_dict().items()})
    gpu = gpu.cuda()
    images = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    init = cpu.grouping.initial_state(3, 4, torch.device("cpu"), torch.float64)

    def fixed_init(batch, num_slots, device, dtype, draw=None):  # the same μ(0) on both devices
        return tuple(t.to(device=device, dtype=dtype) for t in init)

    cpu.grouping.initial_state = fixed_init
    gpu.grouping.initial_state = fixed_init
    with torch.no_grad():
        ref = cpu(images.double())
        got = gpu(images.cuda())
    torch.testing.assert_close(got.grouping.pi.cpu().double(), ref.grouping.pi, rtol=0, atol=1e-3)
    torch.testing.assert_close(got.recon.cpu().double(), ref.recon, rtol=0, atol=1e-3)


def test_aggregate_posterior_log_prob_and_sampling_on_cuda() -> None:
    from probslot.posterior import AggregatePosterior

    g = torch.Generator().manual_seed(5)
    m, k, d = 50, 3, 6
    mu = torch.randn(m, k, d, generator=g, dtype=torch.float64)
    var = torch.rand(m, k, d, generator=g, dtype=torch.float64) + 0.1
    pi = torch.softmax(torch.randn(m, k, generator=g, dtype=torch.float64), dim=-1)
    z = torch.randn(40, d, generator=g, dtype=torch.float64)
    ref = AggregatePosterior(mu, var, pi).log_prob(z)
    gpu = AggregatePosterior(mu.float().cuda(), var.float().cuda(), pi.float().cuda())
    got = gpu.log_prob(z.float().cuda(), chunk_size=7)  # several chunks
    torch.testing.assert_close(got.cpu().double(), ref, rtol=1e-4, atol=1e-4)
    samples = gpu.sample(20_000, generator=torch.Generator("cuda").manual_seed(0))
    assert samples.device.type == "cuda" and samples.shape == (20_000, d)
    # the mixture's mean: Σ_ik (π_ik / M) μ_ik
    expected = (pi[..., None] * mu).sum((0, 1)) / m
    assert (samples.double().mean(0).cpu() - expected).abs().max() < 0.05


class _DeterministicPSA(torch.nn.Module):
    """encode(images) → a SlotPosterior that is a fixed function of the images (no sampling)."""

    def __init__(self, k: int = 3, d: int = 5) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.proj = torch.nn.Linear(3, k * d)
        self.k, self.d = k, d

    def encode(self, images: torch.Tensor):
        from probslot.typing import SlotPosterior

        feats = self.proj(images.mean((2, 3)))  # (b, k·d)
        mu = feats.view(-1, self.k, self.d)
        var = torch.nn.functional.softplus(mu) + 0.1
        pi = torch.softmax(mu.sum(-1), dim=-1)
        attn = pi[..., None].expand(-1, -1, 4).contiguous()
        return SlotPosterior(mu=mu, var=var, pi=pi, attn=attn)


def test_aggregate_fit_on_cuda_moves_blocks_and_matches_cpu(monkeypatch) -> None:
    from probslot.posterior import AggregatePosterior, aggregate

    images = torch.rand(37, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    loader = [images[i : i + 5] for i in range(0, 37, 5)]  # 8 batches, the last one short
    model = _DeterministicPSA()
    ref = AggregatePosterior.fit(model, loader, progress=False)
    # blocks of ~2 batches: several device-to-host copies, and a final partial block
    monkeypatch.setattr(aggregate, "_HOST_BLOCK_BYTES", 2 * 5 * (3 * 5 * 2 + 3) * 4)
    got = AggregatePosterior.fit(model.cuda(), loader, max_images=36, progress=False)
    assert got.num_images == 36
    for name in ("mu", "var", "pi"):
        r, x = getattr(ref, name)[:36], getattr(got, name)
        assert x.device.type == "cpu", name
        torch.testing.assert_close(x, r, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.slow
def test_training_on_gpu_with_bf16_mixed(tmp_path) -> None:
    from probslot.config import RunConfig
    from probslot.training import train
    from tiny_runs import tiny_config

    cfg = RunConfig.from_dict(
        tiny_config(
            {
                "trainer": {
                    "max_steps": 6,
                    "accelerator": "gpu",
                    "devices": 1,
                    "precision": "bf16-mixed",
                    "output_dir": str(tmp_path),
                    "run_name": "gpu_bf16",
                }
            }
        )
    )
    result = train(cfg, progress=False)
    assert result["steps"] == 6
    assert math.isfinite(result["mse"]) and math.isfinite(result["fg_ari"])
    assert (result.run_dir / "model.safetensors").is_file()
    assert (result.run_dir / "last.ckpt").is_file()
