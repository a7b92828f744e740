"""PSA, em_step, the autoencoder, a training step and the metrics stay finite at the edges: inputs
scaled 1e-4 … 1e4, constant inputs and images, a single token, one slot, bf16 autocast."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from probslot.config import OptimConfig
from probslot.metrics import fg_ari, masks_to_labels
from probslot.models import ModelConfig, build_model
from probslot.nn import GROUPINGS
from probslot.nn.functional import em_step
from probslot.training import SlotLightningModule

SCALES = (1e-4, 1e-2, 1.0, 1e2, 1e4)
#: (batch, tokens, slots): pairwise-distinct where there is more than one, plus the edges
SHAPES = ((2, 1, 1), (2, 1, 3), (3, 7, 1), (2, 11, 5))
OPTIONS = (
    ("psa", {}),
    ("psa", {"standardize": True, "temperature": 5.0}),
    ("psa", {"variance": "map", "prune_tau": 0.1}),
    ("psa-proj", {"merge_dist": 1.0}),
)


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors)


@pytest.mark.parametrize("name, options", OPTIONS, ids=[f"{n}{o}" for n, o in OPTIONS])
def test_psa_is_finite_at_every_scale_shape_and_constant_input(name: str, options: dict) -> None:
    for scale, (b, n, k), constant, train in itertools.product(
        SCALES, SHAPES, (False, True), (False, True)
    ):
        module = GROUPINGS.build(name, num_slots=k, dim=6, **options).train(train)
        x = torch.ones(b, n, 6) if constant else torch.randn(b, n, 6)
        x = (x * scale).requires_grad_(True)
        out = module(x)
        where = (name, options, scale, (b, n, k), constant, train)
        assert _finite(out.mu, out.var, out.pi, out.attn), where
        assert torch.allclose(out.pi.sum(-1), torch.ones(b), atol=1e-4), where
        assert bool((out.var > 0).all()), where
        if train:
            (out.mu.sum() + out.var.sum()).backward()
            assert _finite(x.grad), where
            assert all(_finite(p.grad) for p in module.parameters() if p.grad is not None), where


@pytest.mark.parametrize("name, options", OPTIONS[:2], ids=["psa", "psa-standardized"])
def test_psa_is_finite_under_bf16_autocast(name: str, options: dict) -> None:
    for scale, (b, n, k) in itertools.product(SCALES, SHAPES):
        module = GROUPINGS.build(name, num_slots=k, dim=6, **options).train()
        x = (torch.randn(b, n, 6) * scale).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x)
        assert _finite(out.mu, out.var, out.pi, out.attn), (scale, (b, n, k))
        out.mu.float().sum().backward()
        assert _finite(x.grad), (scale, (b, n, k))


def test_em_step_is_finite_on_raw_scaled_tokens() -> None:
    """No input norm in front of it here: keys and values at 1e-4 … 1e4, constant or one token."""
    for scale, (b, n, k), variance, constant in itertools.product(
        SCALES, SHAPES, ("mle", "map"), (False, True)
    ):
        d = 4
        keys = torch.full((b, n, d), scale) if constant else torch.randn(b, n, d) * scale
        mean = torch.randn(b, k, d) * scale
        log_pi = torch.full((b, k), -math.log(k))
        step = em_step(
            keys,
            keys,
            mean,
            torch.ones(b, k, d),
            log_pi,
            variance=variance,
            prev_mu=mean if variance == "map" else None,
        )
        tensors = [v for v in vars(step).values() if isinstance(v, torch.Tensor)]
        assert tensors and _finite(*tensors), (scale, (b, n, k), variance, constant)


def _tiny_model(num_slots: int) -> torch.nn.Module:
    cfg = ModelConfig(
        preset="PSA",
        image_size=8,
        num_slots=num_slots,
        slot_dim=6,
        encoder_kwargs={"channels": [4], "kernel_sizes": [3], "strides": [2]},
        decoder_kwargs={"init_size": 4, "channels": [4, 4]},
        grouping_kwargs={"standardize": True},
    )
    return build_model(cfg)


@pytest.mark.parametrize("num_slots", [1, 3])
@pytest.mark.parametrize("fill", [0.0, 1.0, 0.5])
def test_constant_images_give_a_finite_loss_gradient_and_metrics(
    num_slots: int, fill: float
) -> None:
    """All-black, all-white and grey images: the loss, every gradient, the masks and FG-ARI."""
    model = _tiny_model(num_slots).train()
    lit = SlotLightningModule(model, OptimConfig(), max_steps=10)
    images = torch.full((3, 3, 8, 8), fill)
    for autocast in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(images)
            loss = lit.nll(out, images)
        loss.float().backward()
        assert _finite(loss, out.recon, out.masks, out.attn_masks), (fill, autocast)
        assert all(_finite(p.grad) for p in model.parameters() if p.grad is not None)
    labels = torch.zeros(3, 8, 8, dtype=torch.long)
    labels[:, 2:5, 2:5] = 1
    scores = fg_ari(masks_to_labels(out.masks[:, :, 0].float()), labels)
    assert _finite(scores) and bool(((scores >= -1) & (scores <= 1)).all())
