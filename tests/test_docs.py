"""The documentation cannot drift from the code.

* The site builds with ``mkdocs build --strict`` (broken links, API pages whose docstrings do not
  parse, pages missing from the navigation all fail).
* Every ``probslot ...`` command line in README.md and docs/ parses with the real CLI: the
  subcommand exists and every flag is one it takes (`probslot.cli.parse_command`), so a renamed
  option fails here.
* Every Python block compiles, and its imports run.
* The tutorials and the how-to and explanation pages run start to finish (slow): each page's
  snippets (in one namespace) and commands in order, in a temporary directory holding what the
  page's reader has (a small demo run where the page uses ``runs/demo``, the publisher's file
  where it converts one), at a small scale (a few training steps, a few images; a study only
  plans its runs), so what a reader copies works (`docs_runner`). A block that cannot run here
  says why right before it (``<!-- not run: needs 4 GPUs -->``); the skip list names each one.
"""

from __future__ import annotations

import ast
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from docs_runner import (
    SHELLS,
    Block,
    Fixtures,
    blocks,
    command_lines,
    marker_errors,
    run_page,
)
from tiny_runs import tiny_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


def probslot_lines(page: Path) -> list[str]:
    """The ``probslot`` command lines of the page's bash blocks (run or not)."""
    lines = []
    for block in blocks(page):
        for line in command_lines(block.body) if block.lang in SHELLS else []:
            for prefix in (".venv/bin/", "python -m "):
                line = line.removeprefix(prefix)
            if line.startswith("probslot "):
                lines.append(line)
    return lines


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_line_parses(page: Path) -> None:
    from probslot.cli import parse_command

    for line in probslot_lines(page):
        argv = shlex.split(line)[1:]
        try:
            parse_command(argv)
        except Exception as err:  # noqa: BLE001 - report which line of which page
            raise AssertionError(f"{page.name}: `{line}` does not parse: {err}") from None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_compiles_and_its_imports_run(page: Path) -> None:
    for block in [b for b in blocks(page) if b.lang == "python"]:
        tree = ast.parse(block.body, filename=block.where)
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        code = compile(ast.Module(body=imports, type_ignores=[]), str(page), "exec")
        exec(code, {})  # noqa: S102 - our own documentation


def test_the_site_lists_every_page() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [
        str(p.relative_to(ROOT / "docs"))
        for p in (ROOT / "docs").rglob("*.md")
        if str(p.relative_to(ROOT / "docs")) not in nav
    ]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"


# --------------------------------------------------------------------------- pages that run
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
#: README.md and the how-to and explanation pages: their snippets and commands run
GUIDES = [ROOT / "README.md"] + [
    ROOT / "docs" / f"{name}.md"
    for name in (
        "index",
        "training",
        "evaluation",
        "posterior",
        "pruning",
        "data",
        "real-images",
        "models",
        "metrics",
        "scaling",
        "reliability",
        "architecture",
        "algorithm",
        "benchmarks",
        "results",
    )
]


def _inception_stand_in(path: Path) -> None:
    """A TorchScript network with the call of the FID Inception file a reader supplies."""
    import warnings

    import torch

    class Features(torch.nn.Module):
        def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
            pooled = x.float().mean((2, 3))  # (b, 3)
            return pooled.repeat(1, 683)[:, :2048] if return_features else pooled

    with warnings.catch_warnings():  # TorchScript is deprecated in recent torch
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Features()).save(str(path))


def _objects_room_file(where: Path) -> None:
    """The publisher's Objects-Room TFRecord (byte-exact format), with enough scenes for the
    small splits (16 + 8 + 48)."""
    from format_fixtures import write_deepmind

    write_deepmind(where, "objects-room", 80)


def _seeds(runs: Path, prefix: str, fx: Fixtures, seeds: int = 3) -> None:
    """Runs PREFIX0, PREFIX1, ... of the demo config: the small demo run, then untrained ones
    with other seeds (what the seeds' analyses compare)."""
    first = fx.place_demo(runs / f"{prefix}0")
    for seed in range(1, seeds):
        fx.untrained_run(runs / f"{prefix}{seed}", first / "config.yaml", seed=seed)


def _evaluation(d: Path, fx: Fixtures) -> None:
    _seeds(d / "runs", "psa_s", fx)


def _posterior(d: Path, fx: Fixtures) -> None:
    fx.place_demo(d / "runs" / "demo")


def _pruning(d: Path, fx: Fixtures) -> None:
    adaslot = tiny_config({"model": {"preset": "SA", "keep_gate": {}}})  # the page's example
    fx.untrained_run(d / "runs" / "adaslot", adaslot)


def _metrics(d: Path, fx: Fixtures) -> None:
    _seeds(d / "runs", "demo_s", fx, seeds=2)
    _inception_stand_in(d / "inception-2015-12-05.pt")


def _scaling(d: Path, fx: Fixtures) -> None:
    fx.place_demo(d / "runs" / "psa_4gpu")  # what the page's 4-GPU run (not run here) writes


#: what each page's reader has before the page starts (made in the page's directory)
SETUP: dict[str, Callable[[Path, Fixtures], None]] = {
    "docs/evaluation.md": _evaluation,
    "docs/posterior.md": _posterior,
    "docs/pruning.md": _pruning,
    "docs/metrics.md": _metrics,
    "docs/data.md": lambda d, fx: _objects_room_file(d),
    "docs/scaling.md": _scaling,
}
#: placeholder words of a page's command lines → what they stand for here
SUBSTITUTE: dict[str, dict[str, str]] = {
    "docs/data.md": {
        "SOURCE": "objects_room_train.tfrecords",
        "NAME": "objects-room",
        "DIR": "data/objects_room",
    },
}


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    return Fixtures(tmp_path_factory.mktemp("docs_fixtures"))


def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a page registers (a grouping, a dataset) is forgotten afterwards."""
    import probslot.data
    import probslot.experiments
    import probslot.models  # noqa: F401 - every registry exists before it is copied
    from probslot.registry import Registry

    for module in [m for name, m in sys.modules.items() if name.startswith("probslot")]:
        for value in list(vars(module).values()):
            if isinstance(value, Registry):
                monkeypatch.setattr(value, "_factories", dict(value._factories))


def _run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures: Fixtures) -> None:
    monkeypatch.chdir(tmp_path)
    _isolate(monkeypatch)
    name = str(page.relative_to(ROOT))
    SETUP.get(name, lambda d, fx: None)(tmp_path, fixtures)
    run_page(page, fixtures, substitute=SUBSTITUTE.get(name))


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_the_tutorial_runs(page: Path, tmp_path: Path, monkeypatch, fixtures) -> None:
    _run(page, tmp_path, monkeypatch, fixtures)


@pytest.mark.slow
@pytest.mark.parametrize("page", GUIDES, ids=lambda p: p.stem)
def test_the_page_runs(page: Path, tmp_path: Path, monkeypatch, fixtures) -> None:
    """Every python block and command of the page, in order, at a small scale."""
    _run(page, tmp_path, monkeypatch, fixtures)


EXEMPT = [b for page in [*TUTORIALS, *GUIDES] for b in blocks(page) if b.not_run is not None]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_block_that_does_not_run_says_why(page: Path) -> None:
    errors = marker_errors(page)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("block", EXEMPT, ids=lambda b: f"{b.page.relative_to(ROOT)}:{b.line}")
def test_not_run(block: Block) -> None:
    """One skip per exempt block of a page that runs, so that the skip list names each one and
    its reason."""
    if not block.not_run:
        pytest.fail(f"{block.where}: `<!-- not run -->` needs a reason")
    pytest.skip(f"{block.where}: not run: {block.not_run}")
