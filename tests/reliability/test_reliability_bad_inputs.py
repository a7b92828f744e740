"""Everything a user hands in, wrong: each kind gives a one-line `probslot: error: ...` naming the
thing, what was expected and what was found, exits with 2 and runs no work (no traceback).

Each case is (name, how to make the bad input, the command line, the message it must print).
Configs, checkpoints (not ours, truncated, another version, code-executing), run directories
(missing files, another model's posterior) and command-line arguments.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from probslot.cli import main
from probslot.training.checkpoint import probslot_section
from tiny_runs import tiny_config

Case = tuple[str, Callable[[Path, Path], list[str]], str]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny run (2 steps) and its config; each case works on a copy."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = tiny_config({"trainer": {"run_name": "run", "output_dir": str(root / "runs")}})
    data["trainer"].update(max_steps=2, progress="none", panel_every=0)
    (root / "tiny.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(root / "tiny.yaml")]) == 0
    return root


def _config(edit: Callable[[dict], None]) -> Callable[[Path, Path], list[str]]:
    """A config file changed by `edit`, trained into a fresh run name."""

    def make(work: Path, run: Path) -> list[str]:
        data = yaml.safe_load((work / "tiny.yaml").read_text())
        data["trainer"]["run_name"] = "fresh"
        edit(data)
        (work / "bad.yaml").write_text(yaml.safe_dump(data))
        return ["train", "--config", str(work / "bad.yaml")]

    return make


def _train(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda work, run: ["train", "--config", str(work / "tiny.yaml"), *args]


def _resume_with(damage: Callable[[Path], None], *args: str) -> Callable[[Path, Path], list[str]]:
    def make(work: Path, run: Path) -> list[str]:
        damage(run)
        return ["train", "--config", str(run), "--resume", *args]

    return make


def _on_run(command: str, damage: Callable[[Path], None], *args: str):
    def make(work: Path, run: Path) -> list[str]:
        damage(run)
        return [command, str(run), *args]

    return make


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes((run / name).read_bytes()[:keep])


def _replace_ckpt(obj: object) -> Callable[[Path], None]:
    return lambda run: torch.save(obj, run / "last.ckpt")


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo PWNED > /dev/null",))


def _future(run: Path) -> None:
    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    ckpt["probslot"]["version"] = 99
    torch.save(ckpt, run / "last.ckpt")


def _edit_run_config(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = yaml.safe_load((run / "config.yaml").read_text())
        edit(data)
        (run / "config.yaml").write_text(yaml.safe_dump(data))

    return damage


def _foreign_posterior(work: Path, run: Path) -> list[str]:
    """A posterior fitted with other weights (the run trained one step further since)."""
    assert main(["aggregate", str(run), "--max_images", "4", "--no_progress"]) == 0
    posterior = (run / "posterior.safetensors").read_bytes()
    assert main(["train", "--config", str(run), "--resume", "trainer.max_steps=3"]) == 0
    (run / "posterior.safetensors").write_bytes(posterior)
    return ["sample", str(run), "--num", "2"]


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        *parents, key = path.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[key] = value

    return edit


def _rm(name: str) -> Callable[[Path], None]:
    return lambda run: (run / name).unlink()


CASES: list[Case] = [
    # --- configs
    ("unknown key", _train("trainer.max_step=5"), r"unknown config key 'trainer.max_step'. Did you mean 'trainer.max_steps'\?"),
    ("unknown section", _train("trainr.max_steps=5"), r"unknown config key 'trainr'. Did you mean 'trainer'\?"),
    ("wrong type", _train("trainer.max_steps=many"), r"config field 'trainer.max_steps' expects int; got 'many' \(str\)"),
    ("out of range", _train("optim.lr=-1"), r"optim.lr must be a number > 0 \(e.g. optim.lr=2e-4\); got -1"),
    ("no such preset", lambda w, r: ["train", "--config", "sprites_pas"], r"config file 'sprites_pas' does not exist. Did you mean preset 'sprites_psa'\?"),
    ("config not a mapping", lambda w, r: (w / "list.yaml").write_text("- 1\n- 2\n") and ["train", "--config", str(w / "list.yaml")], r"a config file must hold a mapping .*; got list"),
    ("config not YAML", lambda w, r: (w / "broken.yaml").write_text("data: [1,\n") and ["train", "--config", str(w / "broken.yaml")], r"broken.yaml is not valid YAML \(line 2, column 1\)"),
    ("override value not YAML", _train("model.num_slots=[1,"), r"override 'model.num_slots=\[1,': value '\[1,' is not valid YAML"),
    ("image sizes disagree", _train("data.image_size=32"), r"data.image_size=32 but the model takes images of size \[16, 16\]; set model.image_size=32"),
    ("unknown accelerator", _train("trainer.accelerator=gpuu"), r"trainer.accelerator='gpuu' is not a Lightning accelerator. Did you mean 'gpu'\?"),
    ("unknown strategy", _train("trainer.strategy=dpp"), r"trainer.strategy='dpp' is not a Lightning strategy. Did you mean 'ddp'\?"),
    ("run name with a slash", _train("trainer.run_name=a/b"), r"trainer.run_name must be a non-empty name without '/'; got 'a/b'"),
    ("negative max_bad_steps", _train("optim.max_bad_steps=-2"), r"optim.max_bad_steps must be an integer >= 0; got -2. 0 = never stop"),
    ("negative checkpoint interval", _train("trainer.checkpoint_every=-1"), r"trainer.checkpoint_every must be an integer >= 0; got -1. 0 = off"),
    ("unknown progress mode", _train("trainer.progress=fancy"), r"config field 'trainer.progress' expects 'auto' \| 'bar' \| 'lines' \| 'none'; got 'fancy'"),
    ("unknown grouping option", _config(_set("model.grouping_kwargs", {"temprature": 2.0})), r"unknown option 'temprature' for grouping 'psa'.*Did you mean 'temperature'\?"),
    ("anneal half given", _train("optim.temperature_start=4"), r"optim.temperature_start and optim.temperature_steps go together"),
    ("no validation images", _config(_set("data.num_val", 0)), r"training validates on the val split .* data.num_val must be >= 1; got 0"),
    ("empty training split", _config(_set("data.num_train", 0)), r"num_train must be an integer >= 1; got 0"),
    ("class_path in a config", _config(_set("model.encoder_kwargs", {"class_path": "os.system"})), r"unknown option 'class_path' for encoder 'cnn'"),
    # --- checkpoints
    ("truncated checkpoint", _resume_with(_truncate("last.ckpt", 999), "trainer.max_steps=3"), r"last.ckpt' \(999 bytes\) is truncated"),
    ("empty checkpoint", _resume_with(lambda r: (r / "last.ckpt").write_bytes(b""), "trainer.max_steps=3"), r"last.ckpt' is empty \(0 bytes\)"),
    ("checkpoint not ours", _resume_with(_replace_ckpt({"state_dict": {}, "global_step": 1}), "trainer.max_steps=3"), r"was not written by probslot \(no 'probslot' section"),
    ("checkpoint of a newer version", _resume_with(_future, "trainer.max_steps=3"), r"format version 99, newer than this probslot reads \(1; .*upgrade probslot"),
    ("code-executing checkpoint", _resume_with(_replace_ckpt({"x": _RunsCode(), "probslot": probslot_section()}), "trainer.max_steps=3"), r"not tensors or plain data, so it was not written by probslot and is refused"),
    ("checkpoint not a dict", _resume_with(_replace_ckpt([1, 2]), "trainer.max_steps=3"), r"holds a list, not a checkpoint dict"),
    ("checkpoint of another model", _resume_with(_edit_run_config(_set("model.slot_dim", 6)), "trainer.max_steps=3"), r"written for another model than the one in"),
    # --- run directories
    ("resume without checkpoint", _resume_with(_rm("last.ckpt")), r"cannot resume: '.*last.ckpt' does not exist"),
    ("resume a directory without config", _resume_with(_rm("config.yaml")), r"config.yaml' does not exist, so '.*' is not a run directory"),
    ("fresh run over a checkpoint", _train(), r"already holds a checkpoint. Continue it with --resume"),
    ("resume changing the model", _resume_with(lambda r: None, "model.num_slots=4"), r"continues the run as it was started.*model.num_slots \(3 → 4\)"),
    ("resume and overwrite", _resume_with(lambda r: None, "--overwrite"), r"resume and overwrite exclude each other"),
    ("weights missing", _on_run("evaluate", _rm("model.safetensors")), r"has no model.safetensors \(training did not finish"),
    ("weights truncated", _on_run("evaluate", _truncate("model.safetensors", 100)), r"model.safetensors' is not a readable safetensors file"),
    ("run config not YAML", _on_run("evaluate", lambda r: (r / "config.yaml").write_text("model: [\n")), r"config.yaml is not valid YAML"),
    ("run directory missing", lambda w, r: ["evaluate", str(w / "nope")], r"run directory '.*nope' does not exist"),
    ("posterior of other weights", _foreign_posterior, r"was fitted with other weights than model.safetensors .* Re-run `probslot aggregate"),
    # --- command line
    ("unknown command", lambda w, r: ["trian"], r"unknown command 'trian'. Did you mean 'train'\?"),
    ("unknown option", _train("--resum"), r"unrecognized arguments: --resum. Did you mean --resume\?"),
    ("option of the wrong type", lambda w, r: ["aggregate", str(r), "--max_images", "abc"], r"--max_images expects int \| None; got 'abc'"),
    ("missing required option", lambda w, r: ["train"], r"probslot train needs --config"),
    ("control: a valid command", _train("trainer.run_name=ok", "trainer.accelerator=cpu", "trainer.max_steps=1"), r"^$"),
]  # fmt: skip
# the last line of CASES is a control: a valid command (exit 0); the rest must fail


@pytest.mark.parametrize("name, make, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(
    name: str,
    make: Callable[[Path, Path], list[str]],
    message: str,
    base: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "work"
    shutil.copytree(base, work, symlinks=False)
    run = work / "runs" / "run"
    # the copied config and run point at the copy
    for cfg_file in (work / "tiny.yaml", run / "config.yaml"):
        text = cfg_file.read_text().replace(str(base), str(work))
        cfg_file.write_text(text)
    argv = make(work, run)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    if message == r"^$":  # the control case
        assert code == 0, err
        return
    assert code == 2, f"{name}: exit {code}; stderr {err[-500:]}"
    lines = [ln for ln in err.splitlines() if ln.startswith("probslot: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(message, lines[0]), f"{name}: {lines[0]}"


def test_at_least_thirty_kinds_of_bad_input() -> None:
    assert len(CASES) - 1 >= 30
