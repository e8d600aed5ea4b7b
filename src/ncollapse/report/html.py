"""One self-contained HTML report per run, or one comparing runs: PNG figures embedded as base64 data URIs,
inline CSS, no script and no network. Every figure is also written as a PNG into one folder named after the
page, ``<html stem>_files/<figure>.png``, as one set through ``io_safe.Outputs`` (a temp folder renamed into
place; the previous set goes as a whole), so two reports never mix their figures and no stale PNG stays behind.

Page layout: the line-style convention stated once (training solid, test dashed, one colour per run), a summary,
a headline row of five larger NC panels (``ncpanels.HEADLINE``: NC1, CDNV, ETF error, self-duality, NCC mismatch)
with human titles and the metric key in small type, accuracy figures, and every other NC panel grouped under
NC1–NC4 and "other" inside a ``<details>``. Per-run sections (Gram heatmaps, Σ_B spectra, confusion) of 2–3 runs
sit side by side. A run with fewer than two NC passes gets a table of its NC values instead of one-point curves.

Missing parts degrade to a note at the top of the page (and a log line, ``notes``), never to a crash:
no ``nc_state.pt`` → no Gram heatmaps; runs with different class counts → no per-class overlay. Panels that
carry no information (no finite value, numerically zero, constant, a std over ≤ 2 classes) are left out with a note;
one run's flat series (a fixed classifier's 1e-16) is left out of a shared panel and named in it.
"""

from __future__ import annotations

import base64
import html
import math
import os
import zlib
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io_safe import Outputs
from ..metrics import GROUPS, measure
from . import ncpanels, notes, plots
from .figures import png_bytes
from .runs import Run, load_run

__all__ = ["write_report", "write_comparison", "render_report", "render_comparison", "html_table"]

MAX_SPECTRA = 8
MAX_SIDE_BY_SIDE = 3  # per-run sections of up to this many runs share one row
CONVENTION = ("On every figure: <b>solid</b> lines = training set (accuracy, features), <b>dashed</b> = test set; "
              "one colour per run.")
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.8em}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:3px 9px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}.notes{background:#fff8e1;border:1px solid #f0d98c;padding:6px 14px}
img{max-width:100%;height:auto}figure{margin:.6em 0}figcaption{color:#555;font-size:.88em}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:8px;overflow-x:auto;font-size:.85em}
h3{font-size:1.02em;margin:1.4em 0 .1em}.conv{color:#333;font-size:.92em}
.row{display:grid;gap:10px 14px;grid-template-columns:repeat(var(--n),minmax(0,1fr));align-items:start}
.row figure{margin:0;min-width:0}.ptitle{font-weight:600;font-size:.9em;white-space:nowrap;overflow:hidden;
text-overflow:ellipsis;margin-bottom:2px}.ptitle small{font-weight:400;color:#666;font-size:.8em;margin-left:.35em}
.flat{border:1px dashed #ccc;color:#555;font-size:.85em;padding:10px}
.keys{margin:.2em 0 .5em}.key{margin-right:1.4em;white-space:nowrap}details{margin:1em 0}
summary{cursor:pointer;font-weight:600;font-size:1.05em}
"""


def _fmt(value, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if percent:
        return f"{100 * value:.2f} %"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def html_table(header: list[str] | None, rows: list[list], numeric_from: int | None = None) -> str:
    """An HTML table: cells escaped, floats with 4 significant digits, None as an em dash; columns from
    ``numeric_from`` on are right-aligned numbers (``td.num``)."""
    def cell(i, value):
        text = "—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        numeric = numeric_from is not None and i >= numeric_from
        return f"<td{' class=num' if numeric else ''}>{html.escape(text)}</td>"
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    out += ["<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>" for row in rows]
    out.append("</table>")
    return "\n".join(out)


def _set_name(out: Path) -> str:
    """``<stem>_files``; a stem too long for the file system is cut and given a short digest, so it stays unique."""
    name = f"{out.stem}_files"
    try:
        limit = os.pathconf(out.parent if out.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(name.encode("utf-8", "surrogateescape")) <= limit:
        return name
    digest = f"{zlib.crc32(out.name.encode('utf-8', 'surrogateescape')):08x}"
    keep = out.stem.encode("utf-8", "surrogateescape")[: limit - len("_files") - 9].decode("utf-8", "ignore")
    return f"{keep}~{digest}_files"


def claim_page(outputs: Outputs, out) -> Path:
    """Claim the report page ``out`` and its figure folder ``<stem>_files`` with ``outputs`` (checked and locked
    before anything is drawn); returns the folder."""
    out = Path(out)
    outputs.claim(out, "report")
    folder = out.parent / _set_name(out)
    outputs.claim(folder, "report figures/")
    return folder


class _Page:
    """Collects HTML parts and figures; figures go to disk as PNG and into the page as data URIs."""

    def __init__(self, out: Path, outputs: Outputs | None, inputs=()):
        self.out = out
        self.outputs = outputs if outputs is not None else Outputs(inputs=inputs)
        self.owned = outputs is None
        self.folder = claim_page(self.outputs, out)
        self.parts: list[str] = []
        self.notes: list[str] = []
        self.pngs: dict[str, bytes] = {}

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def heading(self, title: str, level: int = 2) -> None:
        self.add(f"<h{level}>{html.escape(title)}</h{level}>")

    def note(self, text: str) -> None:
        self.notes.append(text)
        notes.say(text)

    def image(self, name: str, png: bytes, caption: str = "", title: str = "") -> None:
        self.pngs[f"{name}.png"] = png
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.add(f'<figure>{title}<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">{cap}</figure>')

    def figure(self, name: str, fig, caption: str = "", title: str = "") -> None:
        """Add ``fig``; ``title``: an HTML panel title (``panel_title``) above it."""
        self.image(name, png_bytes(fig), caption, title)

    def row(self, n: int, css_class: str = "") -> None:
        """Open a grid row of ``n`` columns; the parts added until ``end_row`` fill it left to right."""
        self.add(f'<div class="row{" " + css_class if css_class else ""}" style="--n:{n}">')

    def end_row(self) -> None:
        self.add("</div>")

    def write(self, title: str, subtitle: str) -> tuple[Path, list[Path]]:
        box = ""
        if self.notes:
            items = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
            box = f'<div class="notes"><b>Notes</b><ul>{items}</ul></div>'
        doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
               f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
               f"<h1>{html.escape(title)}</h1><p class=sub>{html.escape(subtitle)}</p>\n{box}\n"
               f"<p class=conv>{CONVENTION}</p>\n"
               + "\n".join(self.parts) + "\n</body></html>\n")
        try:
            return self.out, self.outputs.write_set(self.folder, self.pngs, page=(self.out, doc.encode("utf-8")))
        finally:
            if self.owned:
                self.outputs.close()


def _check_extra(extra_sections) -> list[tuple[str, str, object]]:
    """Validate (title, content) pairs up front; returns (title, kind, value), kind "figure" | "png" | "html".

    content is a matplotlib Figure, a PNG path (a Path, or a str ending in .png) or an HTML fragment (inserted as given).
    """
    checked = []
    for i, item in enumerate(extra_sections or ()):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"extra_sections[{i}] must be a (title, content) pair; got {item!r:.80}")
        title, content = str(item[0]), item[1]
        if isinstance(content, Figure):
            checked.append((title, "figure", content))
        elif isinstance(content, PathLike) or (isinstance(content, str) and "<" not in content
                                               and content.lower().endswith(".png")):
            if not Path(content).is_file():
                raise ValueError(f"extra section {title!r}: PNG file {content} not found")
            checked.append((title, "png", Path(content)))
        elif isinstance(content, str):
            checked.append((title, "html", content))
        else:
            raise TypeError(f"extra section {title!r}: content must be a Figure, a PNG path or an HTML string; "
                            f"got {type(content).__name__}")
    return checked


def _extra(page: _Page, extra: list[tuple[str, str, object]]) -> None:
    for i, (title, kind, content) in enumerate(extra, 1):
        page.heading(title)
        if kind == "figure":
            page.figure(f"extra{i}", content)
        elif kind == "png":
            page.image(f"extra{i}", content.read_bytes())
        else:
            page.add(content)


def _best(run: Run) -> tuple[float, int | None]:
    epochs, acc = run.series("test_acc")
    if not np.isfinite(acc).any():
        return math.nan, None
    i = int(np.nanargmax(acc))
    return float(acc[i]), int(epochs[i])


def _last_value(run: Run, key: str):
    """(value, epoch) of the last line that has ``key``."""
    for m in reversed(run.metrics):
        if key in m:
            return m[key], m["epoch"]
    return None, None


def _subtitle(run: Run) -> str:
    keys = ("dataset", "model", "loss", "head", "seed")
    parts = [f"{k} {run.info[k]}" for k in keys if k in run.info]
    return " · ".join(parts + [f"{len(run.metrics)} epochs logged", str(run.path)])


def _summary_rows(run: Run) -> list[list]:
    last = run.last
    best, best_epoch = _best(run)
    rows = [[f"final test accuracy (epoch {last['epoch']})", _fmt(last.get("test_acc"), True)],
            [f"best test accuracy (epoch {best_epoch})", _fmt(best, True)],
            [f"final train accuracy (epoch {last['epoch']})", _fmt(last.get("train_acc"), True)]]
    for group in GROUPS:
        if f"test_acc_{group}" in last:
            rows.append([f"final test accuracy, {group} classes", _fmt(last[f"test_acc_{group}"], True)])
    for key in ("nc/nc1", "nc/cdnv", "nc/etf_error_means", "nc/self_duality", "nc/ncc_mismatch", "ncmc/collapse_mean"):
        value, epoch = _last_value(run, key)
        if epoch is not None:
            rows.append([f"{ncpanels.title(key.partition('/')[2])}: {key} (last NC pass, epoch {epoch})", _fmt(value)])
    if run.summary and "wall_s" in run.summary:
        rows.append(["wall time (s)", _fmt(run.summary["wall_s"])])
    return rows


def _spectra(run: Run) -> list[tuple[object, np.ndarray]]:
    rows = [(m["epoch"], np.asarray([math.nan if v is None else v for v in m["nc/sigma_b_spectrum"]], float))
            for m in run.metrics if isinstance(m.get("nc/sigma_b_spectrum"), list) and m["nc/sigma_b_spectrum"]]
    if len(rows) > MAX_SPECTRA:
        picks = np.unique(np.linspace(0, len(rows) - 1, MAX_SPECTRA).round().astype(int))
        rows = [rows[i] for i in picks]
    return rows


def _state_sections(page: _Page, runs: list[Run], tagged: bool) -> None:
    """Gram heatmaps, (when the metrics lack it) the Σ_B spectrum from nc_state.pt, and the final test confusion
    matrix; with ``tagged`` (a comparison page) each section holds one panel per run, titled by the run's label,
    up to MAX_SIDE_BY_SIDE in a row."""
    grams, spectra, confusions = [], [], []
    for run in runs:
        who = f"{run.label}: " if tagged else ""
        found, state = _spectra(run), run.nc_state
        if state is not None:
            stats, weight = state["stats"], state["weight"]
            final = stats.finalize()
            present = final.counts > 0
            if int(present.sum()) >= 2:
                w = None if weight is None else weight[present]
                grams.append((run, plots.gram_figure(final.means[present], w, state["epoch"], stacked=tagged),
                              f"from nc_state.pt (epoch {state['epoch']}): K = {int(present.sum())} classes with "
                              f"samples, d = {stats.dim}, N = {final.num_samples} training samples"))
                if not found:
                    found = [(state["epoch"], np.asarray(measure(final)["sigma_b_spectrum"]))]
            else:
                page.note(f"{who}nc_state.pt has fewer than two classes with samples: Gram heatmaps left out")
        if found:
            spectra.append((run, plots.spectrum_figure(found), ""))
        confusion = None if state is None else state.get("test_confusion")
        if confusion is not None:
            counts = run.class_counts()
            sized = counts and len(counts) == len(confusion)
            order = plots.sorted_by_size(counts) if sized else list(range(len(confusion)))
            confusions.append((run, plots.confusion_figure(confusion.numpy(), run.info.get("class_names"), order,
                                                           state["epoch"]), ""))
        elif state is not None:
            page.note(f"{who}nc_state.pt has no test confusion counts (written by the trainer at the final epoch): "
                      "confusion matrix left out")
    _side_by_side(page, "Gram matrices of normalised class means and classifier", "gram", grams, tagged, "")
    _side_by_side(page, "Σ_B spectrum", "sigma_b_spectrum", spectra, tagged,
                  "eigenvalues of the between-class covariance; NC drives them to K−1 equal values")
    _side_by_side(page, "Test confusion matrix", "confusion", confusions, tagged,
                  "rows: true class, sorted by decreasing training size; each row sums to 1")


def _side_by_side(page: _Page, heading: str, name: str, items: list, tagged: bool, about: str) -> None:
    """One section: a heading, a line saying what the panels show, and the (run, figure, caption) items, in rows of
    up to MAX_SIDE_BY_SIDE panels titled by run when ``tagged``."""
    if not items:
        return
    page.heading(heading)
    if about:
        page.add(f"<p class=sub>{html.escape(about)}</p>")
    if tagged:
        page.row(min(len(items), MAX_SIDE_BY_SIDE), "runs")
    for run, fig, caption in items:
        title = panel_title(run.label) if tagged else ""
        page.figure(f"{name}_{_slug(run.label)}" if tagged else name, fig, caption, title)
    if tagged:
        page.end_row()


def panel_title(text: str, key: str = "") -> str:
    """An HTML panel title: ``text``, and ``key`` (a metric key) in small type on its own line."""
    small = f"<br><small>{html.escape(key)}</small>" if key else ""
    return f"<div class=ptitle>{html.escape(text)}{small}</div>"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower() or "run"


def _env_rows(info: dict) -> list[list]:
    rows = []
    for key, value in info.items():
        if key == "environment" and isinstance(value, dict):
            rows += [[f"environment.{k}", v] for k, v in value.items()]
        elif key in ("class_counts", "class_names") and isinstance(value, list) and len(value) > 12:
            rows.append([key, f"{len(value)} entries: {value[:6]} … {value[-3:]}"])
        elif key == "groups" and isinstance(value, dict):
            rows.append([key, ", ".join(f"{g}: {len(c)} classes" for g, c in value.items())])
        else:
            rows.append([key, value])
    return rows


@dataclass
class _NCPlan:
    """Which NC panels a page shows: headline keys, the rest by group, left-out keys with the reason."""
    passes: int
    headline: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _nc_passes(run: Run) -> int:
    return sum(any(k.startswith("nc/") for k in m) for m in run.metrics)


def _nc_plan(page: _Page, runs: list[Run]) -> _NCPlan:
    """Sort the runs' NC and NCMC keys into the headline row and the NC1–NC4 / other groups (NCMC under other);
    notes what is left out."""
    plan = _NCPlan(passes=max(_nc_passes(r) for r in runs))
    for prefix in ("nc/", "ncmc/"):
        found = {}
        for run in runs:
            found.update(dict.fromkeys(run.scalar_keys(prefix)))
        keys = plots.ordered_nc_keys(list(found), prefix)
        if prefix == "nc/" and not keys:
            page.note("no nc/ metrics in metrics.jsonl: NC curves left out")
        plan.skipped.update(ncpanels.uninformative(runs, keys, prefix))
        if prefix == "nc/":
            plan.headline = [f"nc/{n}" for n in ncpanels.HEADLINE if f"nc/{n}" in keys]
        shown = [k for k in keys if k not in plan.skipped and k not in plan.headline]
        for group, members in ncpanels.grouped(shown, prefix).items():
            plan.groups.setdefault("other" if prefix == "ncmc/" else group, []).extend(members)
    plan.groups = {g: plan.groups[g] for g in ncpanels.GROUPS if plan.groups.get(g)}
    dropped: dict[str, list[str]] = {}
    for key, why in plan.skipped.items():
        dropped.setdefault(why, []).append(key)
    for why, members in dropped.items():
        page.note(f"panels left out ({why}): {', '.join(members)}")
    if 0 < plan.passes < 2:
        epochs = sorted({m["epoch"] for r in runs for m in r.metrics if any(k.startswith("nc/") for k in m)})
        page.note(f"one NC pass (epoch {', '.join(map(str, epochs))}): NC curves need at least two passes (train "
                  "longer or lower eval.nc_every); the measured values are shown as a table")
    return plan


def _nc_headline(page: _Page, runs: list[Run], plan: _NCPlan) -> None:
    """The headline row: one larger panel per ``ncpanels.HEADLINE`` metric (a box saying why when left out); a run
    with one NC pass gets a table of its NC values instead."""
    if not plan.headline:
        return
    page.heading("Neural collapse at a glance")
    if plan.passes < 2:
        _nc_table(page, runs, plan)
        return
    if len(runs) > 1:
        keys = "".join(f'<span class=key><span style="color:{c}">━━</span> {html.escape(r.label)}</span>'
                       for r, c in zip(runs, plots.run_colors(runs)))
        page.add(f"<p class=keys>{keys}</p>")
    page.row(len(plan.headline), "headline")
    for key in plan.headline:
        name = key.partition("/")[2]
        title = panel_title(ncpanels.HEADLINE[name], key)
        if key in plan.skipped:
            page.add(f"<figure>{title}<div class=flat>not drawn: {html.escape(plan.skipped[key])}</div></figure>")
        else:
            page.figure(f"headline_{name}", plots.metric_panel(runs, key), title=title)
    page.end_row()


def _nc_table(page: _Page, runs: list[Run], plan: _NCPlan) -> None:
    """The NC values of a run with one NC pass: the headline metrics, every other one under a ``<details>``."""
    header = ["metric", "key"] + [f"{r.label}: {what}" if len(runs) > 1 else what for r in runs
                                  for what in ("training", "test")]

    def table(keys):
        rows = []
        for key in keys:
            row = [ncpanels.title(key.partition("/")[2]), key]
            for run in runs:
                row += [_fmt(_last_value(run, k)[0]) for k in (key, plots.test_key(key))]
            rows.append(row)
        return html_table(header, rows, numeric_from=2)

    epochs = sorted({_last_value(r, "nc/nc1")[1] for r in runs} - {None})
    page.add(f"<p class=sub>One NC pass (epoch {', '.join(map(str, epochs))}): curves need at least two, so the "
             "values are listed instead.</p>")
    page.add(table(plan.headline))
    rest = [k for members in plan.groups.values() for k in members]
    if rest:
        page.add(f"<details><summary>All other NC metrics: {len(rest)} values</summary>{table(rest)}</details>")


def _nc_details(page: _Page, runs: list[Run], plan: _NCPlan) -> None:
    """Every other NC panel, one figure per group (NC1–NC4, other), folded under a ``<details>``."""
    if plan.passes < 2 or not plan.groups:
        return
    count = sum(len(m) for m in plan.groups.values())
    page.add(f"<details><summary>All other NC metrics: {count} panels in {len(plan.groups)} groups</summary>")
    for group, members in plan.groups.items():
        heading, about = ncpanels.GROUPS[group]
        page.heading(f"{group} · {heading}", level=3)
        page.add(f"<p class=sub>{html.escape(about)}.</p>")
        page.figure(f"nc_{group.lower()}", plots.metric_grid(runs, members))
    page.add("</details>")


def write_report(run_dir, out=None, extra_sections=None, outputs: Outputs | None = None) -> Path:
    """Write the report of one run to ``out`` (default ``run_dir/report.html``), PNGs in ``<stem>_files/``; returns
    the path.

    ``extra_sections``: (title, content) pairs appended after the figures; content is a matplotlib Figure,
    a PNG path or an HTML fragment (inserted as given).
    """
    return render_report(run_dir, out, extra_sections, outputs)[0]


def write_comparison(run_dirs, out, labels=None, extra_sections=None, outputs: Outputs | None = None) -> Path:
    """Write one HTML page overlaying several runs (accuracy, NC curves, per-group and per-class accuracy);
    ``labels`` names the runs (default: directory names); returns the path."""
    return render_comparison(run_dirs, out, labels, extra_sections, outputs)[0]


def render_report(run_dir, out=None, extra_sections=None, outputs: Outputs | None = None) -> tuple[Path, list[Path]]:
    """``write_report`` returning (HTML path, PNG paths); ``outputs`` (``io_safe.Outputs``) is the command's writer
    (default: one that refuses to replace files ncollapse did not write, or the run's own files)."""
    extra = _check_extra(extra_sections)
    run = load_run(run_dir)
    out = Path(out) if out is not None else run.path / "report.html"
    page = _Page(out, outputs, inputs=[run.path])
    for note in run.notes:
        page.note(note)
    page.heading("Summary")
    page.add(html_table(["quantity", "value"], _summary_rows(run), numeric_from=1))
    plan = _nc_plan(page, [run])
    _nc_headline(page, [run], plan)
    page.heading("Accuracy and training loss")
    page.figure("accuracy", plots.accuracy_figure([run]))
    if run.series("train_loss")[0].size:
        page.figure("train_loss", plots.loss_figure([run]))
    if isinstance(run.last.get("test_acc_per_class"), list) and run.last["test_acc_per_class"]:
        counts, groups = run.class_counts(), run.groups()
        if counts is not None and len(counts) != len(run.last["test_acc_per_class"]):
            page.note(f"run.json lists {len(counts)} class counts but test_acc_per_class has "
                      f"{len(run.last['test_acc_per_class'])} entries: classes drawn unsorted")
            counts, groups = None, None
        page.heading("Per-class test accuracy")
        page.figure("per_class", plots.per_class_figure([run], counts, groups),
                    "shading: head / medium / tail groups by training size")
    else:
        page.note("no test_acc_per_class in the last metrics line: per-class figure left out")
    _nc_details(page, [run], plan)
    _state_sections(page, [run], tagged=False)
    _extra(page, extra)
    page.heading("Resolved configuration (config.toml)")
    page.add(f"<pre>{html.escape(run.config_text)}</pre>" if run.config_text else "<p>config.toml not found.</p>")
    page.heading("Run and environment (run.json)")
    page.add(html_table(["key", "value"], _env_rows(run.info), numeric_from=2) if run.info else "<p>run.json not found.</p>")
    return page.write(f"ncollapse report: {run.label}", _subtitle(run))


def _labels(runs: list[Run], labels) -> list[str]:
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != len(runs):
            raise ValueError(f"labels has {len(labels)} entries for {len(runs)} runs; give one label per run")
        return labels
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{r.path.parent.name}/{r.path.name}" for r in runs]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


def render_comparison(run_dirs, out, labels=None, extra_sections=None,
                      outputs: Outputs | None = None) -> tuple[Path, list[Path]]:
    """``write_comparison`` returning (HTML path, PNG paths); ``outputs`` as in ``render_report``."""
    extra = _check_extra(extra_sections)
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, PathLike)) else list(run_dirs)
    if not run_dirs:
        raise ValueError("write_comparison needs at least one run directory")
    loaded = [load_run(d) for d in run_dirs]
    runs = [replace(r, name=lab) for r, lab in zip(loaded, _labels(loaded, labels))]
    page = _Page(Path(out), outputs, inputs=[r.path for r in runs])
    for run in runs:
        for note in run.notes:
            page.note(f"{run.label}: {note}")
    page.heading("Summary")
    rows = []
    for run in runs:
        best, best_epoch = _best(run)
        nc1, _ = _last_value(run, "nc/nc1")
        rows.append([run.label, run.info.get("loss", "—"), run.info.get("head", "—"), run.last["epoch"],
                     _fmt(run.last.get("test_acc"), True), f"{_fmt(best, True)} (epoch {best_epoch})"]
                    + [_fmt(run.last.get(f"test_acc_{g}"), True) for g in GROUPS] + [_fmt(nc1)])
    page.add(html_table(["run", "loss", "head", "last epoch", "final test acc", "best test acc", "final head",
                     "final medium", "final tail", "last nc1"], rows, numeric_from=3))
    plan = _nc_plan(page, runs)
    _nc_headline(page, runs, plan)
    page.heading("Accuracy and training loss")
    has_loss = any(r.series("train_loss")[0].size for r in runs)
    page.row(2 if has_loss else 1)
    page.figure("accuracy", plots.accuracy_figure(runs))
    if has_loss:
        page.figure("train_loss", plots.loss_figure(runs))
    page.end_row()
    page.heading("Accuracy by class group")
    page.figure("groups", plots.group_bars_figure(runs), "head / medium / tail: classes by training size")
    _per_class_overlay(page, runs)
    _nc_details(page, runs, plan)
    _state_sections(page, runs, tagged=True)
    _extra(page, extra)
    page.heading("Configurations")
    for run in runs:
        text = html.escape(run.config_text) if run.config_text else "config.toml not found"
        page.add(f"<details><summary>{html.escape(run.label)}: {html.escape(str(run.path))}</summary><pre>{text}</pre></details>")
    return page.write(f"ncollapse comparison of {len(runs)} runs", " · ".join(r.label for r in runs))


def _per_class_overlay(page: _Page, runs: list[Run]) -> None:
    """Per-class overlay only when every run has per-class accuracy over the same number of classes."""
    sizes = [len(r.last["test_acc_per_class"]) if isinstance(r.last.get("test_acc_per_class"), list) else None
             for r in runs]
    if None in sizes:
        missing = [r.label for r, s in zip(runs, sizes) if s is None]
        page.note(f"no test_acc_per_class for {', '.join(missing)}: per-class overlay left out")
        return
    if len(set(sizes)) > 1:
        listing = ", ".join(f"{r.label}: {s}" for r, s in zip(runs, sizes))
        page.note(f"runs have different class counts ({listing}): per-class overlay left out; "
                  "accuracy, group and NC curves are still compared")
        return
    counts = runs[0].class_counts()
    if counts is not None and len(counts) != sizes[0]:
        counts = None
    if counts is not None and any(r.class_counts() not in (None, counts) for r in runs[1:]):
        page.note(f"runs have different training class sizes: classes sorted by {runs[0].label}'s sizes")
    page.heading("Per-class test accuracy")
    page.figure("per_class", plots.per_class_figure(runs, counts, runs[0].groups() if counts else None),
                f"sorted and shaded by {runs[0].label}'s training class sizes")
