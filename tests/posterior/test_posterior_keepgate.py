"""The learned keep gate's rule in the pruning analysis: `keep_gate_result`, the "learned keep
gate" entry of `prune_analysis` and of `probslot prune`, against direct computations."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from probslot.config import RunConfig, dump_config
from probslot.data import SpritesDataset, collate
from probslot.io import RunPaths, save_model_weights
from probslot.models import build_model
from probslot.nn import KeepGate
from probslot.posterior.commands import demo_posterior, prune
from probslot.posterior.pruning import (
    KeepGateResult,
    count_flops,
    keep_gate_result,
    prune_analysis,
    slot_count_mae,
)
from tiny_runs import tiny_config, tiny_model

B, K, D, S = 3, 5, 4, 16  # batch, slots, slot dim, image side


def gated_model(preset: str = "PSA", gate: dict | None = None, **kw) -> torch.nn.Module:
    model = tiny_model(preset, image_size=S, num_slots=K, slot_dim=D, keep_gate=gate, **kw).eval()
    if isinstance(model.grouping, KeepGate):
        # centre the keep logits on the data, so that the gate keeps about half of the slots
        last = model.grouping.score[-1]
        with torch.no_grad():
            slots = model.encode(sprite_batches()[0]["image"]).slots
            last.bias.sub_(model.grouping.logits(slots).median())
    return model


def sprite_batches(num: int = 7, batch: int = B) -> list[dict]:
    ds = SpritesDataset(num, image_size=S, max_objects=2, seed=3)
    items = [ds[i] for i in range(num)]
    return [collate(items[i : i + batch]) for i in range(0, num, batch)]


def direct(model, batches, own_keep=None):
    """The gate's figures computed by hand: kept counts, per-image MSE of the gated decode and
    of the full decode, decoder FLOPs of both."""
    kept, objects, mse, base_mse, flops, base_flops, probs = [], [], [], [], 0, 0, []
    with torch.no_grad():
        for b in batches:
            images = b["image"]
            post = model.encode(images)
            keep = post.gates.bool() if own_keep is None else own_keep(post)
            out, f = count_flops(model.decode, post.slots, keep=keep)
            base, bf = count_flops(model.decode, post.slots)
            kept.append(keep.sum(1))
            objects.append(b["visibility"].sum(1))
            mse.append((out.recon.double() - images.double()).square().flatten(1).mean(1))
            base_mse.append((base.recon.double() - images.double()).square().flatten(1).mean(1))
            flops, base_flops = flops + f, base_flops + bf
            probs.append(post.keep_prob.double())
    return (
        torch.cat(kept),
        torch.cat(objects),
        torch.cat(mse).mean().item(),
        torch.cat(base_mse).mean().item(),
        flops / base_flops,
        torch.cat(probs).mean().item(),
    )


@pytest.mark.parametrize("preset", ["PSA", "SA", "AE"])
def test_keep_gate_result_matches_a_direct_computation(preset) -> None:
    model = gated_model(preset, gate={})
    batches = sprite_batches()
    result = keep_gate_result(model, batches, timing_repeats=1)
    assert isinstance(result, KeepGateResult) and result.num_images == 7
    kept, objects, mse, base_mse, flops_ratio, mean_prob = direct(model, batches)
    assert kept.min() >= 1 and kept.sum() < 7 * K  # the gate drops slots, never all of them
    assert result.mean_kept == pytest.approx(kept.double().mean().item())
    assert result.mae_with_background == pytest.approx(
        slot_count_mae(kept, objects, "with_background")
    )
    assert result.mae("objects_only") == pytest.approx(
        slot_count_mae(kept, objects, "objects_only")
    )
    assert result.mse == pytest.approx(mse, rel=1e-9)
    assert result.baseline_mse == pytest.approx(base_mse, rel=1e-9)
    assert result.mse_change_pct == pytest.approx(100 * (mse / base_mse - 1), rel=1e-6)
    assert result.decoder_flops_saved == pytest.approx(1 - flops_ratio, rel=1e-9)
    assert result.decoder_flops_saved == pytest.approx(1 - kept.sum().item() / (7 * K), abs=0.02)
    assert 0 < result.model_flops_saved < result.decoder_flops_saved
    assert result.mean_keep_prob == pytest.approx(mean_prob)
    assert not model.training  # left as it was


def test_keep_gate_result_needs_a_gate_and_valid_arguments() -> None:
    batches = sprite_batches(num=3)
    with pytest.raises(TypeError, match=r"needs a model with a learned keep gate .* SlotAttention"):
        keep_gate_result(gated_model("SA"), batches)
    model = gated_model("SA", gate={})
    with pytest.raises(ValueError, match="max_images must be an integer >= 1"):
        keep_gate_result(model, batches, max_images=0)
    with pytest.raises(ValueError, match="loader yielded no images"):
        keep_gate_result(model, [])
    assert keep_gate_result(model, batches, max_images=2, timing_repeats=1).num_images == 2


def test_prune_analysis_reports_the_gate_beside_the_taus() -> None:
    model = gated_model("PSA", gate={})
    batches = sprite_batches()
    report = prune_analysis(model, batches, taus=(0.0, 0.1), timing_repeats=1)
    gate = report.keep_gate
    assert isinstance(gate, KeepGateResult)
    standalone = keep_gate_result(model, batches, timing_repeats=1)
    for field in ("mean_kept", "mae_with_background", "decoder_flops_saved", "mse", "fg_ari"):
        assert getattr(gate, field) == pytest.approx(getattr(standalone, field)), field
    assert gate.baseline_mse == report.baseline_mse
    # the τ rows threshold π and ignore the gate: τ = 0 is the baseline
    assert report.at(0.0).mean_kept == K and report.at(0.0).mse == report.baseline_mse
    table = report.to_markdown()
    assert table.count("\n") == 2 + 3 and "| learned keep gate |" in table.splitlines()[-1]
    assert report.to_dict()["keep_gate"]["mean_kept"] == gate.mean_kept
    assert "learned keep gate (keep_prob > 0.5" in report.summary(0.1)
    plain = prune_analysis(gated_model("PSA"), batches, taus=(0.1,), timing_repeats=1)
    assert plain.keep_gate is None and "learned keep gate" not in plain.to_markdown()


def test_in_em_mode_measures_the_gate_on_the_models_own_forward_pass() -> None:
    model = gated_model("PSA", gate={}, grouping_kwargs={"prune_tau": 0.25})
    batches = sprite_batches(num=4, batch=4)
    report = prune_analysis(model, batches, taus=(0.0, 0.25), timing_repeats=1)
    assert report.in_em
    gate = report.keep_gate

    def own(post):  # the gate among the slots that survived ARD inside EM
        return post.gates.bool() & (post.pi > 0)

    kept, objects, mse, _, _, _ = direct(model, batches, own)
    assert gate.mean_kept == pytest.approx(kept.double().mean().item())
    assert gate.mse == pytest.approx(mse, rel=1e-9)
    assert gate.mae_with_background == pytest.approx(
        slot_count_mae(kept, objects, "with_background")
    )


def make_run(root: Path, name: str, **model) -> RunPaths:
    """A run directory (config.yaml + untrained model.safetensors) of the tiny run config."""
    data = copy.deepcopy(tiny_config({"data": {"num_test": 5, "batch_size": 3}, "model": model}))
    data["trainer"].update(output_dir=str(root), run_name=name)
    cfg = RunConfig.from_dict(data)
    paths = RunPaths(root / name)
    paths.root.mkdir()
    paths.config.write_text(dump_config(cfg))
    torch.manual_seed(0)
    save_model_weights(build_model(cfg.model), paths.weights)
    return paths


def test_probslot_prune_writes_the_gate_row(tmp_path: Path, capsys) -> None:
    paths = make_run(tmp_path, "gated", keep_gate={"penalty": 0.2})
    path = prune(str(paths.root), tau=0.1, progress=False)
    saved = json.loads(path.read_text())
    assert saved["keep_gate"]["num_images"] == 5
    assert set(saved["keep_gate"]) >= {"mean_kept", "mae_with_background", "decoder_flops_saved"}
    assert "| learned keep gate |" in (paths.root / "pruning" / "sweep.md").read_text()
    assert "learned keep gate" in capsys.readouterr().out


def test_runs_without_pi_are_refused_or_skipped_with_the_reason(tmp_path: Path, capsys) -> None:
    gated_sa = make_run(tmp_path, "adaslot", preset="SA", keep_gate={})
    with pytest.raises(ValueError, match=r"slot-attention model .* measured by .*keep_gate_result"):
        prune(str(gated_sa.root), progress=False)
    ae = make_run(tmp_path, "ae", preset="AE", iters=None)
    with pytest.raises(
        ValueError, match=r"is the AE baseline \(grouping FlatSlots\); the AE has no"
    ):
        prune(str(ae.root), progress=False)
    assert demo_posterior(ae.root, progress=False) == {}
    assert "the AE baseline has no posterior" in capsys.readouterr().out
