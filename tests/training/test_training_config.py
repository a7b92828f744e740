"""Typed run configs: validation errors, dotted overrides, YAML round trip, the shipped presets."""

from __future__ import annotations

import copy
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
    with pytest.raises(TypeError, match=r"'model.grouping_kwargs' expects dict\[str, Any\]; got 3"):
        load_config(tiny_yaml, ["model.grouping_kwargs=3"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("prune.tau=abc", r"'prune.tau' expects float \| None; got 'abc' \(str\)"),
        ("model.image_size=big", r"'model.image_size' expects int \| list\[int\]; got 'big'"),
        ("trainer.devices=[1]", r"'trainer.devices' expects int \| str; got \[1\] \(list\)"),
        # jsonargparse reads a null as "not given"; a field that does not admit None rejects it
        ("optim.lr=null", r"'optim.lr' expects float; got None \(NoneType\)"),
        ("data.name=null", r"'data.name' expects str; got None"),
    ],
)
def test_type_errors_are_one_clear_line(tiny_yaml: Path, override: str, expected: str) -> None:
    """jsonargparse's own text (union subtypes, <class 'NoneType'>) never reaches the user."""
    with pytest.raises(TypeError, match=expected) as info:
        load_config(tiny_yaml, [override])
    message = str(info.value)
    assert "\n" not in message and "<class" not in message and "Union subtypes" not in message


def test_values_are_converted_to_the_field_types(tiny_yaml: Path) -> None:
    data = yaml.safe_load(tiny_yaml.read_text())
    data["optim"].update(lr="1e-3", ema_decay=1 - 2**-4, betas=[0, "5e-1"])
    data["trainer"]["precision"] = 32  # YAML reads `precision: 32` as an int
    data["model"]["image_size"] = [data["data"]["image_size"]] * 2
    cfg = RunConfig.from_dict(data)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.0, 0.5) and all(isinstance(b, float) for b in cfg.optim.betas)
    assert cfg.trainer.precision == "32"
    assert cfg.model.image_size == [16, 16]
    assert RunConfig.from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_free_form_values_pass_through_as_written(tiny_yaml: Path) -> None:
    """Strings inside dict[str, Any] fields stay strings (not read again as YAML) and round-trip."""
    data = yaml.safe_load(tiny_yaml.read_text())
    data["model"]["grouping_kwargs"] = {"init": "on"}
    data["data"]["dataset_kwargs"] = {"background": "null"}
    written = copy.deepcopy(data)
    cfg = RunConfig.from_dict(data)
    assert data == written  # the caller's mapping is not changed
    assert cfg.model.grouping_kwargs == {"init": "on"}
    assert cfg.data.dataset_kwargs == {"background": "null"}
    assert RunConfig.from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_section_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match=r"'optim' must be a mapping.*got 3"):
        RunConfig.from_dict({"optim": 3})


def test_value_ranges_are_checked() -> None:
    with pytest.raises(ValueError, match=r"optim.lr must be a number > 0 .*; got -1$"):
        OptimConfig(lr=-1.0)
    with pytest.raises(ValueError, match=r"optim.ema_decay must be a number >= 0 and < 1.*got 1$"):
        config_from_dict(OptimConfig, {"ema_decay": 1})
    with pytest.raises(ValueError, match=r"optim.min_lr must be a number >= 0 and <= 0.001"):
        OptimConfig(lr=1e-3, min_lr=2e-3)
    with pytest.raises(ValueError, match=r"optim.betas\[1\] must be a number >= 0 and < 1"):
        OptimConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match=r"temperature_start and optim.temperature_steps go"):
        OptimConfig(temperature_start=2.0)
    with pytest.raises(ValueError, match=r"trainer.run_name must be a non-empty name"):
        TrainerConfig(run_name="a/b")
    with pytest.raises(ValueError, match=r"trainer.val_every must be an integer >= 1; got 0"):
        TrainerConfig(val_every=0)
    with pytest.raises(ValueError, match=r"trainer.precision must be one of.*Did you mean 'bf16"):
        TrainerConfig(precision="bf16")  # type: ignore[arg-type]


def test_wrong_types_in_python_are_type_errors() -> None:
    """Built directly (no YAML), the dataclasses still tell a wrong type from a wrong value."""
    with pytest.raises(TypeError, match=r"optim.warmup_steps must be an integer >= 0; got 2.5"):
        OptimConfig(warmup_steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"optim.lr must be a number > 0.*got '1e-3' \(str\)"):
        OptimConfig(lr="1e-3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"trainer.max_steps must be an integer >= 1; got True"):
        TrainerConfig(max_steps=True)
    with pytest.raises(TypeError, match=r"trainer.run_name must be a str; got 5"):
        TrainerConfig(run_name=5)  # type: ignore[arg-type]


def test_prune_section_defaults_to_none_and_checks_its_values(tiny_yaml: Path) -> None:
    data = yaml.safe_load(tiny_yaml.read_text())
    assert RunConfig.from_dict(data).prune == PruneConfig(None, None, None)
    data["prune"] = {"merge_dist": 1, "prune_start": 3, "tau": "5e-2"}
    cfg = RunConfig.from_dict(data)
    assert (cfg.prune.merge_dist, cfg.prune.prune_start, cfg.prune.tau) == (1.0, 3, 0.05)
    assert RunConfig.from_dict(yaml.safe_load(dump_config(cfg))) == cfg
    with pytest.raises(ValueError, match=r"prune.tau must be a number >= 0 and < 1 \(or null\)"):
        PruneConfig(tau=1.0)
    with pytest.raises(ValueError, match=r"prune.merge_dist must be a number >= 0 .*got -0.5"):
        PruneConfig(merge_dist=-0.5)
    with pytest.raises(ValueError, match=r"prune.prune_start must be an integer >= 1; got 0"):
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


def test_run_config_repr_is_its_yaml() -> None:
    import yaml

    from probslot.config import RunConfig, load_config

    cfg = load_config("demo")
    text = repr(cfg)
    assert text.startswith("RunConfig(\n  data:\n") and text.endswith("\n)")
    body = "\n".join(line[2:] for line in text.splitlines()[1:-1])
    assert RunConfig.from_dict(yaml.safe_load(body)) == cfg
