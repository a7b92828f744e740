"""Run a documentation page as a reader would: every snippet and command, in order, at a small scale.

`run_page(page, fixtures)` goes through a Markdown page top to bottom in the current directory:

* each ```python block is executed in one namespace shared by the whole page, so a later snippet
  uses an earlier one's variables, exactly as a reader pasting them into one session would;
* each command line of a ```bash block is run: ``probslot ...`` (also ``.venv/bin/probslot``,
  ``python -m probslot``) in this process, with the small-scale arguments of `SMALL` in place of
  the page's own sizes; ``make TARGET`` as the Makefile's recipe for TARGET; ``python SCRIPT ...``
  as that script with the arguments of `SCRIPTS` appended; ``torchrun ... --no-python probslot
  ...`` as processes. Any other command in a bash block fails, so a page cannot hide an unrun one.

A block that cannot run here says so on the line right before it, with the reason, which the
test prints in its skip list:

    <!-- not run: needs 4 GPUs -->

A marker without a reason, or one that no block follows, is an error (`blocks`, `marker_errors`).

A page's inputs that a reader would have (a run directory, a published file, a weights file) are
put in place before the page runs (`Fixtures`); placeholder words of a page (``SOURCE``, ``DIR``)
can be substituted with the paths of such fixtures.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtual environment's bin/: probslot, torchrun
SHELLS = ("bash", "sh", "shell")  # blocks of commands
FENCE = re.compile(r"^```(\w+)?[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*not run\b\s*:?(.*?)-->")

# --------------------------------------------------------------------------- small scale
#: the training settings of every small-scale run: a few steps, a few images, no workers
SMALL_TRAIN = [
    "trainer.max_steps=2",
    "trainer.val_every=2",
    "trainer.panel_every=2",
    "trainer.log_every=1",
    "trainer.max_minutes=0",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=48",  # compare's affine fit of 32-d slots needs 43 images
    "data.batch_size=4",
    "data.num_workers=0",
    "--no_progress",
]
#: what a resumed run may change (its trainer section only): two steps more
SMALL_RESUME = [
    *(a for a in SMALL_TRAIN if a.startswith("trainer.") and "max_steps" not in a),
    "trainer.max_steps=4",
    "--no_progress",
]
#: per command: what replaces the page's own setting of the same option or ``key=`` (the other
#: commands, e.g. sample, preview, report, data info, are small already)
SMALL: dict[str, list[str]] = {
    "train": SMALL_TRAIN,
    "demo": [*SMALL_TRAIN, "--posterior_images", "12"],
    "evaluate": ["--max_images", "12", "--contrast_images", "0", "--no_progress"],
    "aggregate": ["--max_images", "12", "--no_progress"],
    "prune": ["--max_images", "8", "--no_progress"],
    "compare": ["--max_images", "48", "--no_progress"],
    "data convert": ["--no_progress"],
}
#: without a GPU, a GPU run's small-scale form runs on the CPU, in float32 (bf16 autocast on a
#: CPU is 5× slower and checks nothing the GPU run would)
ON_CPU = {
    "trainer.accelerator=gpu": "trainer.accelerator=cpu",
    "trainer.precision=bf16-mixed": "trainer.precision=32",
    "trainer.precision=16-mixed": "trainer.precision=32",
}
#: a study is not run: ``--emit commands`` plans it, builds every run's config and model and
#: writes the commands (a page's own ``--emit`` is kept)
EMIT = ["--emit", "commands"]
#: appended to a script's arguments (argparse: the last value of an option wins)
SCRIPTS: dict[str, list[str]] = {
    "bench_grouping.py": ["--batch", "2", "--tokens", "16", "--dim", "8", "--slots", "3"]
    + ["--iters", "1", "--repeats", "1", "--cases", "psa"],
    "bench_data.py": ["--n", "8", "--records", "64", "--images", "64"],
    "bench_train_step.py": ["--steps", "1", "--warmup", "0", "--batch", "2", "--image-size", "16"],
    "bench_posterior.py": ["--images", "50", "--points", "20", "--samples", "20"]
    + ["--fit-images", "8", "--batch", "4", "--repeats", "1", "--compress-images", "20"]
    + ["--compress-samples", "50", "--compress-to", "2"],
    "bench_metrics.py": ["--threads", "1", "--images", "100", "--ari-images", "8"],
}
#: torchrun options at small scale
TORCHRUN = {"--nproc_per_node": "2"}


def _command_key(argv: Sequence[str]) -> str:
    return " ".join(argv[:2]) if argv[0] in ("data", "features") else argv[0]


def _without(argv: list[str], item: str, takes_value: bool) -> list[str]:
    """`argv` without the page's own setting of what `item` sets."""
    if "=" in item and not item.startswith("--"):  # a dotted override
        key = item.split("=", 1)[0] + "="
        return [a for a in argv if not a.startswith(key)]
    name = item.split("=", 1)[0]
    if not takes_value:  # a flag: --progress / --no_progress
        bare = name.removeprefix("--no_").removeprefix("--")
        return [a for a in argv if a not in (f"--{bare}", f"--no_{bare}")]
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def small(argv: Sequence[str]) -> list[str]:
    """The small-scale form of a ``probslot`` command line (without the program name)."""
    argv = list(argv)
    key = _command_key(argv)
    if key == "experiment":
        return argv if any(a.split("=")[0] == "--emit" for a in argv) else [*argv, *EMIT]
    if key == "evaluate":  # a page's data.* overrides (more test scenes) are the long part
        argv = [a for a in argv if not a.startswith("data.")]
    extra = SMALL_RESUME if key == "train" and "--resume" in argv else SMALL.get(key, [])
    if key == "train" and not _has_cuda():
        argv = [ON_CPU.get(a, a) for a in argv]
    i = 0
    while i < len(extra):
        item = extra[i]
        takes_value = (
            item.startswith("--") and i + 1 < len(extra) and not extra[i + 1].startswith("-")
        )
        takes_value = takes_value and "=" not in item
        argv = _without(argv, item, takes_value)
        i += 2 if takes_value else 1
    return argv + extra


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _starts_processes(argv: Sequence[str]) -> bool:
    """A DDP run: Lightning starts the other processes by running the command line again."""
    for a in argv:
        if a.startswith("trainer.strategy=ddp"):
            return True
        if a.startswith("trainer.devices=") and a.split("=", 1)[1] not in ("1", "auto"):
            return True
    return False


# --------------------------------------------------------------------------- pages
@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    lang: str
    number: int  # among the page's blocks of this language, from 1
    line: int  # of the opening fence
    body: str
    not_run: str | None  # the reason of a ``<!-- not run: ... -->`` before it ("" = none given)

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}, {self.lang} block {self.number} (line {self.line})"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page` in order, each with the reason of its not-run marker."""
    text = page.read_text()
    out: list[Block] = []
    counts: dict[str, int] = {}
    end = 0
    for m in FENCE.finditer(text):
        lang = m.group(1) or ""
        counts[lang] = counts.get(lang, 0) + 1
        before = text[end : m.start()].rstrip().splitlines()
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        reason = " ".join(marker.group(1).split()) if marker else None
        line = text.count("\n", 0, m.start()) + 1
        out.append(Block(page, lang, counts[lang], line, m.group(2), reason))
        end = m.end()
    return out


def marker_errors(page: Path) -> list[str]:
    """Not-run markers of `page` without a reason, or without a fenced block right after them."""
    lines = page.read_text().splitlines()
    errors = []
    for i, line in enumerate(lines):
        marker = MARKER.search(line)
        if marker is None:
            continue
        following = next((rest.strip() for rest in lines[i + 1 :] if rest.strip()), "")
        if not marker.group(1).strip():
            errors.append(f"{page.name}, line {i + 1}: `<!-- not run -->` needs a reason")
        if MARKER.fullmatch(line.strip()) is None or not following.startswith("```"):
            errors.append(
                f"{page.name}, line {i + 1}: a not-run marker must be a line of its own right "
                "before the fenced block it exempts"
            )
    return errors


def command_lines(body: str) -> list[str]:
    """The command lines of a bash block: continuations joined, comments and blank lines dropped."""
    lines = []
    for raw in body.replace("\\\n", " ").splitlines():
        line = raw.split(" #")[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


# --------------------------------------------------------------------------- fixtures
@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class Fixtures:
    """What pages need, made once per test session in `root` and copied where a page wants it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._demo: Path | None = None

    def demo_run(self) -> Path:
        """`probslot demo` at small scale (what `make demo` runs), made on first use."""
        if self._demo is None:
            where = self.root / "demo"
            where.mkdir(exist_ok=True)
            with working_directory(where):
                run_probslot(["demo"], where="the session's demo run")
            self._demo = where / "runs" / "demo"
        return self._demo

    def place_demo(self, dest: Path) -> Path:
        """A copy of the small demo run at `dest` (e.g. runs/demo of a page's directory)."""
        shutil.copytree(self.demo_run(), dest)
        return dest

    @staticmethod
    def untrained_run(dest: Path, config: str | Path | dict, seed: int = 0) -> Path:
        """A run directory at `dest` as `probslot train` leaves it (config.yaml,
        model.safetensors) without training: the preset, YAML file or config dict `config` with
        initial weights seeded by `seed`."""
        import torch

        from probslot.atomic import atomic_write_text
        from probslot.config import RunConfig, apply_overrides, dump_config, load_config
        from probslot.io import RunPaths, save_model_weights
        from probslot.models import build_model

        names = [f"trainer.seed={seed}", f"trainer.run_name={dest.name}"]
        names.append(f"trainer.output_dir={dest.parent}")
        if isinstance(config, dict):
            cfg = RunConfig.from_dict(apply_overrides(config, names))
        else:
            cfg = load_config(str(config), names)
        paths = RunPaths(dest)
        paths.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.config, dump_config(cfg))
        torch.manual_seed(seed)
        save_model_weights(build_model(cfg.model), paths.weights)
        return dest


# --------------------------------------------------------------------------- running
class BlockFailed(AssertionError):
    """A snippet or command of a page failed; the message names the page, the block and the line."""


def run_probslot(argv: Sequence[str], where: str) -> None:
    """Run ``probslot ARGV`` at small scale; user errors raise (PROBSLOT_DEBUG) with `where`."""
    from probslot.cli import main

    argv = small(argv)
    if _starts_processes(argv):
        _process([str(BIN / "probslot"), *argv], where)
        return
    old = os.environ.get("PROBSLOT_DEBUG")
    os.environ["PROBSLOT_DEBUG"] = "1"  # a user error raises here instead of printing one line
    try:
        rc = main(argv)
    except BaseException as err:  # SystemExit too: name the command that raised
        raise BlockFailed(f"{where}: `probslot {shlex.join(argv)}` raised {err!r}") from err
    finally:
        if old is None:
            os.environ.pop("PROBSLOT_DEBUG")
        else:
            os.environ["PROBSLOT_DEBUG"] = old
    if rc != 0:
        raise BlockFailed(f"{where}: `probslot {shlex.join(argv)}` exited with {rc}")


def _process(cmd: list[str], where: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if done.returncode != 0:
        raise BlockFailed(
            f"{where}: `{shlex.join(cmd)}` exited with {done.returncode}:\n{done.stderr[-3000:]}"
        )


def make_recipe(target: str) -> list[str]:
    """The recipe lines of `target` in the Makefile, with $(VENV) and $(PY) expanded (its
    prerequisites, the installation, are what the test session runs in)."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    head = re.compile(rf"^{re.escape(target)}\s*:(?!=)")
    for i, line in enumerate(lines):
        if head.match(line):
            recipe = []
            for step in lines[i + 1 :]:
                if not step.startswith("\t"):
                    break
                step = step.strip().lstrip("@")
                step = step.replace("$(PY)", ".venv/bin/python").replace("$(VENV)", ".venv")
                recipe.append(step)
            return recipe
    raise BlockFailed(f"the Makefile has no target {target!r}")


def run_command(line: str, fixtures: Fixtures, where: str) -> None:
    """Run one command line of a bash block (see the module docstring for what runs how)."""
    words = shlex.split(line)
    prog = words[0].removeprefix(".venv/bin/")
    if prog == "python" and words[1:3] == ["-m", "probslot"]:
        prog, words = "probslot", ["probslot", *words[3:]]
    if prog == "probslot":
        if small(words[1:]) == small(["demo"]):  # the session's demo run is this very command
            fixtures.place_demo(Path("runs/demo"))
        else:
            run_probslot(words[1:], where)
    elif prog == "make":
        for target in words[1:]:
            for step in make_recipe(target):
                run_command(step, fixtures, f"{where}, `make {target}`")
    elif prog == "python" and len(words) > 1 and words[1].endswith(".py"):
        _run_script(words[1], words[2:], where)
    elif prog == "torchrun":
        _run_torchrun(words[1:], where)
    else:
        raise BlockFailed(
            f"{where}: `{line}` is not a command the docs runner runs (probslot, make, python "
            "SCRIPT, torchrun ... probslot); mark the block `<!-- not run: REASON -->` if it "
            "cannot run here"
        )


def _run_script(script: str, args: Sequence[str], where: str) -> None:
    """A Python script of the repository, in this process, with its small-scale arguments."""
    import torch

    path = Path(script) if Path(script).is_file() else ROOT / script
    argv = [str(path), *args, *SCRIPTS.get(path.name, [])]
    threads, old_argv, old_tmp = torch.get_num_threads(), sys.argv, tempfile.tempdir
    sys.argv = argv
    tempfile.tempdir = str(Path.cwd())  # what a script leaves in a temporary folder goes too
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as err:
        if err.code not in (0, None):
            raise BlockFailed(
                f"{where}: `python {shlex.join(argv)}` exited with {err.code}"
            ) from err
    except Exception as err:
        raise BlockFailed(f"{where}: `python {shlex.join(argv)}` raised {err!r}") from err
    finally:
        sys.argv, tempfile.tempdir = old_argv, old_tmp
        torch.set_num_threads(threads)  # a script's --threads must not leak into later tests


def _run_torchrun(args: Sequence[str], where: str) -> None:
    if "--no-python" not in args or "probslot" not in args:
        raise BlockFailed(f"{where}: only `torchrun ... --no-python probslot ...` is run")
    i = list(args).index("probslot")
    options = []
    for a in args[:i]:
        name = a.split("=", 1)[0]
        options.append(f"{name}={TORCHRUN[name]}" if name in TORCHRUN else a)
    _process([str(BIN / "torchrun"), *options, str(BIN / "probslot"), *small(args[i + 1 :])], where)


_SMALL_CONFIGS = False


@contextmanager
def small_configs() -> Iterator[None]:
    """While active, `probslot.config.load_config` appends the small training settings of
    `SMALL_TRAIN` to its overrides, so that a snippet that loads a preset and trains it trains
    briefly. Afterwards the function is the real one again; a module that imported the stand-in
    meanwhile (``from probslot.config import load_config`` on first import) keeps a copy that
    has become a plain call of the real one."""
    global _SMALL_CONFIGS
    import probslot.config

    real = probslot.config.load_config
    extra = [o for o in SMALL_TRAIN if not o.startswith("--")]

    def load_config(path_or_name: str | Path | None = None, overrides: Iterable[str] = ()) -> Any:
        return real(path_or_name, [*overrides, *extra] if _SMALL_CONFIGS else overrides)

    probslot.config.load_config, _SMALL_CONFIGS = load_config, True
    try:
        yield
    finally:
        probslot.config.load_config, _SMALL_CONFIGS = real, False


def run_python(block: Block, namespace: dict) -> None:
    """Execute a python block in `namespace` at small scale (`small_configs`); tracebacks point
    at the page's own lines."""
    tree = ast.parse(block.body, filename=str(block.page))
    ast.increment_lineno(tree, block.line)
    try:
        with small_configs():
            exec(compile(tree, str(block.page), "exec"), namespace)  # noqa: S102 - our own docs
    except Exception as err:
        frames = [
            f"  line {f.lineno}: {f.line}"
            for f in traceback.extract_tb(err.__traceback__)
            if f.filename == str(block.page)
        ]
        raise BlockFailed(f"{block.where} raised {err!r}\n" + "\n".join(frames)) from err


def run_page(
    page: Path,
    fixtures: Fixtures,
    substitute: Mapping[str, str] | None = None,
    report: Callable[[str], None] = print,
) -> list[Block]:
    """Run every block of `page` in order in the current directory; returns the blocks not run.

    `substitute` maps placeholder words of the page's command lines to what they stand for here
    (``{"DIR": "data/objects_room"}``), whole words only.
    """
    namespace: dict = {"__name__": "__docs__"}
    skipped = []
    for block in blocks(page):
        if block.lang not in ("python", *SHELLS):
            continue
        if block.not_run is not None:
            skipped.append(block)
            report(f"{block.where}: not run ({block.not_run or 'no reason given'})")
            continue
        if block.lang == "python":
            run_python(block, namespace)
            continue
        for line in command_lines(block.body):
            for word, value in (substitute or {}).items():
                line = re.sub(rf"\b{re.escape(word)}\b", value, line)
            start = time.perf_counter()
            run_command(line, fixtures, f"{block.where}: `{line}`")
            report(f"{block.where}: {line} ({time.perf_counter() - start:.1f} s)")
    return skipped
