"""`probslot report`: one self-contained HTML page (images embedded as base64 PNG) and a Markdown
summary next to it, built from saved results only.

Per run: config, training curves (``logs/csv``), reconstructions and masks and per-slot
decompositions (``eval/*.png`` from `probslot evaluate`), aggregate-posterior samples, pruning
figures (``pruning/pruning.json`` + ``pruning/*.png``), metric tables (``eval.json``); across runs:
comparison matrices (``compare.json`` from `probslot compare`). A section whose inputs are missing
says so and names the command that produces them.

The page carries a small inline script that, once loaded, writes
``<div id="render-check" data-images=N data-ok=M data-sections=S>`` into the DOM: M is the number of
``<img>`` elements that decoded (``naturalWidth > 0``). Tests read it with headless Chromium.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SECTION_KINDS", "RunInputs", "build_report", "collect_run", "render_html"]

#: the section kinds every run gets, in page order (plus one ``comparison`` section per page)
SECTION_KINDS = ("config", "curves", "reconstructions", "slots", "samples", "pruning", "metrics")


@dataclass
class RunInputs:
    """What a report found in one run directory (paths are None when absent)."""

    root: Path
    config_text: str | None = None
    eval: dict[str, Any] | None = None
    curves_png: bytes | None = None
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


def collect_run(run_dir: str | os.PathLike[str]) -> RunInputs:
    """Gather a run's saved results; raise FileNotFoundError when `run_dir` is not a run."""
    from probslot.reports.figures import figure_png, plot_training_curves, read_csv_logs

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
        inputs.curves_png = figure_png(
            plot_training_curves(series, f"training curves: {root.name}")
        )
    for name in ("reconstructions", "slots", "samples", "pi"):
        p = root / "eval" / f"{name}.png"
        if p.is_file():
            inputs.figures[name] = p
    if "samples" not in inputs.figures and (root / "samples.png").is_file():
        inputs.figures["samples"] = root / "samples.png"  # from `probslot sample`
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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "–"
    return html.escape(str(v))


def _flat_items(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            items.extend(_flat_items(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(x, (int, float)) or x is None for x in v):
            items.append((f"{prefix}{k}", "[" + ", ".join(_fmt(x) for x in v) + "]"))
        elif not isinstance(v, list):
            items.append((f"{prefix}{k}", v))
    return items


def _table(rows: Sequence[tuple[str, Any]], header: tuple[str, str] = ("metric", "value")) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def _matrix(mat: Sequence[Sequence[Any]], names: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><th>{html.escape(n)}</th>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
        for n, row in zip(names, mat, strict=True)
    )
    return f"<table class='matrix'><tr><th></th>{head}</tr>{rows}</table>"


def _section(kind: str, run: str, title: str, body: str) -> str:
    anchor = f"{kind}-{run}"
    return (
        f'<section class="part" id="{html.escape(anchor)}" data-section="{kind}">'
        f"<h3>{html.escape(title)}</h3>{body}</section>"
    )


def _run_sections(inp: RunInputs) -> str:
    name = inp.root.name
    run = str(inp.root)
    parts = []
    parts.append(
        _section(
            "config", name, "Configuration", f"<pre>{html.escape(inp.config_text or '')}</pre>"
        )
    )
    curves = (
        _img(inp.curves_png, f"training curves of {name}")
        if inp.curves_png
        else _missing(f"probslot train --config {run}/config.yaml (no CSV logs in {run}/logs/csv)")
    )
    parts.append(_section("curves", name, "Training curves", curves))
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
        samples = _missing(f"probslot aggregate --run_dir {run}, then {evaluate}")
    parts.append(_section("samples", name, "Samples from the aggregate posterior", samples))
    if inp.pruning is not None or inp.pruning_pngs:
        body = _table(_flat_items(inp.pruning or {}), ("quantity", "value")) if inp.pruning else ""
        body += "".join(_img(p.read_bytes(), p.stem) for p in inp.pruning_pngs)
    else:
        body = _missing(f"probslot prune --run_dir {run} --sweep")
    parts.append(_section("pruning", name, "Pruning (ARD, paper Eq. 7)", body))
    body = ""
    if inp.metrics:
        body += "<h4>Final validation (training)</h4>" + _table(_flat_items(inp.metrics))
    if inp.eval:
        ev = inp.eval
        body += f"<h4>Evaluation on {ev.get('num_images')} {_fmt(ev.get('split'))} images</h4>"
        seg = ev.get("segmentation", {})
        if seg:
            metrics = sorted({k for vals in seg.values() for k in vals})
            head = "".join(f"<th>{m}</th>" for m in metrics)
            rows = "".join(
                f"<tr><td>{html.escape(src)} masks</td>"
                + "".join(f"<td>{_fmt(vals.get(m))}</td>" for m in metrics)
                + "</tr>"
                for src, vals in seg.items()
            )
            body += f"<table><tr><th>segmentation</th>{head}</tr>{rows}</table>"
        rest = {
            k: v
            for k, v in ev.items()
            if k
            in (
                "reconstruction",
                "identifiability_gt",
                "compositional_contrast",
                "slot_counts",
                "generation",
            )
        }
        body += _table(_flat_items(rest))
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
    return f'<section class="run" id="run-{html.escape(name)}"><h2>Run {html.escape(name)}</h2>{"".join(parts)}</section>'


def _comparison(
    compare: dict[str, Any] | None, compare_dir: Path | None, runs: Sequence[RunInputs]
) -> str:
    if compare is None:
        dirs = ", ".join(str(r.root) for r in runs[:3])
        body = _missing(
            f"probslot compare --run_dirs '[{dirs}, ...]' --out DIR, then "
            "probslot report --compare DIR"
        )
    else:
        names = compare.get("names", [])
        body = (
            f"<p>{compare.get('num_images')} {_fmt(compare.get('split'))} images; "
            f"{html.escape(str(compare.get('pairs', '')))}.</p>"
        )
        rows = []
        for key, stats in compare.get("summary", {}).items():
            cons = compare.get("consecutive", {}).get(key, {})
            rows.append(
                f"<tr><td>{html.escape(key)}</td><td>{_fmt(stats.get('mean'))} ± "
                f"{_fmt(stats.get('std'))} (n={stats.get('n')})</td><td>"
                f"{_fmt(cons.get('mean')) if cons else '–'}</td></tr>"
            )
        body += (
            "<table><tr><th>metric</th><th>all pairs: mean ± std</th>"
            f"<th>consecutive pairs: mean</th></tr>{''.join(rows)}</table>"
        )
        for key, mat in compare.get("matrices", {}).items():
            body += f"<h4>{html.escape(key)}</h4>" + _matrix(mat, names)
        fig = compare_dir / compare.get("figure", "compare.png") if compare_dir else None
        if fig is not None and fig.is_file():
            body += _img(fig.read_bytes(), "comparison heatmaps")
        for note in compare.get("notes", []):
            body += f"<p class='note'>{html.escape(note)}</p>"
    return (
        '<section class="part" id="comparison" data-section="comparison">'
        f"<h2>Cross-seed comparison</h2>{body}</section>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #aaa;margin-top:2em}
section.part{margin:1em 0 1.5em}img{max-width:100%;display:block;margin:.5em 0}
pre{background:#f4f4f4;padding:.6em;max-height:22em;overflow:auto;font-size:12px}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#eee}
.missing{color:#a33;font-style:italic}nav li{display:inline;margin-right:1em}
"""

_CHECK = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var div = document.createElement('div');
  div.id = 'render-check';
  div.setAttribute('data-images', imgs.length);
  div.setAttribute('data-ok', ok);
  div.setAttribute('data-sections', document.querySelectorAll('section.part').length);
  div.textContent = 'rendered ' + ok + ' of ' + imgs.length + ' images';
  div.style.color = '#888';
  document.body.appendChild(div);
});
</script>
"""


def render_html(
    runs: Sequence[RunInputs], compare: dict[str, Any] | None, compare_dir: Path | None
) -> str:
    """The page as a string (no external resources)."""
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(
        f'<li><a href="#run-{html.escape(r.root.name)}">{html.escape(r.root.name)}</a></li>'
        for r in runs
    )
    body = "".join(_run_sections(r) for r in runs) + _comparison(compare, compare_dir, runs)
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
    html_path = atomic_write_text(out, render_html(runs, compare_data, compare_dir))
    md_path = atomic_write_text(
        out.with_suffix(".md"),
        render_markdown(runs, compare_data, out.parent),
    )
    return html_path, md_path
