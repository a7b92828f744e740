"""The `probslot` command line: help of every subcommand, overrides, one-line user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from probslot import cli


def _leaf_commands(commands: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, target in commands.items():
        if isinstance(target, dict):
            out.append((*prefix, name))
            out.extend(_leaf_commands(target, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in text


@pytest.mark.parametrize("path", _leaf_commands(cli.COMMANDS), ids=" ".join)
def test_help_of_each_subcommand(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*path, "--help"])
    assert exc.value.code == 0
    assert "usage: probslot" in capsys.readouterr().out


def test_help_comes_from_signature_and_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--config CONFIG" in text and "required" in text
    assert "--resume, --no_resume" in text
    assert "continue the run from its last.ckpt" in text  # from the Args: section


def test_bare_dotted_overrides_are_collected() -> None:
    rest, overrides = cli.split_overrides(
        ["train", "--config", "demo", "model.num_slots=5", "--resume", "optim.lr=1e-3"]
    )
    assert rest == ["train", "--config", "demo", "--resume"]
    assert overrides == ["model.num_slots=5", "optim.lr=1e-3"]


def test_resume_without_checkpoint_is_one_line_exit_2(
    tiny_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "train",
            "--config",
            str(tiny_yaml),
            "--resume",
            "--no_progress",
            f"trainer.output_dir={tmp_path / 'x'}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("probslot: error: cannot resume:")
    assert "last.ckpt' does not exist" in err and "Train without --resume" in err
    assert "Traceback" not in err


def test_missing_config_file_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "--config", "no_such_preset.yaml"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "presets" in err


def test_bad_override_is_one_line_exit_2(
    tiny_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["train", "--config", str(tiny_yaml), "model.num_slot=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Did you mean 'model.num_slots'" in err and err.count("\n") == 1


def test_overrides_rejected_by_commands_without_them(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["data", "preview", "model.num_slots=3"])
    assert exc.value.code == 2
