"""One self-contained HTML report per run, or one comparing runs: PNG figures embedded as base64 data URIs,
inline CSS, no script and no network. Every figure is also written as a PNG into one folder named after the
page, ``<html stem>_files/<figure>.png``, as one set through ``io_safe.Outputs`` (a temp folder renamed into
place; the previous set goes as a whole), so two reports never mix their figures and no stale PNG stays behind.

Missing parts degrade to a note at the top of the page (and a ``warnings.warn``), never to a crash:
no ``nc_state.pt`` → no Gram heatmaps; runs with different class counts → no per-class overlay. NC curves are
grouped under NC1–NC4 and "other" (``ncpanels``), training features solid and test features dashed; panels that
carry no information (no finite value, numerically zero, constant, a std over ≤ 2 classes) are left out with a note.
"""

from __future__ import annotations

import base64
import html
import math
import os
import warnings
import zlib
from dataclasses import replace
from os import PathLike
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io_safe import Outputs
from ..metrics import GROUPS, measure
from . import ncpanels, plots
from .figures import png_bytes
from .runs import Run, load_run

__all__ = ["write_report", "write_comparison", "render_report", "render_comparison", "html_table"]

MAX_SPECTRA = 8
CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.8em}
.sub{color:#555;margin-top:0}table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:3px 9px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}.notes{background:#fff8e1;border:1px solid #f0d98c;padding:6px 14px}
img{max-width:100%;height:auto}figure{margin:.6em 0}figcaption{color:#555;font-size:.88em}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:8px;overflow-x:auto;font-size:.85em}
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


class _Page:
    """Collects HTML parts and figures; figures go to disk as PNG and into the page as data URIs."""

    def __init__(self, out: Path, outputs: Outputs | None, inputs=()):
        self.out = out
        self.folder = out.parent / _set_name(out)
        self.outputs = outputs if outputs is not None else Outputs(inputs=inputs)
        self.owned = outputs is None
        self.outputs.claim(out, "report")  # checked and locked before anything is drawn
        self.outputs.claim(self.folder, "report figures/")
        self.parts: list[str] = []
        self.notes: list[str] = []
        self.pngs: dict[str, bytes] = {}

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def heading(self, title: str) -> None:
        self.add(f"<h2>{html.escape(title)}</h2>")

    def note(self, text: str) -> None:
        self.notes.append(text)
        warnings.warn(text, stacklevel=3)

    def image(self, name: str, png: bytes, caption: str = "") -> None:
        self.pngs[f"{name}.png"] = png
        data = base64.b64encode(png).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.add(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">{cap}</figure>')

    def figure(self, name: str, fig, caption: str = "") -> None:
        self.image(name, png_bytes(fig), caption)

    def write(self, title: str, subtitle: str) -> tuple[Path, list[Path]]:
        notes = ""
        if self.notes:
            items = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
            notes = f'<div class="notes"><b>Notes</b><ul>{items}</ul></div>'
        doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
               f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
               f"<h1>{html.escape(title)}</h1><p class=sub>{html.escape(subtitle)}</p>\n{notes}\n"
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
            rows.append([f"{key} (last NC pass, epoch {epoch})", _fmt(value)])
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


def _state_section(page: _Page, run: Run, tag: str = "") -> None:
    """Gram heatmaps, (when the metrics lack it) the Σ_B spectrum from nc_state.pt, and the final test confusion
    matrix; ``tag`` names the run in headings and files on a comparison page."""
    spectra = _spectra(run)
    state = run.nc_state
    who, suffix = (f" ({tag})", f"_{_slug(tag)}") if tag else ("", "")
    if state is not None:
        stats, weight = state["stats"], state["weight"]
        final = stats.finalize()
        present = final.counts > 0
        if int(present.sum()) >= 2:
            page.heading(f"Gram matrices of normalised class means and classifier{who}")
            w = None if weight is None else weight[present]
            page.figure(f"gram{suffix}", plots.gram_figure(final.means[present], w, state["epoch"]),
                        f"from nc_state.pt (epoch {state['epoch']}): K = {int(present.sum())} classes with samples, "
                        f"d = {stats.dim}, N = {final.num_samples} training samples")
            if not spectra:
                spectra = [(state["epoch"], np.asarray(measure(final)["sigma_b_spectrum"]))]
        else:
            page.note(f"{tag + ': ' if tag else ''}nc_state.pt has fewer than two classes with samples: "
                      "Gram heatmaps left out")
    if spectra:
        page.heading(f"Σ_B spectrum{who}")
        page.figure(f"sigma_b_spectrum{suffix}", plots.spectrum_figure(spectra),
                    "eigenvalues of the between-class covariance; NC drives them to K−1 equal values")
    confusion = None if state is None else state.get("test_confusion")
    if confusion is not None:
        counts = run.class_counts()
        order = plots.sorted_by_size(counts) if counts and len(counts) == len(confusion) else list(range(len(confusion)))
        page.heading(f"Test confusion matrix{who}")
        page.figure(f"confusion{suffix}", plots.confusion_figure(confusion.numpy(), run.info.get("class_names"), order,
                                                                state["epoch"]),
                    "rows: true class, sorted by decreasing training size; each row sums to 1")
    elif state is not None:
        page.note(f"{tag + ': ' if tag else ''}nc_state.pt has no test confusion counts (written by the trainer at "
                  "the final epoch): confusion matrix left out")


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


def _nc_sections(page: _Page, runs: list[Run]) -> None:
    """NC curves grouped under NC1–NC4 and other (NCMC metrics under other), one figure per group."""
    keys = {}
    for prefix in ("nc/", "ncmc/"):
        found = {}
        for run in runs:
            found.update(dict.fromkeys(run.scalar_keys(prefix)))
        keys[prefix] = plots.ordered_nc_keys(list(found), prefix)
    if not keys["nc/"]:
        page.note("no nc/ metrics in metrics.jsonl: NC curves left out")
    dropped: dict[str, list[str]] = {}
    groups: dict[str, list[tuple[str, str]]] = {}
    for prefix, found in keys.items():
        skip = ncpanels.uninformative(runs, found, prefix)
        for key, why in skip.items():
            dropped.setdefault(why, []).append(key)
        shown = [k for k in found if k not in skip]
        for group, members in ncpanels.grouped(shown, prefix).items():
            groups.setdefault("other" if prefix == "ncmc/" else group, []).extend((prefix, k) for k in members)
    for group in ncpanels.GROUPS:
        if group not in groups:
            continue
        members = groups[group]
        page.heading(f"{group}: {ncpanels.GROUPS[group].split(':')[0]}")
        page.add(f"<p class=sub>{html.escape(ncpanels.GROUPS[group])}.</p>")
        prefix = members[0][0] if len({p for p, _ in members}) == 1 else ""
        title = f"{group} vs epoch: solid = training features, dashed = test features"
        page.figure(f"nc_{group.lower()}", plots.metric_grid(runs, [k for _, k in members], prefix, title))
    for why, members in dropped.items():
        page.note(f"panels left out ({why}): {', '.join(members)}")


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
                    "shading: head / medium / tail groups by training size; black line: training samples per class")
    else:
        page.note("no test_acc_per_class in the last metrics line: per-class figure left out")
    _nc_sections(page, [run])
    _state_section(page, run)
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
    page.heading("Accuracy and training loss")
    page.figure("accuracy", plots.accuracy_figure(runs), "dashed: train, solid: test")
    if any(r.series("train_loss")[0].size for r in runs):
        page.figure("train_loss", plots.loss_figure(runs))
    page.heading("Test accuracy by group")
    page.figure("groups", plots.group_bars_figure(runs))
    _per_class_overlay(page, runs)
    _nc_sections(page, runs)
    for run in runs:
        _state_section(page, run, tag=run.label)
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
