"""Run directories may be given positionally and options with hyphens, as the docs write them."""

import pytest

from probslot.cli import UsageError, build_parser, normalise_argv


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["evaluate", "runs/a", "--split", "test"],
            ["evaluate", "--run_dir", "runs/a", "--split", "test"],
        ),
        (["prune", "runs/a", "--tau=0.1"], ["prune", "--run_dir", "runs/a", "--tau=0.1"]),
        (
            ["evaluate", "runs/a", "--max-images", "5"],
            ["evaluate", "--run_dir", "runs/a", "--max_images", "5"],
        ),
        (["evaluate", "--run_dir", "runs/a"], ["evaluate", "--run_dir", "runs/a"]),
        (
            ["compare", "r0", "r1", "r2", "--split", "val"],
            [
                "compare",
                "--run_dirs+",
                "r0",
                "--run_dirs+",
                "r1",
                "--run_dirs+",
                "r2",
                "--split",
                "val",
            ],
        ),
        (["report", "r0", "--out", "x.html"], ["report", "--run_dirs+", "r0", "--out", "x.html"]),
        (
            ["train", "--config", "demo", "model.num_slots=5"],
            ["train", "--config", "demo", "model.num_slots=5"],
        ),
        (["data", "preview", "--name", "sprites"], ["data", "preview", "--name", "sprites"]),
        (
            ["data", "preview", "toy2d", "--out", "g.png"],
            ["data", "preview", "--name", "toy2d", "--out", "g.png"],
        ),
    ],
)
def test_normalise_argv(argv: list[str], expected: list[str]) -> None:
    assert normalise_argv(argv) == expected


def test_positional_forms_parse() -> None:
    parser = build_parser()
    ns = parser.parse_args(normalise_argv(["compare", "r0", "r1", "--split", "val"]))
    assert ns.compare.run_dirs == ["r0", "r1"]
    ns = parser.parse_args(normalise_argv(["sample", "runs/x", "--num", "4"]))
    assert ns.sample.run_dir == "runs/x" and ns.sample.num == 4


def test_two_run_dirs_for_a_single_run_command_is_an_error() -> None:
    with pytest.raises(UsageError, match="evaluate takes one run directory; got 2"):
        normalise_argv(["evaluate", "a", "b"])


def test_preview_positional_name_and_dataset_options(tmp_path) -> None:
    from probslot.cli import main

    out = tmp_path / "grid.png"
    argv = ["data", "preview", "sprites", "--out", str(out), "--num", "4", "--image-size", "24"]
    assert main(argv) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "preview", "sprites", "--out", str(out), "--max_objects", "0"]) == 2
