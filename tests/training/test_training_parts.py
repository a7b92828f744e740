"""Training parts in isolation: LR schedule, EMA, FG-ARI, gradient skipping, atomic writes, panels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from probslot.atomic import atomic_write, atomic_write_text
from probslot.config import OptimConfig
from probslot.training import EMA, AtomicCheckpointIO, SlotLightningModule, fg_ari, lr_at
from probslot.training.callbacks import render_panel
from probslot.typing import AutoencoderOutput, SlotAttentionOutput


# --------------------------------------------------------------------------- schedule
def test_warmup_is_linear_then_constant() -> None:
    kw = dict(lr=0.5, warmup_steps=4, max_steps=20, cosine=False, min_lr=0.0)
    got = [lr_at(s, **kw) for s in range(7)]
    assert got == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5])


def test_cosine_decays_from_lr_to_min_lr() -> None:
    kw = dict(lr=1.0, warmup_steps=3, max_steps=13, cosine=True, min_lr=0.1)
    assert lr_at(3, **kw) == pytest.approx(1.0)
    mid = 3 + 5  # half-way through the 10 decay steps
    assert lr_at(mid, **kw) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(13, **kw) == pytest.approx(0.1)
    assert lr_at(50, **kw) == pytest.approx(0.1)  # clamped after max_steps
    values = [lr_at(s, **kw) for s in range(3, 14)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_schedule_rejects_negative_step() -> None:
    with pytest.raises(ValueError, match="step must be >= 0; got -1"):
        lr_at(-1, lr=1.0, warmup_steps=0, max_steps=1, cosine=False, min_lr=0.0)


# --------------------------------------------------------------------------- EMA
def test_ema_matches_dense_reference() -> None:
    model = nn.Linear(3, 5)
    ema = EMA(model, decay=0.9)
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    for t in range(7):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        for k, v in model.state_dict().items():
            ref[k] = d * ref[k] + (1 - d) * v
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, ref[k])
    assert int(ema.num_updates) == 7
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_decay_zero_follows_weights() -> None:
    model = nn.Linear(2, 7)
    ema = EMA(model, decay=0.0)
    with torch.no_grad():
        model.weight.mul_(3.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, model.weight)


def test_ema_rejects_bad_decay() -> None:
    with pytest.raises(ValueError, match=r"EMA decay must lie in \[0, 1\); got 1.5"):
        EMA(nn.Linear(2, 3), decay=1.5)


# --------------------------------------------------------------------------- FG-ARI
def test_training_uses_the_one_fg_ari_of_metrics() -> None:
    """Validation logs `probslot.metrics.fg_ari` (tested in tests/metrics, NaN without foreground)."""
    import probslot.metrics
    import probslot.training.lit_module

    assert fg_ari is probslot.metrics.fg_ari is probslot.training.lit_module.fg_ari


# --------------------------------------------------------------------------- clipping / skipping
class _Stub(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 5)


def _module_with_grads(scale: float, **optim: float) -> SlotLightningModule:
    lit = SlotLightningModule(_Stub(), OptimConfig(**optim), max_steps=10)
    lit.log = lambda *a, **k: None  # type: ignore[method-assign]  # no trainer attached
    for p in lit.model.parameters():
        p.grad = torch.full_like(p, scale)
    return lit


def test_absurd_gradient_norm_skips_the_update() -> None:
    lit = _module_with_grads(1e4, skip_grad_norm=100.0, grad_clip=0.0)
    optimizer = torch.optim.SGD(lit.model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in lit.model.parameters()]
    lit.on_before_optimizer_step(optimizer)
    optimizer.step()
    assert int(lit.skipped_updates) == 1
    for b, p in zip(before, lit.model.parameters()):
        torch.testing.assert_close(p, b)


def test_non_finite_gradient_skips_the_update() -> None:
    lit = _module_with_grads(float("nan"), skip_grad_norm=100.0)
    lit.on_before_optimizer_step(torch.optim.SGD(lit.model.parameters(), lr=1.0))
    assert int(lit.skipped_updates) == 1
    assert all(p.grad is None for p in lit.model.parameters())


def test_gradients_are_clipped_to_grad_clip() -> None:
    lit = _module_with_grads(2.0, skip_grad_norm=0.0, grad_clip=0.5)
    lit.on_before_optimizer_step(torch.optim.SGD(lit.model.parameters(), lr=1.0))
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in lit.model.parameters()))
    assert norm.item() == pytest.approx(0.5, rel=1e-4)
    assert lit.last_grad_norm == pytest.approx(2.0 * math.sqrt(3 * 5 + 5))
    assert int(lit.skipped_updates) == 0


def test_batch_of_wrong_shape_is_rejected() -> None:
    lit = SlotLightningModule(_Stub(), OptimConfig(), max_steps=3)
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\) in \[0, 1\]; got \(2, 4, 5, 7\)"):
        lit.training_step({"image": torch.zeros(2, 4, 5, 7)}, 0)


# --------------------------------------------------------------------------- atomic writes
def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "x.txt", "old")

    def boom(fh: object) -> None:
        fh.write(b"partial")  # type: ignore[attr-defined]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]  # no temp file left behind


def test_atomic_checkpoint_io_round_trip_and_failure(tmp_path: Path) -> None:
    from probslot.training.checkpoint import probslot_section

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    ours = {"global_step": 3, "state_dict": {"w": torch.arange(5)}, "probslot": probslot_section()}
    io.save_checkpoint(ours, path)
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 3
    torch.testing.assert_close(loaded["state_dict"]["w"], torch.arange(5))

    class Unpicklable:
        def __reduce__(self) -> object:
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({**ours, "global_step": 4, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path)["global_step"] == 3  # the previous checkpoint survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# --------------------------------------------------------------------------- panels
def test_panel_layout_is_input_recon_masks_then_slots() -> None:
    b, k, h, w = 3, 5, 7, 11
    images = torch.rand(b, 3, h, w)
    masks = torch.softmax(torch.randn(b, k, 1, h, w), dim=1)
    out = AutoencoderOutput(
        recon=torch.rand(b, 3, h, w),
        masks=masks,
        per_slot=torch.rand(b, k, 3, h, w),
        grouping=SlotAttentionOutput(slots=torch.zeros(b, k, 2), attn=torch.zeros(b, k, 4)),
        attn_masks=masks[:, :, 0],
    )
    panel = render_panel(images, out, max_rows=2)
    assert panel.shape == (2 * h, (3 + k) * w, 3)
    np.testing.assert_allclose(panel[:h, :w], images[0].permute(1, 2, 0).numpy(), rtol=1e-6)
    assert panel.min() >= 0.0 and panel.max() <= 1.0


# --------------------------------------------------------------------------- curriculum term
def test_aux_mask_weight_anneals_linearly_to_zero() -> None:
    lit = SlotLightningModule(
        _Stub(), OptimConfig(aux_mask_weight=0.6, aux_mask_steps=4), max_steps=9
    )
    assert [lit.aux_mask_weight(s) for s in range(6)] == pytest.approx([0.6, 0.45, 0.3, 0.15, 0, 0])
    constant = SlotLightningModule(_Stub(), OptimConfig(aux_mask_weight=0.2), max_steps=9)
    assert constant.aux_mask_weight(1000) == pytest.approx(0.2)
    off = SlotLightningModule(_Stub(), OptimConfig(), max_steps=9)
    assert off.aux_mask_weight(0) == 0.0


def test_mask_consistency_is_cross_entropy_from_attention_to_masks() -> None:
    b, k, h, w = 2, 3, 5, 7
    attn = torch.softmax(torch.randn(b, k, h, w), dim=1)
    logits = torch.randn(b, k, 1, h, w, requires_grad=True)
    masks = torch.softmax(logits, dim=1)
    out = AutoencoderOutput(
        recon=torch.zeros(b, 3, h, w),
        masks=masks,
        per_slot=None,
        grouping=SlotAttentionOutput(slots=torch.zeros(b, k, 2), attn=torch.zeros(b, k, h * w)),
        attn_masks=attn,
    )
    got = SlotLightningModule.mask_consistency(out)
    want = sum(
        -(attn[i, j, y, x] * torch.log(masks[i, j, 0, y, x]))
        for i in range(b)
        for j in range(k)
        for y in range(h)
        for x in range(w)
    ) / (b * h * w)
    torch.testing.assert_close(got, want)
    got.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def _out_with_pi(pi: torch.Tensor) -> AutoencoderOutput:
    from probslot.typing import SlotPosterior

    b, k = pi.shape
    return AutoencoderOutput(
        recon=torch.zeros(b, 3, 2, 3),
        masks=None,
        per_slot=None,
        grouping=SlotPosterior(
            mu=torch.zeros(b, k, 2), var=torch.ones(b, k, 2), pi=pi, attn=torch.zeros(b, k, 6)
        ),
        attn_masks=torch.zeros(b, k, 2, 3),
    )


def test_pi_balance_is_mean_kl_from_uniform_to_each_images_mixing_weights() -> None:
    uniform = torch.full((3, 4), 0.25)
    assert SlotLightningModule.pi_balance(_out_with_pi(uniform)).item() == pytest.approx(
        0.0, abs=1e-6
    )
    pi = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.5, 0.3, 0.1]])
    want = sum(sum(0.25 * math.log(0.25 / p) for p in row) for row in pi.tolist()) / 2
    got = SlotLightningModule.pi_balance(_out_with_pi(pi))
    assert got.item() == pytest.approx(want, rel=1e-5)
    lit = SlotLightningModule(_Stub(), OptimConfig(aux_pi_weight=2.0, aux_pi_steps=10), max_steps=9)
    assert lit.aux_pi_weight(5) == pytest.approx(1.0)


def test_pi_balance_is_zero_without_mixing_weights() -> None:
    out = AutoencoderOutput(
        recon=torch.zeros(2, 3, 2, 3),
        masks=None,
        per_slot=None,
        grouping=SlotAttentionOutput(slots=torch.zeros(2, 5, 2), attn=torch.zeros(2, 5, 6)),
        attn_masks=torch.zeros(2, 5, 2, 3),
    )
    assert SlotLightningModule.pi_balance(out).item() == 0.0


def test_progress_bar_is_labelled_by_the_step_budget() -> None:
    from types import SimpleNamespace

    from probslot.training.callbacks import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_steps=3000)
    assert bar._get_train_description(1) == "Training of 3000 steps, epoch 1"


def _tiny_model_config(preset: str, **grouping_kwargs: float):
    """An 8×8-image, 3-slot model config with the given grouping options."""
    from probslot.models import ModelConfig

    return ModelConfig(
        preset=preset,
        image_size=8,
        num_slots=3,
        slot_dim=8,
        encoder_kwargs={"channels": [4], "kernel_sizes": [3], "strides": [2]},
        grouping_kwargs=grouping_kwargs,
        decoder_kwargs={"init_size": 4, "channels": [4, 4]},
    )


def test_prune_tau_ramps_in_training_only() -> None:
    """`optim.prune_tau_steps`: the trained copy's ARD threshold rises linearly to the configured
    value; the EMA copy (validation, export) keeps the configured value throughout."""
    from probslot.models import build_model

    cfg = _tiny_model_config("PSA", prune_tau=0.2)
    no_ramp = SlotLightningModule(build_model(cfg), OptimConfig(), max_steps=20)
    assert no_ramp.prune_tau_at(0) == pytest.approx(0.2)
    model = build_model(cfg)
    lit = SlotLightningModule(model, OptimConfig(prune_tau_steps=10, warmup_steps=0), max_steps=20)
    assert [lit.prune_tau_at(s) for s in (0, 5, 10, 15)] == pytest.approx([0.0, 0.1, 0.2, 0.2])
    lit.optimizers = lambda use_pl_optimizer=False: torch.optim.SGD(model.parameters(), lr=0.1)
    lit.log = lambda *args, **kwargs: None
    from probslot.nn import ARDPrune

    seen: list[float] = []  # the threshold each grouping forward ran with

    def record(m, args, kwargs):
        parts = kwargs.get("extensions")
        ard = (m.extension(ARDPrune) if parts is None else next(
            (p for p in parts if isinstance(p, ARDPrune)), None))  # fmt: skip
        seen.append(0.0 if ard is None else ard.tau)

    model.grouping.register_forward_pre_hook(record, with_kwargs=True)
    lit.training_step({"image": torch.rand(2, 3, 8, 8)}, 0)  # global_step 0: no pruning yet
    assert seen == [0.0]
    assert lit.scheduled_grouping_args(5)["extensions"][-1].tau == pytest.approx(0.1)
    assert lit.scheduled_grouping_args(10) == {}  # the configured value: the module's own parts
    assert model.grouping.extension(ARDPrune).tau == pytest.approx(0.2)  # never written to
    assert lit.eval_model.grouping.extension(ARDPrune).tau == pytest.approx(0.2)
    with pytest.raises(ValueError, match="prune_tau_steps must be an integer >= 0"):
        OptimConfig(prune_tau_steps=-1)


def test_temperature_anneals_geometrically_in_training_only() -> None:
    """`optim.temperature_start`: the trained copy's E-step temperature moves geometrically to
    the configured value; the EMA copy keeps the configured value throughout."""
    from probslot.models import build_model

    cfg = _tiny_model_config("PSA", temperature=2.0)
    model = build_model(cfg)
    optim = OptimConfig(temperature_start=8.0, temperature_steps=10, warmup_steps=0)
    lit = SlotLightningModule(model, optim, max_steps=20)
    # 8 → 2 geometrically: 8, 4 (halfway), 2, then 2
    assert [lit.temperature_at(s) for s in (0, 5, 10, 15)] == pytest.approx([8.0, 4.0, 2.0, 2.0])
    lit.optimizers = lambda use_pl_optimizer=False: torch.optim.SGD(model.parameters(), lr=0.1)
    lit.log = lambda *args, **kwargs: None
    from probslot.nn import TemperedEStep

    seen: list[float | None] = []  # the temperature argument of each grouping call
    model.grouping.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("temperature")), with_kwargs=True
    )
    lit.training_step({"image": torch.rand(2, 3, 8, 8)}, 0)
    assert seen == pytest.approx([8.0])
    assert lit.scheduled_grouping_args(15) == {}  # annealed: the module's TemperedEStep(2) applies
    assert model.grouping.extension(TemperedEStep).temperature == pytest.approx(2.0)
    assert lit.eval_model.grouping.extension(TemperedEStep).temperature == pytest.approx(2.0)
    off = SlotLightningModule(build_model(cfg), OptimConfig(), max_steps=20)
    assert off.temperature_at(0) == pytest.approx(2.0)


def test_temperature_anneal_bad_settings_are_rejected() -> None:
    from probslot.models import build_model

    with pytest.raises(ValueError, match="temperature_start must be a number >= 0"):
        OptimConfig(temperature_start=-1.0, temperature_steps=5)
    with pytest.raises(ValueError, match="go together"):
        OptimConfig(temperature_start=4.0)
    sa = build_model(_tiny_model_config("SA"))
    with pytest.raises(ValueError, match="has no temperature"):
        SlotLightningModule(sa, OptimConfig(temperature_start=4.0, temperature_steps=5), 20)
