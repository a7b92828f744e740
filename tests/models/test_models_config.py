"""ModelConfig + presets + build_model: resolution, serialisation, validation messages."""

import dataclasses

import pytest
import torch
import yaml

from probslot.models import (
    PRESETS,
    DiscretisedGaussian,
    ModelConfig,
    SlotAutoencoder,
    available_presets,
    build_model,
)
from probslot.models.likelihood import MSE


def test_presets_are_the_papers_models():
    assert available_presets() == ["SA", "SA-NoA", "PSA", "PSA-Proj", "PSA-NoA", "AE"]


@pytest.mark.parametrize(
    ("preset", "grouping", "decoder", "likelihood", "iters"),
    [
        ("SA", "sa", "broadcast", "dgauss", 3),
        ("SA-NoA", "sa", "noa", "dgauss", 3),
        ("PSA", "psa", "broadcast", "dgauss", 5),
        ("PSA-Proj", "psa-proj", "broadcast", "mse", 5),
        ("PSA-NoA", "psa-proj", "noa", "dgauss", 5),  # the paper's definition (notes §11.4)
        ("AE", "ae", "broadcast", "mse", 1),  # Table 2's AE (Brady et al. 2023): no iterations
    ],
)
def test_preset_resolution(preset, grouping, decoder, likelihood, iters):
    r = ModelConfig(preset=preset).resolve()
    assert (r.preset, r.encoder, r.grouping, r.decoder) == (None, "cnn", grouping, decoder)
    assert (r.likelihood, r.iters) == (likelihood, iters)
    assert r.encoder_kwargs == {"out_dim": 64}
    assert ModelConfig(**dataclasses.asdict(r)) == r  # resolved configs round-trip too


def test_explicit_choices_override_the_preset():
    cfg = ModelConfig(
        preset="PSA-NoA",
        grouping="psa",
        iters=2,
        likelihood="mse",
        encoder_kwargs={"out_dim": 32},
        slot_dim=32,
        grouping_kwargs={"query_proj": False},
    )
    r = cfg.resolve()
    assert (r.grouping, r.decoder, r.iters, r.likelihood) == ("psa", "noa", 2, "mse")
    assert r.encoder_kwargs == {"out_dim": 32}
    assert r.grouping_kwargs == {"query_proj": False}


@pytest.mark.parametrize("preset", available_presets())
def test_config_round_trips_through_dict_and_yaml(preset):
    cfg = ModelConfig(
        preset=preset,
        image_size=(24, 40),
        num_slots=7,
        encoder_kwargs={"strides": [1, 2, 2, 1]},
        likelihood_kwargs={},
    )
    assert cfg.image_size == [24, 40] and cfg.image_hw == (24, 40)
    d = dataclasses.asdict(cfg)
    assert ModelConfig(**d) == cfg
    assert ModelConfig(**yaml.safe_load(yaml.safe_dump(d))) == cfg
    assert cfg.to_dict() == d


def test_build_model_wires_the_components():
    cfg = ModelConfig(
        preset="PSA",
        image_size=[16, 24],
        num_slots=4,
        slot_dim=12,
        iters=2,
        encoder_kwargs={"channels": [8, 8], "kernel_sizes": [3, 3], "strides": [1, 2]},
        decoder_kwargs={"init_size": [4, 6], "channels": [8, 8, 8]},
        likelihood_kwargs={"autoregressive": True},
    )
    model = build_model(cfg)
    assert isinstance(model, SlotAutoencoder)
    assert model.image_size == (16, 24) and model.num_slots == 4
    assert model.encoder.out_dim == model.grouping.dim == 12
    assert model.grouping.slot_dim == model.decoder.slot_dim == 12
    assert model.grouping.iters == 2 and model.grouping.variant == "base"
    assert isinstance(model.likelihood, DiscretisedGaussian) and model.likelihood.autoregressive
    out = model(torch.rand(2, 3, 16, 24))
    assert out.recon.shape == (2, 3, 16, 24)


def test_build_model_options_reach_the_grouping():
    cfg = ModelConfig(
        preset="PSA-Proj", grouping_kwargs={"gru": True, "mlp": True, "norm_slots": True}
    )
    model = build_model(cfg)
    assert model.grouping.refine.gru is not None and model.grouping.refine.mlp is not None
    assert isinstance(model.likelihood, MSE)


def test_build_model_needs_a_model_config():
    with pytest.raises(
        TypeError, match=r"expects a ModelConfig; got dict\. .*ModelConfig\(\*\*d\)"
    ):
        build_model({"preset": "PSA"})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"preset": "PSA-proj"},
            ValueError,
            r"unknown model preset 'PSA-proj'\. Did you mean 'PSA-Proj'\?",
        ),
        ({"preset": "psa"}, ValueError, r"unknown model preset 'psa'\. Did you mean 'PSA'\?"),
        (
            {"grouping": "psa_proj"},
            ValueError,
            r"unknown grouping 'psa_proj'\. Did you mean 'psa-proj'\?",
        ),
        (
            {"decoder": "transfomer"},
            ValueError,
            r"unknown decoder 'transfomer'\. Did you mean 'transformer'\?",
        ),
        ({"encoder": "cnm"}, ValueError, r"unknown encoder 'cnm'\. Did you mean 'cnn'\?"),
        (
            {"likelihood": "gauss"},
            ValueError,
            r"unknown likelihood 'gauss'\. Did you mean 'dgauss'\?",
        ),
        (
            {"encoder_kwargs": {"chanels": [8]}},
            ValueError,
            r"unknown option 'chanels' for encoder 'cnn' .*Did you mean 'channels'\? Accepted: channels",
        ),
        ({"decoder_kwargs": {"init_sise": 4}}, ValueError, r"Did you mean 'init_size'\?"),
        ({"likelihood_kwargs": {"init_scal": 0.2}}, ValueError, r"Did you mean 'init_scale'\?"),
        (
            {"decoder_kwargs": {"image_size": 16}},
            ValueError,
            r"decoder_kwargs must not set 'image_size' \(set ModelConfig.image_size\)",
        ),
        (
            {"grouping_kwargs": {"iters": 4}},
            ValueError,
            r"must not set 'iters' \(set ModelConfig.iters\)",
        ),
        ({"num_slots": "5"}, TypeError, r"num_slots must be an integer >= 1; got '5' \(str\)"),
        ({"num_slots": True}, TypeError, r"num_slots must be an integer >= 1; got True \(bool\)"),
        ({"slot_dim": 0}, ValueError, r"ModelConfig.slot_dim must be an integer >= 1; got 0"),
        ({"iters": 0}, ValueError, r"ModelConfig.iters must be an integer >= 1; got 0"),
        ({"image_size": [32]}, TypeError, r"image_size must be an int or a \[height, width\] list"),
        ({"image_size": -4}, ValueError, r"image_size must be positive; got -4"),
        ({"encoder_kwargs": [1, 2]}, TypeError, r"encoder_kwargs must be a dict with str keys"),
        (
            {"preset": None, "grouping": "psa"},
            ValueError,
            r"without a preset needs explicit encoder, decoder; got None",
        ),
    ],
)
def test_config_errors_name_the_problem_and_the_fix(kwargs, error, message):
    with pytest.raises(error, match=message):
        ModelConfig(**kwargs)


def test_unknown_field_is_a_type_error():
    with pytest.raises(TypeError, match="num_slot"):
        ModelConfig(num_slot=4)


def test_psa_base_needs_tokens_of_slot_size():
    cfg = ModelConfig(preset="PSA", slot_dim=16, encoder_kwargs={"out_dim": 32})
    with pytest.raises(ValueError, match="slot_dim must equal dim=32"):
        build_model(cfg)


def test_presets_registry_is_consistent():
    for name, preset in PRESETS.items():
        assert preset.name == name and preset.description
