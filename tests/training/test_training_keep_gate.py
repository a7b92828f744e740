"""Training with a learned keep gate (AdaSlot's sparsity penalty) and the AE preset."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import probslot
from probslot.config import OptimConfig, RunConfig
from probslot.data import SpritesDataset, collate
from probslot.io import RunPaths
from probslot.models import ModelConfig, build_model
from probslot.nn import FlatSlots, KeepGate
from probslot.training import SlotLightningModule, train
from tiny_runs import tiny_config

S = 16


def lit_module(penalty: float) -> SlotLightningModule:
    cfg = ModelConfig(
        preset="PSA",
        image_size=S,
        num_slots=4,
        slot_dim=5,
        iters=2,
        likelihood="mse",
        encoder_kwargs={"channels": [4, 6], "kernel_sizes": [3, 3], "strides": [1, 2]},
        decoder_kwargs={"init_size": 8, "channels": [4, 6]},
        keep_gate={"penalty": penalty},
    )
    torch.manual_seed(0)
    lit = SlotLightningModule(build_model(cfg), OptimConfig(ema_decay=0.0), max_steps=10)
    lit.logged = {}
    lit.log = lambda name, value, **kw: lit.logged.__setitem__(name, value)  # no trainer here
    opt = SimpleNamespace(param_groups=[{"lr": 1e-3}])
    lit.optimizers = lambda use_pl_optimizer=True: opt
    return lit


def batch() -> dict:
    ds = SpritesDataset(3, image_size=S, max_objects=2, seed=2)
    return collate([ds[i] for i in range(3)])


def test_the_training_loss_adds_the_sparsity_penalty_and_logs_it() -> None:
    penalised, plain = lit_module(0.7), lit_module(0.0)
    torch.manual_seed(5)  # the same slot initialisation and Gumbel noise in both
    loss = penalised.training_step(batch(), 0)
    torch.manual_seed(5)
    base = plain.training_step(batch(), 0)
    aux = penalised.logged["train/aux_keep"]
    assert 0 < float(aux.detach()) < 1
    torch.testing.assert_close(loss, base + 0.7 * aux)
    logged = float(plain.logged["train/aux_keep"].detach())  # logged without a penalty too
    assert logged == pytest.approx(float(aux.detach()))


def test_the_penalty_pushes_the_keep_probabilities_down() -> None:
    lit = lit_module(1.0)
    gate = lit.model.grouping
    assert isinstance(gate, KeepGate)
    images = batch()["image"]
    with torch.no_grad():
        before = lit.model(images).grouping.keep_prob.mean()
    out = lit.model(images)
    penalty = gate.penalty * lit.keep_sparsity(out)  # the term training adds
    penalty.backward()
    bias = gate.score[-1].bias
    assert bias.grad is not None and float(bias.grad) > 0  # descent lowers every keep logit
    with torch.no_grad():
        for p in gate.score.parameters():
            p -= 0.5 * p.grad
        after = lit.model(images).grouping.keep_prob.mean()
    assert after < before


def _run(tmp_path: Path, name: str, model: dict, steps: int, **data) -> RunConfig:
    cfg = copy.deepcopy(tiny_config({"model": model, "data": data}))
    cfg["trainer"].update(
        output_dir=str(tmp_path),
        run_name=name,
        max_steps=steps,
        val_every=steps,
        panel_every=steps,
        progress="none",
    )
    return RunConfig.from_dict(cfg)


def _logged(run_dir: Path, key: str) -> list[float]:
    rows = csv.DictReader((RunPaths(run_dir).logs / "csv" / "metrics.csv").read_text().splitlines())
    return [float(r[key]) for r in rows if r.get(key)]


@pytest.mark.parametrize(
    "model",
    [{"preset": "AE", "iters": None}, {"preset": "PSA", "keep_gate": {"penalty": 0.2}}],
    ids=["AE", "PSA+gate"],
)
def test_a_tiny_run_trains_and_its_model_loads(model, tmp_path: Path) -> None:
    result = train(_run(tmp_path, "run", model, steps=5), progress=False)
    assert result["steps"] == 5
    loaded = probslot.load_model(result.run_dir)
    if model["preset"] == "AE":
        assert isinstance(loaded.grouping, FlatSlots)
        assert _logged(result.run_dir, "train/aux_keep") == []  # no gate, no penalty
    else:
        assert isinstance(loaded.grouping, KeepGate) and loaded.grouping.penalty == 0.2
        logged = _logged(result.run_dir, "train/aux_keep")
        assert logged and all(0 < v < 1 for v in logged)


@pytest.mark.slow
def test_a_larger_penalty_keeps_fewer_slots(tmp_path: Path) -> None:
    """Three dozen steps on tiny sprites from the same start: a strong penalty lowers the
    expected number of kept slots (K · mean keep_prob, what it penalises) against none, and
    keeps no more slots (AdaSlot's sparsity term at work)."""
    kept = {}
    for penalty in (0.0, 3.0):
        model = {"num_slots": 5, "keep_gate": {"penalty": penalty}}
        cfg = _run(tmp_path, f"p{penalty:g}", model, steps=36, num_train=21)
        result = train(cfg, progress=False)
        gated = probslot.load_model(result.run_dir)
        images = torch.stack(
            [SpritesDataset(16, image_size=S, seed=9)[i]["image"] for i in range(16)]
        )
        with torch.no_grad():
            post = gated.encode(images)
        kept[penalty] = (float(post.gates.sum(1).mean()), float(post.keep_prob.mean()))
    assert kept[3.0][1] < kept[0.0][1] - 0.05, kept
    assert kept[3.0][0] <= kept[0.0][0], kept
