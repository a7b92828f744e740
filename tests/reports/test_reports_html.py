"""`probslot report`: one self-contained HTML page + Markdown summary; rendered in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from probslot.reports import build_report
from probslot.reports.html import SECTION_KINDS

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


@pytest.fixture(scope="module")
def page(report_runs, tmp_path_factory) -> tuple[Path, Path, str]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    html_path, md_path = build_report(
        [report_runs["full"], report_runs["bare"]], out, compare=report_runs["compare"]
    )
    return html_path, md_path, html_path.read_text()


def _section(text: str, kind: str, run: str) -> str:
    match = re.search(rf'<section class="part" id="{kind}-{run}".*?</section>', text, re.S)
    assert match, f"section {kind} of run {run} missing"
    return match.group(0)


def test_every_section_is_present_and_filled_for_a_processed_run(page) -> None:
    _, _, text = page
    for kind in SECTION_KINDS:
        body = _section(text, kind, "full")
        assert "not computed" not in body, kind
    assert _section(text, "curves", "full").count("<img") == 1
    assert _section(text, "reconstructions", "full").count("<img") == 1
    assert _section(text, "slots", "full").count("<img") == 1
    assert _section(text, "samples", "full").count("<img") == 1
    assert _section(text, "pruning", "full").count("<img") >= 1  # sweep.png from probslot prune
    metrics = _section(text, "metrics", "full")
    assert "decoder masks" in metrics and "attention masks" in metrics
    assert 'id="comparison"' in text and "smcc" in text and "posterior_kl" in text


def test_missing_inputs_name_the_command_to_run(page, report_runs) -> None:
    _, _, text = page
    bare = report_runs["bare"]
    assert f"probslot evaluate --run_dir {bare}" in _section(text, "reconstructions", "bare")
    assert f"probslot aggregate --run_dir {bare}" in _section(text, "samples", "bare")
    assert f"probslot prune --run_dir {bare}" in _section(text, "pruning", "bare")


def test_page_is_self_contained(page) -> None:
    _, _, text = page
    srcs = re.findall(r'<img src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="https?://', text)
    assert "<link" not in text


def test_markdown_summary_next_to_the_page(page) -> None:
    html_path, md_path, _ = page
    assert md_path == html_path.with_suffix(".md") and md_path.name == "report.md"
    md = md_path.read_text()
    assert "## Run `full`" in md and "| decoder |" in md and "| attention |" in md
    assert "## Cross-seed comparison" in md and "| smcc |" in md
    assert "probslot evaluate --run_dir" in md  # the bare run's note


def test_report_without_comparison_says_how_to_get_one(report_runs, tmp_path: Path) -> None:
    html_path, _ = build_report([report_runs["bare"]], tmp_path / "r.html")
    text = html_path.read_text()
    assert "not computed: run <code>probslot compare" in text


def test_bad_inputs_are_clear_errors(report_runs, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report([tmp_path / "missing"], tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"--out must be an \.html file; got .*r\.pdf"):
        build_report([report_runs["bare"]], tmp_path / "r.pdf")
    with pytest.raises(FileNotFoundError, match="no compare.json"):
        build_report([report_runs["bare"]], tmp_path / "r.html", compare=tmp_path)
    with pytest.raises(ValueError, match="at least one run"):
        build_report([], tmp_path / "r.html")
    with pytest.raises(TypeError, match="list of run directories"):
        build_report(str(report_runs["bare"]), tmp_path / "r.html")


def test_cli_report(report_runs, tmp_path: Path, capsys) -> None:
    from probslot.cli import main

    out = tmp_path / "cli" / "report.html"
    argv = ["report", "--run_dirs", f"[{report_runs['full']}]", "--out", str(out)]
    assert main(argv) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    assert out.is_file() and out.with_suffix(".md").is_file()


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not installed (CI installs Debian's chromium in .ci/run; locally: "
    "apt-get install chromium)",
)
def test_page_renders_every_section_and_image_in_chromium(page, tmp_path: Path) -> None:
    html_path, _, text = page
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        html_path.resolve().as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    marker = re.search(r'<div id="render-check"[^>]*>', dom)
    assert marker, f"the page's load script did not run; DOM starts {dom[:300]!r}"
    attrs = dict(re.findall(r'data-([a-z]+)="(\d+)"', marker.group(0)))
    n_img = text.count("<img")
    assert int(attrs["images"]) == n_img >= 8  # 6 for the full run, 1 bare, 1 heatmap
    assert int(attrs["ok"]) == n_img  # every embedded PNG decoded (naturalWidth > 0)
    assert int(attrs["sections"]) == 2 * len(SECTION_KINDS) + 1  # per run + comparison
