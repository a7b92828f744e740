"""`probslot report`: one self-contained HTML page + Markdown summary; rendered in Chromium."""

from __future__ import annotations

import html
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
    curves = _section(text, "curves", "full")
    assert curves.count("<img") == 2  # against the step and against wall-clock minutes
    assert 'alt="training curves of full against time"' in curves
    panels = _section(text, "panels", "full")
    assert panels.count("<img") == 2 and "steps 3, 7 of 2" in panels  # the latest panels
    assert _section(text, "reconstructions", "full").count("<img") == 1
    assert _section(text, "slots", "full").count("<img") == 1
    assert _section(text, "samples", "full").count("<img") == 1
    assert _section(text, "pruning", "full").count("<img") >= 1  # sweep.png from probslot prune
    metrics = _section(text, "metrics", "full")
    assert "decoder masks" in metrics and "attention masks" in metrics
    assert 'id="comparison"' in text and "SMCC" in text and "posterior KL" in text
    assert "posterior Bhattacharyya distance (moment-matched, nats per dimension)" in text
    assert "not logged" in _section(text, "curves", "bare")  # no val/minutes in its log


def _cells(text: str) -> list[list[str]]:
    """Every table row of the page as its cells' text (header rows included)."""
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", text, re.S):
        rows.append([html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)])
    return rows


def test_tables_have_readable_labels_and_no_raw_data(page) -> None:
    _, md, text = page
    rows = _cells(text)
    assert len(rows) > 30
    raw_key = re.compile(r"[A-Za-z][_./][A-Za-z]")
    labels = [r[0] for r in rows if r and r[0]]
    assert not [x for x in labels if raw_key.search(x)], "a row label is a raw JSON key"
    cells = [c for r in rows for c in r]
    for c in cells:
        assert "[" not in c and len(c) < 120, f"a dumped list or blob in a table: {c[:80]!r}"
        assert not re.fullmatch(r"-?\d+\.\d{6,}", c), f"an unformatted number: {c!r}"
    for forbidden in ("sha256", "pi_histogram", "pi_bins", "pi_quantiles", "model_file"):
        assert forbidden not in text, forbidden
    assert ["FG-ARI (decoder masks)", "0.25"] in rows  # metrics.json's fg_ari, labelled
    assert any(r[0] == "slot-count MAE ≤ 0.5" and r[2] in ("✓ yes", "✗ no") for r in rows)
    assert any(r[0] == "decoder masks" and len(r) == 4 for r in rows)  # ARI, FG-ARI, mBO
    md_text = md.read_text()
    assert not re.search(r"^\| [a-z]+_[a-z_]+ \|", md_text, re.M)  # no raw keys in Markdown rows


def test_files_section_links_every_file_of_the_run(page, report_runs) -> None:
    html_path, _, text = page
    files = _section(text, "files", "full")
    hrefs = re.findall(r'href="([^"#]+)"', files)
    for rel in ("config.yaml", "eval.json", "pruning.json", "pruning/sweep.png", "metrics.json"):
        assert any(h.endswith(rel) for h in hrefs), rel
    for h in hrefs:  # relative to the page, and each one exists
        assert not h.startswith(("/", "file:")) and (html_path.parent / h).exists(), h


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
    assert "## Run `full`" in md and "| decoder masks |" in md and "| attention masks |" in md
    assert "## Cross-seed comparison" in md and "| SMCC |" in md
    assert "![latest training panel](" in md and "**τ sweep**" in md
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
    # full run: 2 curves, 2 panels, reconstructions, slots, samples, sweep, π; bare: 1 curve;
    # the comparison heatmap
    assert int(attrs["images"]) == n_img >= 11
    assert int(attrs["ok"]) == n_img  # every embedded PNG decoded (complete, naturalWidth > 0)
    failed = re.search(r'data-failed="([^"]*)"', marker.group(0))
    assert failed is not None and failed.group(1) == "", f"images that did not load: {failed}"
    assert int(attrs["sections"]) == 2 * len(SECTION_KINDS) + 1  # per run + comparison
