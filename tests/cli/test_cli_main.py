"""The `probslot` command line: help of every subcommand, overrides, one-line user errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from probslot import cli


def _command_paths(commands: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, target in commands.items():
        if isinstance(target, dict):
            out.append((*prefix, name))
            out.extend(_command_paths(target, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name, target in cli.COMMANDS.items():
        assert f"    {name} " in text
        if callable(target):  # the first line of its docstring is its one-line help
            first_words = " ".join(target.__doc__.split()[:4])
            assert first_words in " ".join(text.split()), name
    assert "--version" in text


@pytest.mark.parametrize("path", _command_paths(cli.COMMANDS), ids=" ".join)
def test_help_of_each_subcommand(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command and group has a --help; a command's lists one option per parameter."""
    with pytest.raises(SystemExit) as exc:
        cli.main([*path, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    usage = text.splitlines()[0]  # usage: probslot [options] data [options] preview [--name ...
    words = [word for word in usage.split()[2:] if word != "[options]"]
    assert usage.startswith("usage: probslot ") and words[: len(path)] == list(path)
    target = cli._target(path)[1]
    if callable(target):
        documented = {param.arg_name for param in cli._doc(target).params}
        assert documented == set(inspect.signature(target).parameters), "Args: must match"
        for name, param in inspect.signature(target).parameters.items():
            flag = f"--{name}, --no_{name}" if param.annotation in (bool, "bool") else f"--{name} "
            assert flag in text, (path, name)


def test_help_comes_from_signature_and_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--config CONFIG" in text and "required" in text
    assert "--resume, --no_resume" in text
    assert "continue the run from its last.ckpt" in text  # from the Args: section
    assert "Example: ``probslot train --config sprites_psa" in text  # the description


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import probslot

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"probslot {probslot.__version__}\n"


def test_arguments_reach_the_function_with_their_types() -> None:
    fn, kwargs = cli.parse_command(
        ["prune", "runs/x", "--tau", "5e-2", "--max-images", "7", "--sweep", "--no_progress"]
    )
    assert fn is cli.COMMANDS["prune"]
    assert kwargs["run_dir"] == "runs/x" and kwargs["tau"] == 0.05 and kwargs["max_images"] == 7
    assert kwargs["sweep"] is True and kwargs["progress"] is False
    assert kwargs["in_em"] is None and kwargs["seed"] is None  # defaults from the signature
    # bool | None keeps a value: --in_em true/false/null
    assert cli.parse_command(["prune", "r", "--in_em", "false"])[1]["in_em"] is False
    fn, kwargs = cli.parse_command(["data", "preview", "toy2d", "--image_size", "24"])
    assert fn is cli.preview and kwargs["name"] == "toy2d" and kwargs["image_size"] == 24
    fn, kwargs = cli.parse_command(["train", "--config", "demo", "model.num_slots=5"])
    assert kwargs["overrides"] == ["model.num_slots=5"] and kwargs["resume"] is False


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["train", "--confg", "demo"],
            "unrecognized arguments: --confg demo. Did you mean --config?",
        ),
        (["prune", "r", "--no_sweeep"], "Did you mean --no_sweep?"),
        (["prune", "r", "--max_image", "3"], "Did you mean --max_images?"),  # no abbreviations
        (["prune", "r", "--tau", "abc"], "--tau expects float | None; got 'abc'"),
        (["data", "preview", "--num", "x"], "--num expects int; got 'x'"),
        (["trian"], "unknown command 'trian'. Did you mean 'train'? Commands: train, demo"),
        (["data", "prevew"], "unknown command 'prevew'. Did you mean 'preview'?"),
        (["prune"], "probslot prune needs --run_dir"),
        (["data"], "probslot data needs a command: preview"),
        ([], "probslot needs a command: train, demo"),
        (["evaluate", "a", "b"], "evaluate takes one run directory; got 2: a b"),
        (
            ["data", "preview", "model.num_slots=3"],
            "only train, demo, aggregate, prune, evaluate, compare and experiment take them",
        ),
    ],
)
def test_command_line_errors_are_one_line_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """jsonargparse's multi-line errors become one line naming the fix; nothing runs."""
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("probslot: error: ") and captured.err.count("\n") == 1
    assert expected in captured.err
    for raw in ("Traceback", "<class", "Union subtypes", "usage:"):
        assert raw not in captured.err


def test_debug_mode_re_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBSLOT_DEBUG", "1")
    with pytest.raises(cli.UsageError, match="Did you mean --config"):
        cli.main(["train", "--confg", "demo"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cli.main(["train", "--config", "no_such_preset.yaml"])


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
    assert cli.main(["train", "--config", str(tiny_yaml), "model.num_slots=2.5"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "probslot: error: config field 'model.num_slots' expects int; got 2.5 (float). "
        "Fix the YAML value or override, e.g. model.num_slots=...\n"
    )
