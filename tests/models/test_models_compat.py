"""Run directories written by probslot 0.1.0 (before the PSA restructure) load, build the same
model and give the same outputs.

`tests/fixtures/runs_v0_1_0/` was written by the old code (`tests/fixtures/make_v010_runs.py`):
config.yaml, model.safetensors and golden.safetensors (a batch of images and the model's outputs
under `torch.manual_seed(0)`). The runs cover the authors' PSA-Proj refinements (whose state-dict
keys moved under `refine.`) with every in-EM option, and base PSA with positions in the mixture.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import probslot
from probslot.models import ModelConfig
from probslot.nn import ARDPrune, MomentMerge, PositionalPSA, Standardize, TemperedEStep

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs_v0_1_0"
RUNS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def test_the_fixtures_are_there():
    assert RUNS == ["base_no_query", "base_positions", "proj_refine_ard"]


@pytest.mark.parametrize("name", RUNS)
def test_old_run_directories_give_the_same_outputs(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these option names are current: no deprecation
        model = probslot.load_model(FIXTURES / name)
    golden = load_file(str(FIXTURES / name / "golden.safetensors"))
    torch.manual_seed(0)
    with torch.no_grad():  # 0.1.0 drew the initial slots from torch's generator in eval mode too
        out = model(golden["images"], grouping_args={"draw": "random"})
    got = {
        "recon": out.recon,
        "attn_masks": out.attn_masks,
        "mu": out.grouping.mu,
        "var": out.grouping.var,
        "pi": out.grouping.pi,
        "attn": out.grouping.attn,
    }
    for key, value in got.items():
        # bit-exact on the machine that wrote them; other CPUs may differ in the last bits
        torch.testing.assert_close(value, golden[key], rtol=1e-5, atol=1e-6, msg=key)


def test_old_options_build_the_matching_parts():
    ard = probslot.load_model(FIXTURES / "proj_refine_ard").grouping
    assert [type(p) for p in ard.extensions] == [Standardize, TemperedEStep, MomentMerge, ARDPrune]
    assert (ard.extension(ARDPrune).tau, ard.extension(ARDPrune).start) == (0.1, 2)
    assert (ard.extension(MomentMerge).dist, ard.extension(MomentMerge).start) == (0.8, 3)
    assert ard.refine is not None and ard.variance == "map"
    pos = probslot.load_model(FIXTURES / "base_positions").grouping
    assert isinstance(pos, PositionalPSA) and (pos.coord_dims, pos.coord_weight) == (2, 0.5)
    exact = probslot.load_model(FIXTURES / "base_no_query").grouping
    assert exact.variant == "exact" and exact.init == "standard"


def test_a_renamed_option_maps_with_one_deprecation_message():
    """`coords_in_estep` (before `coord_weight`): false keeps positions out of the E-step."""
    model = yaml.safe_load((FIXTURES / "base_no_query" / "config.yaml").read_text())["model"]
    old = {**model, "grouping_kwargs": {**model["grouping_kwargs"], "coords_in_estep": False}}
    del old["grouping_kwargs"]["coord_weight"]
    with pytest.warns(
        FutureWarning, match=r"coords_in_estep=False is deprecated: use coord_weight=0.0"
    ) as seen:
        cfg = ModelConfig(**old)
    assert len(seen) == 1
    assert (
        cfg.grouping_kwargs["coord_weight"] == 0.0 and "coords_in_estep" not in cfg.grouping_kwargs
    )
    assert cfg == ModelConfig(**model)
    both = {**old, "grouping_kwargs": {**old["grouping_kwargs"], "coord_weight": 1.0}}
    with pytest.raises(ValueError, match="sets both 'coords_in_estep'.*keep only 'coord_weight'"):
        ModelConfig(**both)
