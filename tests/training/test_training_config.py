"""Typed run configs: validation errors, dotted overrides, YAML round trip, the shipped presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from probslot.config import (
    CONFIG_DIR,
    OptimConfig,
    PruneConfig,
    RunConfig,
    TrainerConfig,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
    preset_names,
)

REQUIRED_PRESETS = {
    "sprites_psa",
    "sprites_sa",
    "sprites_psa_proj",
    "sprites_psa_noa",
    "sprites_sa_noa",
    "demo",
}


def test_required_presets_exist() -> None:
    assert set(preset_names()) >= REQUIRED_PRESETS, preset_names()


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_every_preset_loads_and_round_trips(name: str) -> None:
    cfg = load_config(name)
    assert isinstance(cfg.optim, OptimConfig)
    assert isinstance(cfg.trainer, TrainerConfig)
    again = RunConfig.from_dict(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


def test_yaml_round_trip_through_a_file(tiny_yaml: Path, tmp_path: Path) -> None:
    cfg = load_config(tiny_yaml)
    out = tmp_path / "resolved.yaml"
    out.write_text(dump_config(cfg))
    assert load_config(out) == cfg
    # tuples are written as YAML lists and read back as tuples
    assert yaml.safe_load(out.read_text())["optim"]["betas"] == [0.9, 0.9]
    assert load_config(out).optim.betas == (0.9, 0.9)


def test_unknown_top_level_key_names_closest(tiny_yaml: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown config key 'optm'.*Did you mean 'optim'"):
        load_config(tiny_yaml, ["optm.lr=0.1"])


def test_unknown_nested_key_names_closest(tiny_yaml: Path) -> None:
    with pytest.raises(ValueError, match=r"'trainer.max_step'.*Did you mean 'trainer.max_steps'"):
        load_config(tiny_yaml, ["trainer.max_step=5"])
    with pytest.raises(ValueError, match=r"'model.num_slot'.*Did you mean 'model.num_slots'"):
        load_config(tiny_yaml, ["model.num_slot=5"])
    with pytest.raises(ValueError, match=r"'data.batchsize'.*Did you mean 'data.batch_size'"):
        load_config(tiny_yaml, ["data.batchsize=5"])


def test_unknown_key_in_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  warmup: 10\n")
    with pytest.raises(ValueError, match=r"'optim.warmup'.*Did you mean 'optim.warmup_steps'"):
        load_config(path)


def test_wrong_type_names_field_type_and_value(tiny_yaml: Path) -> None:
    with pytest.raises(TypeError, match=r"'trainer.max_steps' expects int; got 'many' \(str\)"):
        load_config(tiny_yaml, ["trainer.max_steps=many"])
    with pytest.raises(TypeError, match=r"'optim.cosine' expects bool; got 3 \(int\)"):
        load_config(tiny_yaml, ["optim.cosine=3"])
    with pytest.raises(
        TypeError, match=r"'optim.betas' expects tuple\[float, float\]; got \[0.9\]"
    ):
        load_config(tiny_yaml, ["optim.betas=[0.9]"])
    with pytest.raises(TypeError, match=r"'trainer.precision' expects '32' \| 'bf16-mixed'"):
        load_config(tiny_yaml, ["trainer.precision=bf17"])
    with pytest.raises(TypeError, match=r"'model.num_slots' expects int; got 2.5"):
        load_config(tiny_yaml, ["model.num_slots=2.5"])


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match=r"'optim' must be a mapping.*got 3"):
        RunConfig.from_dict({"optim": 3})


def test_value_ranges_are_checked() -> None:
    with pytest.raises(ValueError, match=r"optim.lr must be > 0; got -1.0"):
        OptimConfig(lr=-1.0)
    with pytest.raises(ValueError, match=r"optim.ema_decay must lie in \[0, 1\).*got 1.0"):
        config_from_dict(OptimConfig, {"ema_decay": 1})
    with pytest.raises(ValueError, match=r"trainer.run_name must be a non-empty name"):
        TrainerConfig(run_name="a/b")


def test_prune_section_defaults_to_none_and_checks_its_values(tiny_yaml: Path) -> None:
    data = yaml.safe_load(tiny_yaml.read_text())
    assert RunConfig.from_dict(data).prune == PruneConfig(None, None, None)
    data["prune"] = {"merge_dist": 1, "prune_start": 3, "tau": "5e-2"}
    cfg = RunConfig.from_dict(data)
    assert (cfg.prune.merge_dist, cfg.prune.prune_start, cfg.prune.tau) == (1.0, 3, 0.05)
    assert RunConfig.from_dict(yaml.safe_load(dump_config(cfg))) == cfg
    with pytest.raises(ValueError, match=r"prune.tau must be in \[0, 1\) or null; got 1.0"):
        PruneConfig(tau=1.0)
    with pytest.raises(ValueError, match=r"prune.merge_dist must be >= 0 or null; got -0.5"):
        PruneConfig(merge_dist=-0.5)
    with pytest.raises(ValueError, match=r"prune.prune_start must be an EM iteration >= 1"):
        PruneConfig(prune_start=0)
    with pytest.raises(ValueError, match=r"Did you mean 'prune.merge_dist'"):
        RunConfig.from_dict({**data, "prune": {"merge_dst": 1.0}})


def test_image_sizes_of_data_and_model_must_agree(tiny_yaml: Path) -> None:
    with pytest.raises(ValueError, match=r"data.image_size=32 but the model.*model.image_size=32"):
        load_config(tiny_yaml, ["data.image_size=32"])


def test_dotted_overrides_apply_and_parse_yaml_values(tiny_yaml: Path) -> None:
    cfg = load_config(
        tiny_yaml,
        [
            "model.num_slots=5",
            "optim.lr=3e-4",
            "optim.betas=[0.5,0.7]",
            "trainer.precision=bf16-mixed",
            "model.grouping_kwargs.init=standard",
            "trainer.deterministic=true",
        ],
    )
    assert cfg.model.num_slots == 5
    assert cfg.optim.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string; accepted
    assert cfg.optim.betas == (0.5, 0.7)
    assert cfg.trainer.precision == "bf16-mixed"
    assert cfg.model.grouping_kwargs == {"init": "standard"}
    assert cfg.trainer.deterministic is True
    # untouched fields keep the file's values
    assert cfg.data.batch_size == 3


def test_parse_override_errors() -> None:
    assert parse_override("a.b=1") == (["a", "b"], 1)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    with pytest.raises(
        ValueError, match=r"must look like section.key=value.*got 'model.num_slots'"
    ):
        parse_override("model.num_slots")
    with pytest.raises(ValueError, match=r"got 'a..b=1'"):
        parse_override("a..b=1")
    with pytest.raises(ValueError, match=r"'optim.lr' is a value \(0.1\), not a section"):
        apply_overrides({"optim": {"lr": 0.1}}, ["optim.lr.x=2"])


def test_missing_config_file_suggests_preset() -> None:
    with pytest.raises(FileNotFoundError, match=r"'sprites_pssa' does not exist.*'sprites_psa'"):
        load_config("sprites_pssa")


def test_presets_resolve_by_name_or_file_name() -> None:
    assert load_config("demo") == load_config("demo.yaml") == load_config(CONFIG_DIR / "demo.yaml")


def test_configs_are_frozen() -> None:
    cfg = OptimConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
