"""Training curves from DVCLive directories, rendered offline to PNG (matplotlib, Agg backend).

DVCLive writes one TSV per metric under ``<live>/plots/metrics/`` (``train/loss.tsv``, ``lr.tsv``,
``val/PCKh.tsv``, ...), each with a header ``step<TAB><name>`` (and sometimes ``timestamp``). A figure gets one panel
per group: training losses together, one panel per validation metric (a placeholder saying so when the run logged
none, as the OpenPose steps), and the learning rate.

Readability rules (docs: issue 11 "Pictures"): every panel shares the run's epoch range, so a metric logged once sits
at its epoch instead of alone on an auto axis; sparse series get markers and their values written beside the points;
bounded metrics get their natural range (PCKh-like ones 0–100, COCO AP/AR 0–1), any other flat or single-valued
series a padded range around its value; losses and learning rates spanning more than a decade are drawn on a log
scale; legends sit below their panel, outside every axes, so they never hide a curve.
"""
from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from pose.io import PoseDataError, atomic_path

if TYPE_CHECKING:  # matplotlib is imported lazily (Agg forced first) by the functions that draw
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["read_live_metrics", "render_training_curves", "training_figure", "find_live_dirs"]

METRICS_SUBDIR = Path("plots") / "metrics"
TRAIN_PANEL, LR_PANEL, NO_VAL_PANEL = "training loss", "learning rate", "validation"
NO_VAL_NOTE = "no validation metric logged"

SPARSE_POINTS = 30        # series shorter than this are drawn with markers
ANNOTATE_ALL_POINTS = 5   # single-series panels write every value up to this many points, else the last one
LOG_SPAN = 10.0           # a positive loss / lr series spanning more than this factor gets a log axis
# metric names (last path part) with a natural range, checked in order; the range applies only when every value
# lies inside it (else the padded range, so a value outside is never clipped)
BOUNDED_RANGES: tuple[tuple[re.Pattern, tuple[float, float]], ...] = (
    (re.compile(r"pck|acc|percent|pct", re.I), (0.0, 100.0)),
    (re.compile(r"^(ap|ar)(\d+|[sml])?$", re.I), (0.0, 1.0)),
)

Series = tuple[np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------------------------------ reading
def read_metric_tsv(path: str | os.PathLike) -> Series:
    """``(steps, values)`` of one DVCLive metric file (the last column that is not ``step``/``timestamp``)."""
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise PoseDataError(path, "empty metric file")
    header = rows[0]
    if "step" not in header:
        raise PoseDataError(path, f"header {header} has no 'step' column", field="step")
    value_cols = [i for i, h in enumerate(header) if h not in ("step", "timestamp")]
    if not value_cols:
        raise PoseDataError(path, f"header {header} has no value column")
    s_col, v_col = header.index("step"), value_cols[-1]
    try:
        data = np.array([[float(r[s_col]), float(r[v_col])] for r in rows[1:] if r], dtype=np.float64)
    except (ValueError, IndexError) as e:
        raise PoseDataError(path, f"unreadable row ({e})", field=header[v_col]) from None
    data = data.reshape(-1, 2)
    return data[:, 0], data[:, 1]


def read_live_metrics(live_dir: str | os.PathLike) -> dict[str, Series]:
    """Every metric of a DVCLive directory: ``{'train/loss': (steps, values), 'lr': ..., ...}`` (sorted by name)."""
    root = Path(live_dir) / METRICS_SUBDIR
    if not root.is_dir():
        raise PoseDataError(live_dir, f"no DVCLive metrics directory {METRICS_SUBDIR}")
    return {p.relative_to(root).with_suffix("").as_posix(): read_metric_tsv(p)
            for p in sorted(root.rglob("*.tsv"))}


def find_live_dirs(runs_dir: str | os.PathLike) -> dict[str, Path]:
    """``{stage: runs/<stage>/live}`` for every run directory that has DVCLive metrics."""
    root = Path(runs_dir)
    if not root.is_dir():
        return {}
    return {d.name: d / "live" for d in sorted(root.iterdir()) if (d / "live" / METRICS_SUBDIR).is_dir()}


# ------------------------------------------------------------------------------------------------------ panels
@dataclass(frozen=True)
class Panel:
    """One axes of the figure: its title and the metric names drawn in it (none for the no-validation note)."""

    title: str
    names: tuple[str, ...]

    @property
    def scalable(self) -> bool:
        """Losses and learning rates may get a log axis; validation metrics keep a linear one."""
        return self.title in (TRAIN_PANEL, LR_PANEL)


def _panels(names: Sequence[str]) -> list[Panel]:
    """Group metric names into panels: train losses, one panel per other (validation) metric, learning rate(s).

    A run without any validation metric gets a :data:`NO_VAL_PANEL` placeholder, so the picture says so."""
    train = [n for n in names if n.startswith("train/")]
    lr = [n for n in names if n.split("/")[-1].startswith("lr")]
    rest = [n for n in names if n not in train and n not in lr]
    panels = [Panel(TRAIN_PANEL, tuple(train))] if train else []
    panels += [Panel(n, (n,)) for n in rest] or [Panel(NO_VAL_PANEL, ())]
    if lr:
        panels.append(Panel(LR_PANEL, tuple(lr)))
    return panels


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def bounded_range(name: str, values: np.ndarray) -> tuple[float, float] | None:
    """The natural y range of a metric (``pckh_mean`` → 0–100, COCO ``AP`` → 0–1) when its values fit it."""
    v = _finite(values)
    short = name.split("/")[-1]
    for pattern, (lo, hi) in BOUNDED_RANGES:
        if pattern.search(short) and v.size and lo <= v.min() and v.max() <= hi:
            return lo, hi
    return None


def padded_range(values: np.ndarray, frac: float = 0.1) -> tuple[float, float] | None:
    """A y range around the finite ``values`` with a margin; a flat series (one value) gets ±10 % of it (±1 at 0),
    not matplotlib's ±0.06 % that turns 73.5 into a 73.45–73.55 axis."""
    v = _finite(values)
    if not v.size:
        return None
    lo, hi = float(v.min()), float(v.max())
    pad = frac * (hi - lo) if hi > lo else (frac * abs(hi) or 1.0)
    return lo - pad, hi + pad


def _wants_log(values: np.ndarray) -> bool:
    v = _finite(values)
    return bool(v.size) and bool(np.all(v > 0)) and v.max() > LOG_SPAN * v.min()


def _step_range(metrics: Mapping[str, Series]) -> tuple[float, float] | None:
    """The run's epoch range over every metric, padded, shared by all panels."""
    steps = _finite(np.concatenate([s for s, _ in metrics.values()])) if metrics else np.empty(0)
    if not steps.size:
        return None
    lo, hi = float(steps.min()), float(steps.max())
    pad = max(0.5, 0.03 * (hi - lo))
    return lo - pad, hi + pad


# ------------------------------------------------------------------------------------------------------ drawing
def _short_label(name: str, panel: Panel) -> str:
    """Legend label without the panel's shared prefix (``train/loss_kd`` → ``loss_kd``)."""
    return name.split("/", 1)[1] if panel.title == TRAIN_PANEL and "/" in name else name


def _draw_series(ax: "Axes", metrics: Mapping[str, Series], panel: Panel) -> None:
    for n in panel.names:
        steps, values = metrics[n]
        # the summed loss stands out: thick and black, but beneath the parts (zorder), so a part equal to it
        # (a run with a single loss term) still shows on top instead of vanishing behind it
        total = n.split("/")[-1] == "loss" and len(panel.names) > 1
        ax.plot(steps, values, marker="o" if len(steps) < SPARSE_POINTS else None, ms=4 if len(steps) < 3 else 3,
                lw=2.8 if total else 1.3, color="black" if total else None, label=_short_label(n, panel),
                zorder=1.9 if total else 2)


def _format_value(v: float) -> str:
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _annotate(ax: "Axes", steps: np.ndarray, values: np.ndarray) -> None:
    """Write the value beside the points of a single-series panel: every point of a short series, else the last;
    below the point when it sits in the top fifth of the axis (the text would leave the axes)."""
    idx = range(len(steps)) if len(steps) <= ANNOTATE_ALL_POINTS else [len(steps) - 1]
    lo, hi = ax.get_ylim()
    log = ax.get_yscale() == "log"
    for i in idx:
        s, v = float(steps[i]), float(values[i])
        if not (math.isfinite(s) and math.isfinite(v)):
            continue
        frac = ((math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log and v > 0
                else (v - lo) / (hi - lo) if hi > lo else 0.5)
        dy = -11 if frac > 0.8 else 7
        ax.annotate(_format_value(v), (s, v), xytext=(0, dy), textcoords="offset points", ha="center",
                    va="top" if dy < 0 else "bottom", fontsize=8, color="0.15")


def _set_y(ax: "Axes", metrics: Mapping[str, Series], panel: Panel) -> None:
    values = np.concatenate([metrics[n][1] for n in panel.names])
    if panel.scalable and _wants_log(values):
        _log_axis(ax, values)
        return
    bounded = bounded_range(panel.names[0], values) if len(panel.names) == 1 else None
    if bounded is not None:
        ax.set_ylim(*bounded)
        if bounded[1] == 100.0:
            ax.set_ylabel("%")
        return
    limits = padded_range(values)
    if limits is not None:
        ax.set_ylim(*limits)


def _log_tick_label(v: float, _pos: object = None) -> str:
    """Plain numbers on a log axis (``300``, not ``3 × 10²``), only at mantissas 1, 2 and 5 so minor ticks stay
    readable."""
    if v <= 0 or not math.isfinite(v):
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
    return f"{v:g}" if round(mantissa, 6) in (1.0, 2.0, 5.0) else ""


def _log_axis(ax: "Axes", values: np.ndarray) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_log_tick_label))
    v = _finite(values)
    decades = math.log10(v.max() / v.min())
    # minor labels (2, 5 × 10^k) help within a couple of decades and crowd the axis beyond
    ax.yaxis.set_minor_formatter(FuncFormatter(_log_tick_label) if decades <= 2.5 else NullFormatter())


def _legend_below(ax: "Axes", n: int) -> None:
    """Legend under the panel's x label (a fixed physical offset below the axes, so it clears the tick labels
    and the label whatever the axes height); constrained layout then reserves the room for it."""
    from matplotlib.transforms import offset_copy

    anchor = offset_copy(ax.transAxes, fig=ax.figure, y=-0.45, units="inches")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=anchor, ncol=min(3, n),
              fontsize=7, frameon=False, handlelength=1.8, columnspacing=1.2)


def _draw_no_validation(ax: "Axes") -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, f"{NO_VAL_NOTE}\n(this run logs training metrics only)", ha="center", va="center",
            transform=ax.transAxes, fontsize=9, color="0.35")


def _draw_panel(ax: "Axes", metrics: Mapping[str, Series], panel: Panel,
                xlim: tuple[float, float] | None) -> None:
    from matplotlib.ticker import MaxNLocator

    if not panel.names:
        ax.set_title(f"{panel.title} (none logged)", fontsize=10)
        _draw_no_validation(ax)
        return
    _draw_series(ax, metrics, panel)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _set_y(ax, metrics, panel)
    title = panel.title
    if len(panel.names) == 1:
        steps, values = metrics[panel.names[0]]
        if len(steps) == 1:
            title += f" (logged once, epoch {steps[0]:g})"
        if not panel.scalable:   # a learning rate's values are the schedule's, not worth the clutter
            _annotate(ax, steps, values)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    if len(panel.names) > 1:
        _legend_below(ax, len(panel.names))


def _pyplot():
    """pyplot on the Agg backend (no display on the pipeline's machines; selected before pyplot is imported)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def training_figure(metrics: Mapping[str, Series], title: str) -> "Figure":
    """The figure of one run's metrics (one panel per group); the caller closes it (``plt.close``)."""
    plt = _pyplot()
    panels = _panels(list(metrics))
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    legend_rows = max((math.ceil(len(p.names) / 3) for p in panels if len(p.names) > 1), default=0)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, (3.4 + 0.16 * legend_rows) * rows), squeeze=False,
                             layout="constrained")
    xlim = _step_range(metrics)
    for ax, panel in zip(axes.ravel(), panels):
        _draw_panel(ax, metrics, panel, xlim)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    return fig


def render_training_curves(live_dir: str | os.PathLike, out_path: str | os.PathLike, title: str | None = None,
                           dpi: int = 100) -> dict[str, int]:
    """Render the metrics of one DVCLive directory into ``out_path`` (PNG, written atomically).

    Returns ``{metric name: number of points}``. The PNG carries no matplotlib version stamp, so the same
    metrics give the same bytes.
    """
    plt = _pyplot()
    metrics = read_live_metrics(live_dir)
    if not metrics:
        raise PoseDataError(live_dir, f"no metric files under {METRICS_SUBDIR}")
    fig = training_figure(metrics, title or str(live_dir))
    try:
        with atomic_path(Path(out_path)) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        plt.close(fig)
    return {n: int(len(v[0])) for n, v in metrics.items()}
