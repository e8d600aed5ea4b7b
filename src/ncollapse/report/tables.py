"""Result tables in the layout of NCMC's Tables 1–7 (Yan et al. 2024) and of the CPU benchmark, from run directories.

A run directory (docs/training.md) gives its attributes through ``config.toml`` (and ``run.json``): data set,
imbalance τ, model, method, mixup on/off, f, θ and seed (``run_attributes``). A ``Layout`` is a grid of rows and
columns, each a set of required attribute values; the runs matching a cell are its seeds. A cell shows
mean ± std over seeds (std with ddof 1, as "± over 3 runs" in the paper; a single seed shows the mean only), the
best mean of each column in bold and the second underlined (within a row group such as one backbone; ties share
the mark), a cell without runs "–" (with a
warning), and the rows and columns the paper copied from other papers or that ncollapse cannot run as a marker
with a footnote. Accuracies come from ``summary.json`` (``best``: best test accuracy over epochs, as the SETF /
LDAM-DRW code bases report; ``final``: last epoch; ``head``/``medium``/``tail``: last-epoch group accuracies) and
are shown in %; ``collapse``/``variability`` are the last NCMC metrics of ``metrics.jsonl`` (lower is better).

Method labels (``method_label``): CE, SETF, AL, CAL, Loss P, LDAM-DRW (LDAM without DRW: LDAM), BS, LA, MSE,
SupCon; a post-hoc logit adjustment at evaluation appends "+PLA".
"""

from __future__ import annotations

import json
import math
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..resources import JSON_FILE_LIMIT, SIDE_FILE_LIMIT, check_input_file, read_capped
from .runs import parse_metrics

__all__ = ["Layout", "Row", "Column", "Cell", "Table", "TableRun", "cell_text", "LAYOUTS", "METRICS",
           "run_attributes", "method_label", "load_runs", "build_table", "render", "render_markdown", "render_latex",
           "compare_methods"]

MISSING = "–"
METRICS = {  # name: (source, key, percent, higher is better)
    "best": ("summary", "best_test_acc", True, True),
    "final": ("summary", "final_test_acc", True, True),
    "head": ("summary", "test_acc_head", True, True),
    "medium": ("summary", "test_acc_medium", True, True),
    "tail": ("summary", "test_acc_tail", True, True),
    "collapse": ("metrics", "ncmc/collapse_mean", False, False),
    "variability": ("metrics", "ncmc/variability", False, False),
}
_DATASETS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN", "stl10": "STL-10", "mnist": "MNIST",
             "fashion-mnist": "Fashion-MNIST"}
_FLOAT_KEYS = ("tau", "theta", "lr", "weight_decay", "penalty")


# ------------------------------------------------------------------------------------------ run attributes

def method_label(cfg: dict) -> str:
    """The paper's name of the method a resolved config trains (module docstring)."""
    model, loss = cfg.get("model", {}), cfg.get("loss", {})
    name, head = loss.get("name", "ce"), model.get("head", "linear")
    if name == "ncmc_cosine":
        label = "CAL" if model.get("centers", "uniform") == "class_aware" else "AL"
    elif name == "ncmc_p":
        label = "Loss P"
    elif name == "dot_regression" and head == "etf":
        label = "SETF"
    elif name == "ldam":
        drw = loss.get("options", {}).get("drw_epoch", 160)
        label = "LDAM-DRW" if drw is not None and drw < cfg.get("train", {}).get("epochs", 200) else "LDAM"
    else:
        label = {"ce": "CE", "balanced_softmax": "BS", "logit_adjusted": "LA", "mse": "MSE", "supcon": "SupCon",
                 "dot_regression": "DR"}.get(name, name)
    if cfg.get("eval", {}).get("logit_adjust_tau", 0) > 0:
        label += "+PLA"
    return label


def run_attributes(cfg: dict, info: dict | None = None) -> dict:
    """Attributes of a run from its resolved config (``Config.to_dict()`` or config.toml) and run.json."""
    data, model, train = cfg.get("data", {}), cfg.get("model", {}), cfg.get("train", {})
    loss, optim = cfg.get("loss", {}), cfg.get("optim", {})
    multicenter = model.get("head") == "multicenter"
    seed = (info or {}).get("seed", train.get("seed", 0))
    penalty = (loss.get("options", {}).get("feature_penalty", 5e-4)  # NCMCLossP's default λ_H
               if loss.get("name") == "ncmc_p" else None)
    return {"dataset": data.get("name"), "tau": float(data.get("imbalance", 1.0)), "model": model.get("name"),
            "method": method_label(cfg), "mixup": float(train.get("mixup_alpha", 0.0)) > 0,
            "f": model.get("f") if multicenter else None, "theta": model.get("theta") if multicenter else None,
            "seed": seed, "epochs": train.get("epochs"), "lr": optim.get("lr"),
            "weight_decay": optim.get("weight_decay"), "penalty": penalty}


@dataclass
class TableRun:
    path: Path
    attrs: dict
    summary: dict
    last: dict = field(default_factory=dict)  # latest value of every metrics.jsonl key

    def value(self, metric: str) -> float | None:
        """The metric as a float; None when the run does not have it, NaN when it is null or NaN (a warning)."""
        source, key, _, _ = METRICS[metric]
        values = self.summary if source == "summary" else self.last
        if key not in values:
            return None
        v = values[key]
        if v is None or math.isnan(v):
            where = self.path / ("summary.json" if source == "summary" else "metrics.jsonl")
            warnings.warn(f"{where}: {key} is {'null' if v is None else 'NaN'}; its cell shows NaN", stacklevel=3)
            return math.nan
        return float(v)


def _run_dirs(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"--runs {p}: no such directory")
        out += [p] if (p / "config.toml").is_file() else sorted(c.parent for c in p.rglob("config.toml"))
    return list(dict.fromkeys(out))


def _last_values(path: Path) -> dict:
    """The latest non-null value of every key of ``metrics.jsonl`` (unreadable lines skipped silently); a FIFO or
    a device there is a ``ValueError`` (an unreadable run), not a run without metrics."""
    if path.exists() or path.is_symlink():
        check_input_file(path, "")
    try:
        records, _ = parse_metrics(path)
    except ValueError:  # missing file or no usable line
        return {}
    last = {}
    for record in records:
        last.update({k: v for k, v in record.items() if v is not None})
    return last


def load_runs(paths) -> list[TableRun]:
    """Every run directory under ``paths`` (a run directory or a folder of them); an unreadable or unfinished run
    (no summary.json) is skipped with a warning."""
    runs = []
    for d in _run_dirs(paths):
        try:
            cfg = tomllib.loads(read_capped(d / "config.toml", SIDE_FILE_LIMIT, "").decode("utf-8"))
            info = _json_object(d / "run.json") if (d / "run.json").exists() else {}
            summary = _json_object(d / "summary.json")
            last = _last_values(d / "metrics.jsonl")
            _check_values(d / "summary.json", summary, "summary")
            _check_values(d / "metrics.jsonl", last, "metrics")
            attrs = run_attributes(cfg, info)
            if isinstance(attrs["seed"], bool) or not isinstance(attrs["seed"], (int, str)):
                raise ValueError(f"{d / 'run.json'}: seed {attrs['seed']!r:.40} is not an integer")
        except FileNotFoundError:
            warnings.warn(f"{d}: no summary.json (unfinished run); skipped", stacklevel=2)
            continue
        except (OSError, ValueError, TypeError, AttributeError, tomllib.TOMLDecodeError) as exc:
            warnings.warn(f"{d}: unreadable run ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                          "skipped", stacklevel=2)
            continue
        runs.append(TableRun(d, attrs, summary, last))
    return runs


def _json_object(path: Path) -> dict:
    """A JSON file (a regular file of at most ``JSON_FILE_LIMIT`` bytes) that must hold one object; anything else
    is a ``ValueError`` naming the file."""
    raw = read_capped(path, JSON_FILE_LIMIT, "")
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def _check_values(path: Path, values: dict, source: str) -> None:
    """The table's metrics in ``values`` are numbers or null; anything else is a ``ValueError`` naming the file."""
    for src, key, _, _ in METRICS.values():
        v = values.get(key)
        if src == source and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"{path}: {key} is {v!r:.40}, not a number")


# ------------------------------------------------------------------------------------------ layouts

@dataclass(frozen=True)
class Row:
    label: str
    match: dict = field(default_factory=dict)
    group: str = ""
    note: str = ""  #: non-empty: a marker row (reported, not reproduced / not implemented), no runs expected


@dataclass(frozen=True)
class Column:
    label: str
    match: dict = field(default_factory=dict)
    group: str = ""
    note: str = ""


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    row_header: str = "Method"


def _matches(attrs: dict, want: dict) -> bool:
    for key, value in want.items():
        have = attrs.get(key)
        if key in _FLOAT_KEYS and value is not None and have is not None:
            if not math.isclose(float(have), float(value), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif have != value:
            return False
    return True


def _tau_cols(dataset: str, taus, **extra) -> list[Column]:
    name = _DATASETS[dataset]
    return [Column(f"{name} balanced" if t == 1 else f"{name} {t:g}", {"dataset": dataset, "tau": t, **extra},
                   group=name) for t in taus]


TAUS = (0.005, 0.01, 0.02)
KCL = "reported in the paper from Kang et al. (ICLR 2021), not reproduced: ncollapse has no KCL"
ARB = "reported in the paper from Xie et al. (2023), not reproduced: ncollapse has no ARBLoss"
RBL = ("not implemented: RBL's learnable rotation of the ETF classifier (Gao et al., ICML 2023) is not in "
       "ncollapse.nn; its post-hoc logit adjustment is (eval.logit_adjust_tau)")
IMAGENET = ("ImageNet-LT: no config shipped (ncollapse has no ImageNet-LT split loader; the image-folder loader "
            "holds a whole split in memory)")


def _method_rows(model: str, group: str = "", cal_f: int = 20) -> list[Row]:
    return [Row("CE", {"model": model, "method": "CE", "mixup": False}, group),
            Row("SETF", {"model": model, "method": "SETF", "mixup": True}, group),
            Row("CAL", {"model": model, "method": "CAL", "mixup": True, "f": cal_f, "theta": 0.2}, group)]


def _layouts() -> dict[str, Layout]:
    r50 = {"model": "resnet50"}
    cpu = {"model": "lenet", "mixup": False, "epochs": 30, "lr": 0.05, "weight_decay": 5e-4}  # ncmc_cpu.py's budget
    t1_rows = []
    for method, extra in (("CE", {}), ("SETF", {}), ("CAL", {"f": 20, "theta": 0.2})):
        for mix in (False, True):
            t1_rows.append(Row(f"{method} {'w/' if mix else 'w/o'} Mixup", {**r50, "method": method, "mixup": mix,
                                                                            **extra}))
    t2_cols = _tau_cols("cifar10", TAUS) + _tau_cols("cifar100", TAUS)
    t5_cols = _tau_cols("svhn", TAUS) + _tau_cols("stl10", TAUS)
    t3_cols = t2_cols + [Column("ImageNet-LT", {"dataset": "imagenet"}, "ImageNet", note=IMAGENET)]
    cal = {**r50, "method": "CAL", "mixup": True, "f": 20, "theta": 0.2}
    layouts = [
        Layout("ncmc-table1", "Table 1: mixup ablation, ResNet50, CIFAR-100 (f = 20, θ = 0.2)", tuple(t1_rows),
               tuple(_tau_cols("cifar100", TAUS + (1,)))),
        Layout("ncmc-table2", "Table 2: long-tailed CIFAR-10/100, ResNet50 and DenseNet150",
               tuple(_method_rows("resnet50", "ResNet50", 10) + _method_rows("densenet", "DenseNet150", 10)),
               tuple(t2_cols)),
        Layout("ncmc-table3", "Table 3: comparison with long-tail methods, ResNet50 (f = 20, θ = 0.2)",
               (Row("LDAM-DRW", {**r50, "method": "LDAM-DRW", "mixup": False}), Row("KCL", note=KCL),
                Row("SETF", {**r50, "method": "SETF", "mixup": True}), Row("ARBLoss", note=ARB),
                Row("CE", {**r50, "method": "CE", "mixup": False}), Row("CAL", cal)), tuple(t3_cols)),
        Layout("ncmc-table4", "Table 4: Loss P vs CAL, ResNet50, CIFAR-100 (f = 20, θ = 0.2)",
               (Row("Loss P w/o Mixup", {**r50, "method": "Loss P", "mixup": False, "f": 20, "theta": 0.2}),
                Row("Loss P w/ Mixup", {**r50, "method": "Loss P", "mixup": True, "f": 20, "theta": 0.2}),
                Row("CAL", cal)), tuple(_tau_cols("cifar100", TAUS))),
        Layout("ncmc-table5", "Table 5: long-tailed SVHN and STL-10, ResNet50 and DenseNet150",
               tuple(_method_rows("resnet50", "ResNet50", 10) + _method_rows("densenet", "DenseNet150", 10)),
               tuple(t5_cols)),
        Layout("ncmc-table6", "Table 6: CAL accuracy vs f and θ, ResNet50, CIFAR-100 τ = 0.005",
               tuple(Row(f"f = {f}", {"f": f}) for f in (5, 10, 20)),
               tuple(Column(f"θ = {label}", {**{k: v for k, v in cal.items() if k != "f"}, "dataset": "cifar100",
                                           "tau": 0.005, "theta": t})
                     for label, t in (("0", 0.0), ("0.2", 0.2), ("0.5", 0.5), ("π/4", math.pi / 4),
                                      ("π/2", math.pi / 2))), row_header="f"),
        Layout("ncmc-table7", "Table 7: CAL vs RBL, ResNet50 (f = 20, θ = 0.2)",
               (Row("RBL", note=RBL), Row("RBL + PLA", note=RBL), Row("CAL", cal)), tuple(t2_cols)),
        Layout("cpu", "CPU scale (benchmarks/ncmc_cpu.py): LeNet-5 with BatchNorm, MNIST-LT, Fashion-MNIST-LT, "
               "CIFAR-10-LT subset",
               tuple(Row(m, {**cpu, "method": m, **({"f": 20, "theta": 0.2} if m in ("Loss P", "AL", "CAL") else {}),
                             **({"penalty": 5e-4} if m == "Loss P" else {})})
                     for m in ("CE", "BS", "LDAM-DRW", "SETF", "Loss P", "AL", "CAL")),
               tuple(_tau_cols("mnist", (0.01,)) + _tau_cols("fashion-mnist", (0.01, 0.005))
                     + _tau_cols("cifar10", (0.01,)))),
        Layout("cpu-grid", "CPU scale: CAL on Fashion-MNIST-LT τ = 0.005 (LeNet-5) vs f and θ, seed 0",
               tuple(Row(f"f = {f}", {"f": f}) for f in (5, 20)),
               tuple(Column(f"θ = {label}", {**cpu, "method": "CAL", "dataset": "fashion-mnist", "tau": 0.005,
                                            "theta": t, "seed": 0})
                     for label, t in (("0", 0.0), ("0.2", 0.2), ("0.5", 0.5), ("π/2", math.pi / 2))),
               row_header="f"),
    ]
    ncmc_rows = tuple(Row(m, {**cpu, "method": m, "f": 20, "theta": 0.2}) for m in ("AL", "CAL"))
    layouts.append(Layout("cpu-ncmc", "CPU scale: NCMC metrics of AL and CAL", ncmc_rows, layouts[-2].columns))
    return {layout.name: layout for layout in layouts}


LAYOUTS = _layouts()
AUTO = "auto"
_ROW_KEYS = ("model", "method", "mixup", "f", "theta")


def _sort_key(values: tuple) -> tuple:
    return tuple((v is None, str(v) if not isinstance(v, (int, float)) else "", v if isinstance(v, (int, float))
                  and not isinstance(v, bool) else 0) for v in values)


def auto_layout(runs: list[TableRun]) -> Layout:
    """The default layout for any runs: one row per (model, method, mixup, f, θ) and one column per
    (data set, τ) found in the runs' configs; a row label names only what varies between rows."""
    if not runs:
        raise ValueError("no finished runs (with summary.json) under --runs; nothing to tabulate")
    rows = sorted(dict.fromkeys(tuple(r.attrs[k] for k in _ROW_KEYS) for r in runs), key=_sort_key)
    varies = [len({row[i] for row in rows if row[i] is not None}) > 1 for i in range(len(_ROW_KEYS))]

    def label(row: tuple) -> str:
        model, method, mixup, f, theta = row
        parts = [method]
        if varies[2]:
            parts.append("w/ Mixup" if mixup else "w/o Mixup")
        if f is not None and (varies[3] or varies[4]):
            parts.append(f"f = {f}, θ = {theta:g}")
        return " ".join(parts)

    columns = sorted(dict.fromkeys((r.attrs["dataset"], r.attrs["tau"]) for r in runs),
                     key=lambda c: (str(c[0]), -c[1]))
    return Layout(AUTO, "Runs by method and data set", tuple(
        Row(label(row), dict(zip(_ROW_KEYS, row)), group=row[0] if varies[0] else "") for row in rows), tuple(
        Column(f"{_DATASETS.get(d, d)} {'balanced' if t == 1 else f'τ = {t:g}'}", {"dataset": d, "tau": t},
               group=_DATASETS.get(d, d)) for d, t in columns))


# ------------------------------------------------------------------------------------------ building

@dataclass
class Cell:
    values: list[float]
    marker: str = ""  # footnote symbol of a marker row / column
    rank: int = 0  # 1 best, 2 second, 0 other


@dataclass
class Table:
    layout: Layout
    metric: str
    cells: list[list[Cell]]
    notes: list[tuple[str, str]]  # (symbol, text)
    missing: int

    @property
    def percent(self) -> bool:
        return METRICS[self.metric][2]


_SYMBOLS = ("†", "‡", "§", "¶")


def _cell_runs(runs, want: dict) -> list[TableRun]:
    """The runs of one cell, one per seed: of two runs with the same seed, the one whose path sorts first is kept
    (``runs`` arrive sorted by path), whatever their values, with a warning naming both."""
    chosen: dict = {}
    for run in runs:
        if _matches(run.attrs, want):
            seed = run.attrs["seed"]
            if seed in chosen:
                warnings.warn(f"{run.path}: seed {seed} already in this cell ({chosen[seed].path}); kept the run "
                              "whose path sorts first", stacklevel=3)
                continue
            chosen[seed] = run
    return [chosen[s] for s in sorted(chosen, key=str)]


def build_table(layout, runs: list[TableRun], metric: str = "best") -> Table:
    """Fill ``layout`` (a ``Layout``, ``"auto"`` for ``auto_layout(runs)`` or a name in ``LAYOUTS``) from ``runs``;
    missing cells warn, and a table without a single filled cell raises. Duplicates are resolved before any cell
    is filled: runs are taken in path order and a cell keeps one run per seed (``_cell_runs``); a null or NaN
    metric stays in its cell as NaN, with a warning, so no seed is dropped silently."""
    runs = sorted(runs, key=lambda r: str(r.path))
    if layout == AUTO:
        layout = auto_layout(runs)
    elif isinstance(layout, str):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {AUTO}, {', '.join(LAYOUTS)}")
        layout = LAYOUTS[layout]
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    notes: dict[str, str] = {}

    def symbol(note: str) -> str:
        if note not in notes:
            notes[note] = _SYMBOLS[len(notes) % len(_SYMBOLS)] * (1 + len(notes) // len(_SYMBOLS))
        return notes[note]

    for note in [r.note for r in layout.rows] + [c.note for c in layout.columns]:
        if note:
            symbol(note)  # row markers first, then column markers, in layout order
    cells, used, missing = [], set(), []
    for row in layout.rows:
        line = []
        for col in layout.columns:
            if row.note or col.note:
                line.append(Cell([], marker=symbol(row.note or col.note)))
                continue
            chosen = _cell_runs(runs, {**col.match, **row.match})
            used.update(id(r) for r in chosen)
            values = [v for v in (r.value(metric) for r in chosen) if v is not None]  # None: no such metric
            if not values:
                missing.append(f"{f'{row.group} ' if row.group else ''}{row.label} / {col.label}")
            line.append(Cell(values))
        cells.append(line)
    higher = METRICS[metric][3]
    percent = METRICS[metric][2]
    for j in range(len(layout.columns)):
        for group in dict.fromkeys(r.group for r in layout.rows):  # rows of one group (e.g. a backbone) compete
            members = [i for i, r in enumerate(layout.rows) if r.group == group and cells[i][j].values
                       and not math.isnan(_mean(cells[i][j].values))]
            means = sorted({_rounded(_mean(cells[i][j].values), percent) for i in members}, reverse=higher)
            for i in members:
                m = _rounded(_mean(cells[i][j].values), percent)
                cells[i][j].rank = 1 if m == means[0] else (2 if len(means) > 1 and m == means[1] else 0)
    if not any(cell.values for line in cells for cell in line):
        raise ValueError(f"{layout.name}: none of the {len(runs)} run(s) found fills a cell (or has the metric "
                         f"{metric!r}); check --runs, or use --layout {AUTO} for a table of whatever runs there are")
    if missing:
        warnings.warn(f"{layout.name}: {len(missing)} cell(s) without runs shown as '{MISSING}': "
                      f"{', '.join(missing[:6])}{' …' if len(missing) > 6 else ''}", stacklevel=2)
    unused = [r.path.name for r in runs if id(r) not in used]
    if unused:
        warnings.warn(f"{layout.name}: {len(unused)} run(s) match no cell: {', '.join(unused[:6])}"
                      f"{' …' if len(unused) > 6 else ''}", stacklevel=2)
    return Table(layout, metric, cells, [(s, n) for n, s in notes.items()], len(missing))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    m = _mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _rounded(value: float, percent: bool) -> float:
    return round(100 * value, 1) if percent else float(f"{value:.3g}")


def _fmt(value: float, percent: bool) -> str:
    if math.isnan(value):
        return "NaN"
    return f"{100 * value:.1f}" if percent else f"{value:.3g}"


def cell_text(cell: Cell, percent: bool) -> str:
    """Plain text of a cell: "80.6 ± 0.5" (percent, std over seeds), "80.6" (one seed), "–" or a marker."""
    if cell.marker:
        return cell.marker
    if not cell.values:
        return MISSING
    text = _fmt(_mean(cell.values), percent)
    return text if len(cell.values) == 1 else f"{text} ± {_fmt(_std(cell.values), percent)}"


# ------------------------------------------------------------------------------------------ rendering

def _metric_caption(table: Table) -> str:
    what = {"best": "best test accuracy over epochs (%)", "final": "last-epoch test accuracy (%)",
            "head": "last-epoch head-class accuracy (%)", "medium": "last-epoch medium-class accuracy (%)",
            "tail": "last-epoch tail-class accuracy (%)", "collapse": "NCMC collapse mean (lower is tighter)",
            "variability": "NCMC variability"}[table.metric]
    mark = "lowest" if not METRICS[table.metric][3] else "best"
    return f"{what}; mean ± std over seeds; {mark} per column in bold, second underlined; {MISSING} = no runs"


def _row_label(table: Table, i: int) -> str:
    row = table.layout.rows[i]
    symbol = next((s for s, n in table.notes if n == row.note), "") if row.note else ""
    label = f"{row.group} {row.label}" if row.group else row.label
    return f"{label}{symbol}"


def render_markdown(table: Table) -> str:
    cols = table.layout.columns
    lines = [f"**{table.layout.title}** — {_metric_caption(table)}", "",
             "| " + " | ".join([table.layout.row_header] + [c.label for c in cols]) + " |",
             "|" + "---|" * (len(cols) + 1)]
    for i, row in enumerate(table.cells):
        texts = []
        for cell in row:
            text = cell_text(cell, table.percent)
            texts.append(f"**{text}**" if cell.rank == 1 else (f"<u>{text}</u>" if cell.rank == 2 else text))
        lines.append("| " + " | ".join([_row_label(table, i)] + texts) + " |")
    lines += [""] + [f"{s} {n}" for s, n in table.notes] + ([""] if table.notes else [])
    return "\n".join(lines)


_LATEX_SYMBOLS = {"†": r"$^\dagger$", "‡": r"$^\ddagger$", "§": r"\S", "¶": r"\P", "–": "--", "±": r"$\pm$",
                  "θ": r"$\theta$", "π": r"$\pi$", "τ": r"$\tau$", "—": "---", "&": r"\&", "%": r"\%", "_": r"\_"}


def _tex(text: str) -> str:
    return "".join(_LATEX_SYMBOLS.get(ch, ch) for ch in text)


def render_latex(table: Table) -> str:
    layout, cols = table.layout, table.layout.columns
    groups = []
    for c in cols:
        if groups and groups[-1][0] == c.group:
            groups[-1][1] += 1
        else:
            groups.append([c.group, 1])
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(layout.title)}; {_tex(_metric_caption(table))}}}",
             r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule"]
    if any(g for g, _ in groups) and len(groups) < len(cols):
        lines.append(" & ".join([""] + [rf"\multicolumn{{{n}}}{{c}}{{{_tex(g)}}}" for g, n in groups]) + r" \\")
        short = [c.label[len(c.group):].strip() if c.group and c.label.startswith(c.group) else c.label for c in cols]
    else:
        short = [c.label for c in cols]
    lines.append(" & ".join([_tex(layout.row_header)] + [_tex(s) for s in short]) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(table.cells):
        texts = []
        for cell in row:
            text = _tex(cell_text(cell, table.percent))
            texts.append(rf"\textbf{{{text}}}" if cell.rank == 1 else
                         (rf"\underline{{{text}}}" if cell.rank == 2 else text))
        lines.append(" & ".join([_tex(_row_label(table, i))] + texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\footnotesize {_tex(s)} {_tex(n)}" for s, n in table.notes]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render(table: Table, fmt: str = "markdown") -> str:
    """``fmt`` = "markdown", "latex" or "both" (Markdown, a blank line, then LaTeX)."""
    if fmt == "markdown":
        return render_markdown(table)
    if fmt == "latex":
        return render_latex(table)
    if fmt == "both":
        return render_markdown(table) + "\n" + render_latex(table)
    raise ValueError(f"format == {fmt!r}, must be 'markdown', 'latex' or 'both'")


def compare_methods(runs: list[TableRun], a: str, b: str, metric: str, layout: str = "cpu") -> str:
    """"A − B" of the mean ``metric`` per column of ``layout`` in percentage points ("MNIST 0.005: +3.1 pp; …")."""
    lay = LAYOUTS[layout]
    rows = {r.label: r for r in lay.rows}
    parts = []
    for col in lay.columns:
        means = []
        for label in (a, b):
            values = [v for v in (r.value(metric) for r in _cell_runs(runs, {**col.match, **rows[label].match}))
                      if v is not None]
            means.append(_mean(values) if values else None)
        diff = "n/a" if None in means else f"{100 * (means[0] - means[1]):+.1f} pp"
        parts.append(f"{col.label}: {diff}")
    return "; ".join(parts)
