"""`probslot report`: one self-contained HTML page (images embedded as base64 PNG) and a Markdown
summary next to it, built from saved results only.

Per run: training curves against the optimiser step and against wall-clock minutes
(``logs/csv``), the latest training panels (``panels/step_*.png``), reconstructions and masks and
per-slot decompositions (``eval/*.png`` from `probslot evaluate`), aggregate-posterior samples,
pruning (``pruning.json`` + ``pruning/*.png``), metric tables (``eval.json``, ``metrics.json``),
the configuration and links to every file of the run; across runs: the comparison
(``compare.json`` from `probslot compare`). Tables carry readable labels and formatted numbers
(`probslot.reports.tables`); hashes and histograms stay in the JSON files the page links to. A
section whose inputs are missing says so and names the command that produces them.

The page carries a small inline script that, once loaded, writes
``<div id="render-check" data-images=N data-ok=M data-failed=ALTS data-sections=S>`` into the DOM:
M is the number of ``<img>`` elements that decoded (``complete && naturalWidth > 0``), ALTS the alt
texts of those that did not. Tests read it with headless Chromium (``--dump-dom``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probslot.reports.tables import (
    Table,
    compare_order,
    compare_tables,
    evaluation_tables,
    final_validation_table,
    label,
    pruning_tables,
)

__all__ = ["RUN_FILES", "SECTION_KINDS", "RunInputs", "build_report", "collect_run", "render_html"]

#: the section kinds every run gets, in page order (plus one ``comparison`` section per page)
SECTION_KINDS = (
    "curves",
    "panels",
    "reconstructions",
    "slots",
    "samples",
    "pruning",
    "metrics",
    "config",
    "files",
)

#: the files of a run directory the page links to, with what each holds
RUN_FILES: tuple[tuple[str, str], ...] = (
    ("config.yaml", "resolved configuration"),
    ("MODEL_CARD.md", "model card"),
    ("metrics.json", "final validation figures"),
    ("model.safetensors", "weights (EMA) for `probslot.load_model`"),
    ("last.ckpt", "last training checkpoint"),
    ("best.ckpt", "best training checkpoint"),
    ("logs/csv/metrics.csv", "training log (CSV)"),
    ("eval.json", "every evaluation metric (`probslot evaluate`)"),
    ("eval/reconstructions.png", "reconstructions and matched masks"),
    ("eval/slots.png", "per-slot decompositions"),
    ("eval/samples.png", "scenes from the aggregate posterior (evaluation)"),
    ("eval/pi.png", "mixing weights π"),
    ("posterior.safetensors", "aggregate posterior q(z) (`probslot aggregate`)"),
    ("samples.png", "generated scenes with their slots (`probslot sample`)"),
    ("pruning.json", "ARD pruning summary (`probslot prune`)"),
    ("pruning/sweep.md", "τ sweep table (Markdown)"),
    ("pruning/sweep.csv", "τ sweep table (CSV)"),
    ("pruning/sweep.png", "τ sweep plot"),
)


@dataclass
class RunInputs:
    """What a report found in one run directory (paths are None when absent)."""

    root: Path
    config_text: str | None = None
    eval: dict[str, Any] | None = None
    curves: dict[str, bytes] = field(default_factory=dict)
    panels: list[Path] = field(default_factory=list)
    figures: dict[str, Path] = field(default_factory=dict)
    pruning: dict[str, Any] | None = None
    pruning_pngs: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] | None = None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); re-run the command that wrote it"
        ) from err


def _panel_step(path: Path) -> int:
    match = re.search(r"(\d+)", path.stem)
    return int(match.group(1)) if match else -1


def collect_run(run_dir: str | os.PathLike[str]) -> RunInputs:
    """Gather a run's saved results; raise FileNotFoundError when `run_dir` is not a run."""
    from probslot.reports.figures import (
        figure_png,
        plot_training_curves,
        read_csv_logs,
        wall_clock_minutes,
    )

    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"run directory {str(root)!r} does not exist. Pass run directories written by "
            "`probslot train` or `probslot demo` (e.g. runs/demo)"
        )
    if not (root / "config.yaml").is_file():
        raise FileNotFoundError(
            f"{str(root)!r} has no config.yaml, so it is not a run directory; pass the directory "
            "that `probslot train` wrote"
        )
    inputs = RunInputs(root=root, config_text=(root / "config.yaml").read_text())
    inputs.eval = _read_json(root / "eval.json")
    inputs.metrics = _read_json(root / "metrics.json")
    series = read_csv_logs(root)
    if series:
        inputs.curves["step"] = figure_png(
            plot_training_curves(series, f"training curves of {root.name} against the step")
        )
        if wall_clock_minutes(series) is not None:
            inputs.curves["minutes"] = figure_png(
                plot_training_curves(
                    series, f"training curves of {root.name} against wall-clock time", x="minutes"
                )
            )
    inputs.panels = sorted((root / "panels").glob("step_*.png"), key=_panel_step)
    for name in ("reconstructions", "slots", "samples", "pi"):
        p = root / "eval" / f"{name}.png"
        if p.is_file():
            inputs.figures[name] = p
    if (root / "samples.png").is_file():
        inputs.figures["samples"] = root / "samples.png"  # `probslot sample`: with π per slot
    # `probslot prune` writes RUN/pruning.json; RUN/pruning/pruning.json is accepted as well
    for candidate in (root / "pruning" / "pruning.json", root / "pruning.json"):
        if candidate.is_file():
            inputs.pruning = _read_json(candidate)
            break
    inputs.pruning_pngs = sorted((root / "pruning").glob("*.png"))
    return inputs


# --------------------------------------------------------------------------- HTML pieces
def _img(data: bytes, alt: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{html.escape(alt)}">'


def _missing(command: str) -> str:
    return f'<p class="missing">not computed: run <code>{html.escape(command)}</code></p>'


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    return f"<h4>{html.escape(table.title)}</h4><table><tr>{head}</tr>{body}</table>"


def _matrix(mat: Sequence[Sequence[Any]], names: Sequence[str]) -> str:
    from probslot.reports.tables import fmt

    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><th>{html.escape(n)}</th>"
        + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row)
        + "</tr>"
        for n, row in zip(names, mat, strict=True)
    )
    return f"<table class='matrix'><tr><th></th>{head}</tr>{rows}</table>"


def _section(kind: str, run: str, title: str, body: str) -> str:
    anchor = f"{kind}-{run}"
    return (
        f'<section class="part" id="{html.escape(anchor)}" data-section="{kind}">'
        f"<h3>{html.escape(title)}</h3>{body}</section>"
    )


def _href(path: Path, base: Path | None) -> str:
    if base is None:
        return path.resolve().as_uri()
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _link(path: Path, base: Path | None, text: str | None = None) -> str:
    return f'<a href="{html.escape(_href(path, base))}">{html.escape(text or path.name)}</a>'


def _code(text: str) -> str:
    """Escaped text with its `backticked` spans as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _files(inp: RunInputs, base: Path | None) -> str:
    items = [
        f"<li>{_link(inp.root / rel, base, rel)}: {_code(what)}</li>"
        for rel, what in RUN_FILES
        if (inp.root / rel).is_file()
    ]
    if inp.panels:
        steps = ", ".join(_link(p, base, str(_panel_step(p))) for p in inp.panels)
        items.append(f"<li>training panels <code>panels/</code>, steps {steps}</li>")
    return f"<ul class='files'>{''.join(items)}</ul>"


def _run_sections(inp: RunInputs, base: Path | None) -> str:
    name = inp.root.name
    run = str(inp.root)
    parts = []
    if inp.curves:
        curves = _img(inp.curves["step"], f"training curves of {name} against the step")
        if "minutes" in inp.curves:
            curves += _img(inp.curves["minutes"], f"training curves of {name} against time")
        else:
            curves += "<p class='note'>wall-clock axis: not logged (no val/minutes)</p>"
        if inp.metrics and inp.metrics.get("train_seconds"):
            from probslot.reports.tables import fmt

            curves += f"<p>training took {fmt(inp.metrics['train_seconds'], 'secs')}.</p>"
    else:
        curves = _missing(
            f"probslot train --config {run}/config.yaml (no CSV logs in {run}/logs/csv)"
        )
    parts.append(_section("curves", name, "Training curves", curves))
    if inp.panels:
        latest = inp.panels[-2:]
        body = (
            f"<p>The latest training panels (steps "
            f"{', '.join(str(_panel_step(p)) for p in latest)} of {len(inp.panels)} in "
            f"{_link(inp.root / 'panels', base, 'panels/')}): each column a validation image; "
            "rows input, reconstruction, masks and each slot.</p><div class='row'>"
            + "".join(_img(p.read_bytes(), f"training panel {p.stem}") for p in latest)
            + "</div>"
        )
    else:
        body = _missing(f"probslot train --config {run}/config.yaml trainer.panel_every=1000")
    parts.append(_section("panels", name, "Training panels", body))
    evaluate = f"probslot evaluate --run_dir {run}"
    for kind, key, title in (
        ("reconstructions", "reconstructions", "Reconstructions and masks"),
        ("slots", "slots", "Per-slot decompositions"),
    ):
        body = (
            _img(inp.figures[key].read_bytes(), title) if key in inp.figures else _missing(evaluate)
        )
        parts.append(_section(kind, name, title, body))
    if "samples" in inp.figures:
        samples = _img(inp.figures["samples"].read_bytes(), "aggregate posterior samples")
    else:
        samples = _missing(f"probslot aggregate --run_dir {run}, then probslot sample {run}")
    parts.append(
        _section("samples", name, "Scenes generated from the aggregate posterior", samples)
    )
    if inp.pruning is not None or inp.pruning_pngs:
        body = "".join(_table(t) for t in pruning_tables(inp.pruning or {})) if inp.pruning else ""
        body += "".join(_img(p.read_bytes(), p.stem) for p in inp.pruning_pngs)
    else:
        body = _missing(f"probslot prune --run_dir {run} --sweep")
    parts.append(_section("pruning", name, "Pruning (ARD, paper Eq. 7)", body))
    body = ""
    if inp.metrics:
        body += _table(final_validation_table(inp.metrics))
    if inp.eval:
        ev = inp.eval
        body += (
            f"<p>Evaluation on {ev.get('num_images')} {html.escape(str(ev.get('split')))} "
            "images.</p>"
        )
        body += "".join(_table(t) for t in evaluation_tables(ev))
        if "pi" in inp.figures:
            body += _img(inp.figures["pi"].read_bytes(), "mixing weights")
        if ev.get("notes"):
            body += (
                "<ul class='notes'>"
                + "".join(f"<li>{html.escape(n)}</li>" for n in ev["notes"])
                + "</ul>"
            )
    else:
        body += _missing(evaluate)
    parts.append(_section("metrics", name, "Metrics", body))
    parts.append(
        _section(
            "config",
            name,
            "Configuration",
            "<details><summary>config.yaml</summary>"
            f"<pre>{html.escape(inp.config_text or '')}</pre></details>",
        )
    )
    parts.append(_section("files", name, "Files", _files(inp, base)))
    return (
        f'<section class="run" id="run-{html.escape(name)}"><h2>Run {html.escape(name)}</h2>'
        f"{''.join(parts)}</section>"
    )


def _comparison(
    compare: dict[str, Any] | None,
    compare_dir: Path | None,
    runs: Sequence[RunInputs],
    base: Path | None,
) -> str:
    if compare is None:
        dirs = ", ".join(str(r.root) for r in runs[:3])
        body = _missing(
            f"probslot compare --run_dirs '[{dirs}, ...]' --out DIR, then "
            "probslot report --compare DIR"
        )
    else:
        names = compare.get("names", [])
        body = f"<p>{compare.get('num_images')} {html.escape(str(compare.get('split')))} images"
        body += f"; {html.escape(str(compare.get('pairs', '')))}.</p>"
        for warning in compare.get("warnings", []):
            body += f"<p class='warning'>warning: {html.escape(warning)}</p>"
        body += "".join(_table(t) for t in compare_tables(compare))
        matrices = compare.get("matrices", {})
        for key in compare_order(matrices):
            body += f"<h4>{html.escape(label(key))}</h4>" + _matrix(matrices[key], names)
        fig = compare_dir / compare.get("figure", "compare.png") if compare_dir else None
        if fig is not None and fig.is_file():
            body += _img(fig.read_bytes(), "comparison heatmaps")
        for note in compare.get("notes", []):
            body += f"<p class='note'>{html.escape(note)}</p>"
        if compare_dir is not None:
            links = [
                _link(compare_dir / f, base, f)
                for f in ("compare.json", compare.get("figure", "compare.png"))
                if (compare_dir / f).is_file()
            ]
            body += f"<p>Files: {', '.join(links)}</p>"
    return (
        '<section class="part" id="comparison" data-section="comparison">'
        f"<h2>Cross-seed comparison</h2>{body}</section>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #aaa;margin-top:2em}
section.part{margin:1em 0 1.5em}img{max-width:100%;display:block;margin:.5em 0}
div.row{display:flex;gap:1em;align-items:flex-start}div.row img{max-width:49%}
pre{background:#f4f4f4;padding:.6em;max-height:22em;overflow:auto;font-size:12px}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#eee}
td:not(:first-child){font-variant-numeric:tabular-nums}
.missing{color:#a33;font-style:italic}.warning{color:#8a4b00;background:#fff4e0;padding:.3em .6em}
nav li{display:inline;margin-right:1em}ul.files{font-size:13px}
"""

_CHECK = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var loaded = function (i) { return i.complete && i.naturalWidth > 0; };
  var ok = imgs.filter(loaded).length;
  var failed = imgs.filter(function (i) { return !loaded(i); }).map(function (i) { return i.alt; });
  var div = document.createElement('div');
  div.id = 'render-check';
  div.setAttribute('data-images', imgs.length);
  div.setAttribute('data-ok', ok);
  div.setAttribute('data-failed', failed.join('; '));
  div.setAttribute('data-sections', document.querySelectorAll('section.part').length);
  div.textContent = 'rendered ' + ok + ' of ' + imgs.length + ' images';
  div.style.color = '#888';
  document.body.appendChild(div);
});
</script>
"""


def render_html(
    runs: Sequence[RunInputs],
    compare: dict[str, Any] | None,
    compare_dir: Path | None,
    base: Path | None = None,
) -> str:
    """The page as a string (no external resources); file links are relative to `base` (the
    page's directory), or absolute ``file://`` URIs without it."""
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(
        f'<li><a href="#run-{html.escape(r.root.name)}">{html.escape(r.root.name)}</a></li>'
        for r in runs
    )
    body = "".join(_run_sections(r, base) for r in runs)
    body += _comparison(compare, compare_dir, runs, base)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>probslot report: {html.escape(', '.join(r.root.name for r in runs))}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>probslot report</h1><p>Generated {when} from {len(runs)} run(s). Probabilistic "
        "Slot Attention (Kori et al., NeurIPS 2024).</p>"
        f"<nav><ul>{nav}<li><a href='#comparison'>comparison</a></li></ul></nav>"
        f"{body}{_CHECK}</body></html>"
    )


def build_report(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str] = "report.html",
    compare: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Write the HTML report `out` and its Markdown summary (``out`` with ``.md``) next to it; return both paths.

    Args:
        run_dirs: one or more run directories.
        out: the HTML file to write (its directory is created).
        compare: a ``compare.json`` written by `probslot compare`, or the directory holding it.

    Raises:
        FileNotFoundError: a run directory (or the given compare file) is missing.
        ValueError: no runs, a run given twice, or `out` not ending in ``.html``.
    """
    from probslot.atomic import atomic_write_text
    from probslot.reports.markdown import render_markdown

    if isinstance(run_dirs, (str, os.PathLike)):
        raise TypeError("run_dirs must be a list of run directories; got a single path")
    if not run_dirs:
        raise ValueError("report needs at least one run directory; got none")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out must be an .html file; got {str(out)!r} (e.g. --out report.html)")
    names = [Path(r).resolve() for r in run_dirs]
    if len(set(names)) != len(names):
        raise ValueError("each run may be given once; got a repeated run directory")
    compare_data, compare_dir = None, None
    if compare is not None:
        path = Path(compare)
        if path.is_dir():
            path = path / "compare.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"no compare.json at {str(path)!r}; run `probslot compare --run_dirs '[A, B]' "
                "--out DIR` and pass --compare DIR"
            )
        compare_data, compare_dir = _read_json(path), path.parent
    runs = [collect_run(r) for r in run_dirs]
    html_path = atomic_write_text(out, render_html(runs, compare_data, compare_dir, out.parent))
    md_path = atomic_write_text(
        out.with_suffix(".md"),
        render_markdown(runs, compare_data, out.parent),
    )
    return html_path, md_path
