"""Paired differences between methods over seeds, with Student-t intervals (``ncollapse compare``).

Runs of two methods in one setting with the same seed share their data subset and, where the architectures
agree, their initialisation, so the per-seed difference d_s = a_s − b_s removes what the seed does to both. Its
mean over the n seeds both methods have, d̄, gets the Student-t interval d̄ ± t_{(1+level)/2, n−1} · s_d / √n
(s_d: sample std of the d_s, ddof 1). An interval that excludes 0 is *resolved* (▲ above 0, ▼ below); one
across 0 means *not resolved*, not *equal*.

Two layers:

* ``compare_values`` takes the numbers, ``{(method, setting, metric): {seed: value}}``, from any source
  (``benchmarks/ncmc_cpu.py`` builds them from its run plan);
* ``compare_runs`` reads run directories (the trainer's, or any that write the same config.toml,
  summary.json and metrics.jsonl) with ``report.tables.load_runs``: a run's method is its ``method_label`` with
  mixup, f, θ and Loss P's penalty where they vary, its setting the data set, τ, model, epochs, learning rate
  and weight decay, and its seed the config's ``train.seed`` (or run.json's ``seed``).

``render_markdown`` writes one table (rows: the methods compared against, columns: setting × metric) and
``to_json`` the same cells as plain data (NaN as null).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import NamedTuple

from ..validation import check_scalar

__all__ = ["Interval", "Comparison", "mean_std", "t_interval", "paired", "compare_values", "compare_runs",
           "interval_text", "render_markdown", "caption", "to_json", "SETTING_KEYS", "ARM_KEYS"]

SETTING_KEYS = ("dataset", "tau", "model", "epochs", "lr", "weight_decay")  # runs differ only in the method
ARM_KEYS = ("method", "mixup", "f", "theta", "penalty")  # what tells two methods of one setting apart
MISSING = "–"


class Interval(NamedTuple):
    """Mean of the paired differences and its two-sided Student-t interval over ``n`` seeds (NaN ends for n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def resolved(self) -> int:
        """+1 when the interval lies above 0, −1 below 0, 0 across 0 or not measured (n < 2)."""
        return 1 if self.n >= 2 and self.low > 0 else -1 if self.n >= 2 and self.high < 0 else 0


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof 1) of the non-NaN ``values``; NaN std for one value, NaN for none."""
    v = [float(x) for x in values if not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan


def t_interval(values, level: float = 0.95) -> Interval:
    """Student-t interval of the mean: x̄ ± t_{(1+level)/2, n−1} · s / √n (Student 1908, "The probable error of a
    mean", Biometrika 6; s with ddof 1). NaN values are dropped; fewer than 2 left gives NaN ends."""
    check_scalar(level, "level", Real, low=0.0, high=1.0, low_open=True, high_open=True)
    from scipy import stats  # deliberately lazy: scipy.stats is a heavy import

    v = [float(x) for x in values if not math.isnan(x)]
    m, sd = mean_std(v)
    if len(v) < 2:
        return Interval(m, math.nan, math.nan, len(v))
    half = stats.t.ppf((1 + level) / 2, len(v) - 1) * sd / math.sqrt(len(v))
    return Interval(m, m - half, m + half, len(v))


def paired(a: Mapping, b: Mapping, level: float = 0.95) -> Interval:
    """The paired difference a − b over the seeds (keys) both have and neither holds NaN for: the Student-t
    interval of d_s = a_s − b_s (the paired t interval: Student 1908, applied to the per-seed differences)."""
    return t_interval([a[s] - b[s] for s in _sorted(set(a) & set(b))], level)


def _sorted(seeds) -> list:
    """Seeds in order: numbers by value, then anything else by its text."""
    number = lambda s: isinstance(s, Real) and not isinstance(s, bool)  # noqa: E731
    return sorted(seeds, key=lambda s: (0, s, "") if number(s) else (1, 0, str(s)))


# ------------------------------------------------------------------------------------------ a comparison

@dataclass
class Comparison:
    """``method`` − each of ``against`` per setting and metric: ``cells[(other, setting, metric)]`` is an
    ``Interval``; ``unpaired[(other, setting)]`` = (seeds only ``method`` has, seeds only ``other`` has)."""

    method: str
    against: list[str]
    settings: list[str]
    metrics: list[str]
    level: float
    cells: dict[tuple[str, str, str], Interval]
    unpaired: dict[tuple[str, str], tuple[list, list]] = field(default_factory=dict)
    percent: dict[str, bool] = field(default_factory=dict)  # metric -> shown ×100 (accuracies); default True


def _order(keys) -> list:
    return list(dict.fromkeys(keys))


def compare_values(values: Mapping[tuple[str, str, str], Mapping], method: str, against: Sequence[str] | None = None,
                   settings: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                   level: float = 0.95) -> Comparison:
    """``method`` − each of ``against`` (default: every other method of ``values``) in every setting and metric,
    paired by seed. ``values[(method, setting, metric)]`` maps seed -> value (NaN: not measured, left out). A
    pair without ``values`` is an empty cell (n = 0); seeds that only one side has are warned about, listed."""
    check_scalar(level, "level", Real, low=0.0, high=1.0, low_open=True, high_open=True)
    methods = _order(k[0] for k in values)
    if method not in methods:
        raise ValueError(f"method {method!r} has no values; methods found: {', '.join(map(str, methods)) or 'none'}")
    against = [m for m in methods if m != method] if against is None else list(against)
    if not against:
        raise ValueError(f"nothing to compare {method!r} with: it is the only method found")
    if method in against:
        raise ValueError(f"method {method!r} is also in against; a method is compared with the others, not itself")
    settings = _order(k[1] for k in values) if settings is None else list(settings)
    metrics = _order(k[2] for k in values) if metrics is None else list(metrics)
    cells, unpaired = {}, {}
    for other in against:
        for setting in settings:
            for metric in metrics:
                a, b = values.get((method, setting, metric), {}), values.get((other, setting, metric), {})
                cells[(other, setting, metric)] = paired(a, b, level)
                if a and b and set(a) != set(b):
                    unpaired[(other, setting)] = (_sorted(set(a) - set(b)), _sorted(set(b) - set(a)))
    for (other, setting), (only_a, only_b) in unpaired.items():
        warnings.warn(f"{method} vs {other}, {setting}: unpaired seeds left out "
                      f"({method} only: {_seeds(only_a)}; {other} only: {_seeds(only_b)})", stacklevel=2)
    return Comparison(method, against, settings, metrics, level, cells, unpaired)


def _seeds(seeds: list) -> str:
    return ", ".join(map(str, seeds)) or "none"


# ------------------------------------------------------------------------------------------ rendering

def _num(x: float, sign: bool, percent: bool) -> str:
    if math.isnan(x):
        return MISSING
    if percent:
        return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"
    return f"{x:+.3g}" if sign else f"{x:.3g}"


def interval_text(d: Interval, percent: bool = True) -> str:
    """"+2.9 [+2.7, +3.1] ▲": mean [low, high] (×100 when ``percent``), ▲ / ▼ when the interval lies above /
    below 0; "+2.9 (1 seed)" for one pair, "–" for none."""
    if d.n == 0:
        return MISSING
    if d.n < 2:
        return f"{_num(d.mean, True, percent)} (1 seed)"
    mark = {1: " ▲", -1: " ▼", 0: ""}[d.resolved]
    return f"{_num(d.mean, True, percent)} [{_num(d.low, True, percent)}, {_num(d.high, True, percent)}]{mark}"


def render_markdown(c: Comparison, labels: Mapping[str, str] | None = None) -> str:
    """One Markdown table: a row per method of ``c.against``, a column per (setting, metric), header
    "<method> −"; ``labels`` renames methods and settings for display."""
    name = (lambda key: labels.get(key, key)) if labels else str
    cols = [(s, m) for s in c.settings for m in c.metrics]
    rows = [f"| {name(c.method)} − | {' | '.join(f'{name(s)} {m}' for s, m in cols)} |",
            "|---" * (len(cols) + 1) + "|"]
    for other in c.against:
        cells = [interval_text(c.cells[(other, s, m)], c.percent.get(m, True)) for s, m in cols]
        rows.append(f"| {name(other)} | {' | '.join(cells)} |")
    return "\n".join(rows) + "\n"


def caption(c: Comparison) -> str:
    """One bold line saying what ``render_markdown``'s cells are."""
    unit = "percentage points" if all(c.percent.get(m, True) for m in c.metrics) else "percentage points for accuracies"
    return (f"**{c.method} − X, paired by seed** — mean of the same-seed differences [{100 * c.level:g}% Student-t "
            f"interval, n − 1 degrees of freedom], {unit}; ▲ / ▼: the interval lies above / below 0, "
            f"{MISSING}: no pair")


def _plain(x: float) -> float | None:
    return None if math.isnan(x) else x


def to_json(c: Comparison) -> dict:
    """The comparison as JSON-ready data: one entry per cell (NaN as null; ``resolved`` +1 / −1 / 0)."""
    return {"method": c.method, "level": c.level, "metrics": c.metrics, "settings": c.settings,
            "differences": [{"against": o, "setting": s, "metric": m, "mean": _plain(d.mean), "low": _plain(d.low),
                             "high": _plain(d.high), "n": d.n, "resolved": d.resolved}
                            for (o, s, m), d in c.cells.items()],
            "unpaired": [{"against": o, "setting": s, "only_method": a, "only_against": b}
                         for (o, s), (a, b) in c.unpaired.items()]}


# ------------------------------------------------------------------------------------------ run directories

def _label(keys: Sequence[str], attrs: dict, varies: set[str]) -> str:
    parts = []
    for key in keys:
        v = attrs.get(key)
        if key == "dataset":
            from .tables import _DATASETS

            parts.append("(no data set)" if v is None else _DATASETS.get(v, str(v)))
        elif key == "method":
            parts.append(str(v))
        elif key not in varies or v is None:
            continue
        elif key == "tau":
            parts.append("balanced" if v == 1 else f"τ = {v:g}")
        elif key == "mixup":
            parts.append("w/ Mixup" if v else "w/o Mixup")
        else:
            parts.append({"theta": "θ", "penalty": "λ_H", "weight_decay": "wd"}.get(key, key)
                         + (f" = {v:g}" if isinstance(v, float) else f" = {v}"))
    return " ".join(parts[:1]) + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


def compare_runs(paths, method: str, against: Sequence[str] | None = None, metrics: Sequence[str] = ("final",),
                 level: float = 0.95) -> Comparison:
    """``method`` − each of ``against`` over the run directories under ``paths`` (module docstring: method,
    setting, seed), for ``metrics``: names of ``report.tables.METRICS`` or keys of summary.json (the
    tracker's "nc/nc1", shown unscaled). Raises ``ValueError`` when no finished run
    is found, a method is unknown, a run lacks a metric, two methods share no setting, or no seed pairs."""
    from .tables import METRICS, load_runs

    if not metrics:
        raise ValueError(f"no metric given; choose from {', '.join(METRICS)} or any key of summary.json")
    runs = load_runs(paths)
    if not runs:
        raise ValueError(f"no finished runs (a directory with config.toml and summary.json) under "
                         f"{', '.join(map(str, paths))}; nothing to compare")
    arm_varies = {m: {k for k in ARM_KEYS if len({repr(r.attrs.get(k)) for r in runs if r.attrs["method"] == m}) > 1}
                  for m in {r.attrs["method"] for r in runs}}  # f, θ, ... named only where one method has several
    arms = [_label(ARM_KEYS, r.attrs, arm_varies[r.attrs["method"]]) for r in runs]
    method, against = _resolve(method, against, sorted(set(arms)))
    chosen = [(arm, r) for arm, r in zip(arms, runs) if arm == method or arm in against]
    varies = {k for k in SETTING_KEYS if len({repr(r.attrs.get(k)) for _, r in chosen}) > 1}
    values, homes, seen = {}, {}, {}
    for arm, run in chosen:
        setting, seed = _label(SETTING_KEYS, run.attrs, varies), run.attrs["seed"]
        if (arm, setting, seed) in seen:
            warnings.warn(f"{run.path}: {arm}, {setting}, seed {seed} is already {seen[(arm, setting, seed)]}; "
                          "kept the first", stacklevel=2)
            continue
        seen[(arm, setting, seed)] = run.path
        homes.setdefault(arm, []).append(setting)
        for metric in metrics:
            values.setdefault((arm, setting, metric), {})[seed] = _metric(run, metric)
    settings = sorted(set(homes[method]))
    for other in against:
        if not set(homes[other]) & set(settings):
            raise ValueError(f"{method} and {other} share no setting ({method}: {'; '.join(settings)}; {other}: "
                             f"{'; '.join(_order(homes[other]))}): differences are only taken between runs of one "
                             f"setting ({', '.join(SETTING_KEYS)}); pass runs of the same setting")
    c = compare_values(values, method, against, settings, metrics, level)
    if not any(d.n for d in c.cells.values()):
        raise ValueError(f"no seed appears in both {method} and any of {', '.join(against)} within a setting; "
                         "paired differences need the same seeds (train.seed) on both sides")
    c.percent = {m: METRICS[m][2] if m in METRICS else False for m in metrics}
    return _short_settings(c, {_label(SETTING_KEYS, r.attrs, varies): r.attrs for arm, r in chosen if arm == method})


def _metric(run, metric: str) -> float:
    """A named metric of ``report.tables.METRICS`` (summary.json or the last value in metrics.jsonl), or else any
    key of summary.json (e.g. the tracker's "nc/nc1"); null is NaN (left out), a missing key a ``ValueError``."""
    from .tables import METRICS

    source, key = METRICS[metric][:2] if metric in METRICS else ("summary", metric)
    holder = run.summary if source == "summary" else run.last
    if key not in holder:
        where = "summary.json" if source == "summary" else "metrics.jsonl (no non-null value)"
        raise ValueError(f"{run.path} has no {key!r} in {where}, needed for metric {metric!r}; drop the run from "
                         f"--runs or choose another metric ({', '.join(METRICS)}, or any key of summary.json)")
    v = holder[key]
    if v is not None and (isinstance(v, bool) or not isinstance(v, Real)):
        raise ValueError(f"{run.path}: {key!r} is {v!r}, not a number; choose a metric with numeric values")
    return math.nan if v is None else float(v)


def _short_settings(c: Comparison, attrs: dict[str, dict]) -> Comparison:
    """``c`` with its settings named by only what varies among them (a budget other runs differ in is left out)."""
    varies = {k for k in SETTING_KEYS if len({repr(a.get(k)) for a in attrs.values()}) > 1}
    short = {s: _label(SETTING_KEYS, a, varies) for s, a in attrs.items()}
    c.settings = [short[s] for s in c.settings]
    c.cells = {(o, short[s], m): d for (o, s, m), d in c.cells.items()}
    c.unpaired = {(o, short[s]): v for (o, s), v in c.unpaired.items()}
    return c


def _typed(label: str) -> str:
    """A label as typed on a command line: spaces dropped, θ / λ_H also as theta / lambda_H."""
    return label.replace(" ", "").replace("theta", "θ").replace("lambda_H", "λ_H")


def _resolve(method: str, against: Sequence[str] | None, names: list[str]) -> tuple[str, list[str]]:
    """The run labels ``method`` and ``against`` name: a label ("CAL (f = 20, θ = 0.2)", also typed as
    "CAL (f=20, theta=0.2)"), or a bare method name ("CAL") that only one label has; ``against`` defaults to
    every other label."""

    def one(name: str) -> str:
        exact = [a for a in names if _typed(a) == _typed(name)]
        if exact:
            return exact[0]
        match = [a for a in names if a.split(" (")[0] == name]
        if len(match) > 1:
            raise ValueError(f"method {name!r} is ambiguous: pass one of {', '.join(map(repr, match))} "
                             "(quoted on the command line; theta for θ works)")
        if not match:
            raise ValueError(f"method {name!r} is not among the runs; methods found: {', '.join(names)}")
        return match[0]

    method = one(method)
    against = [a for a in names if a != method] if against is None else list(dict.fromkeys(map(one, against)))
    if method in against:
        raise ValueError(f"{method!r} is both the method and one it is compared against; drop it from --against")
    if not against:
        raise ValueError(f"nothing to compare {method} with: it is the only method among the runs")
    return method, against
