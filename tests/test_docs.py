"""The documentation cannot drift from the code.

* The site builds with ``mkdocs build --strict`` (broken links, API pages whose docstrings do not
  parse, pages missing from the navigation all fail).
* Every ``probslot ...`` command line in README.md and docs/ parses with the real CLI: the
  subcommand exists and every flag is one it takes (`probslot.cli.parse_command`), so a renamed
  option fails here.
* Every Python block compiles, and its imports run.
* The tutorials run start to finish (slow): each page's commands and snippets in order, in a
  temporary directory, with small-scale arguments appended to the long commands (a few training
  steps, a few images), so what a reader copies works.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^```(\w+)?\n(.*?)^```", re.M | re.S)


def blocks(page: Path, lang: str) -> list[str]:
    return [body for kind, body in FENCE.findall(page.read_text()) if kind == lang]


def command_lines(page: Path) -> list[str]:
    """The ``probslot`` command lines of the page's bash blocks (comments and continuations
    joined; lines that only show output are skipped)."""
    lines = []
    for body in blocks(page, "bash"):
        for raw in body.replace("\\\n", " ").splitlines():
            line = raw.split(" #")[0].strip()
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

    for line in command_lines(page):
        argv = shlex.split(line)[1:]
        try:
            parse_command(argv)
        except Exception as err:  # noqa: BLE001 - report which line of which page
            raise AssertionError(f"{page.name}: `{line}` does not parse: {err}") from None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_compiles_and_its_imports_run(page: Path) -> None:
    for n, body in enumerate(blocks(page, "python"), 1):
        tree = ast.parse(body, filename=f"{page.name}, python block {n}")
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


# --------------------------------------------------------------------------- the tutorials
#: appended to a tutorial's command lines so the whole page runs in seconds
SMALL = {
    "train": [
        "trainer.max_steps=2",
        "trainer.val_every=2",
        "trainer.panel_every=2",
        "trainer.log_every=1",
        "trainer.max_minutes=0",
        "data.num_train=16",
        "data.num_val=8",
        "data.num_test=48",
        "data.batch_size=4",
        "--no_progress",
    ],
    "evaluate": ["--max_images", "12", "--contrast_images", "0", "--no_progress"],
    "aggregate": ["--max_images", "12", "--no_progress"],
    "prune": ["--max_images", "8", "--no_progress"],
    "compare": ["--max_images", "48", "--no_progress"],  # 32-d slots: the affine fit needs 43
}
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))


def _small(argv: list[str]) -> list[str]:
    extra = SMALL.get(argv[0], [])
    if argv[0] == "evaluate":  # the tutorial's own --max_images / data overrides are replaced
        argv = [a for a in argv if not a.startswith("data.")]
        if "--max_images" in argv:
            i = argv.index("--max_images")
            argv = argv[:i] + argv[i + 2 :]
    if argv[0] == "aggregate" and "--max_images" in argv:
        i = argv.index("--max_images")
        argv = argv[:i] + argv[i + 2 :]
    return argv + extra


@pytest.mark.slow
@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_the_tutorial_runs(page: Path, tmp_path: Path, monkeypatch) -> None:
    import probslot.config
    from probslot.cli import main

    monkeypatch.chdir(tmp_path)
    # a tutorial's Python that loads a config gets the same small scale as its commands
    real = probslot.config.load_config
    small = [o for o in SMALL["train"] if not o.startswith("--")]
    monkeypatch.setattr(probslot.config, "load_config", lambda p, o=(): real(p, [*o, *small]))
    text = page.read_text()
    for kind, body in FENCE.findall(text):
        if kind == "bash":
            for line in command_lines_of(body):
                argv = _small(shlex.split(line)[1:])
                assert main(argv) == 0, f"{page.name}: `{line}` failed"
        elif kind == "python":
            exec(compile(body, str(page), "exec"), {"__name__": "__tutorial__"})  # noqa: S102


def command_lines_of(body: str) -> list[str]:
    out = []
    for raw in body.replace("\\\n", " ").splitlines():
        line = raw.split(" #")[0].strip()
        if line.startswith("probslot "):
            out.append(line)
    return out
