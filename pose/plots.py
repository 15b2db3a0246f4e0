"""Training curves from DVCLive directories, rendered offline to PNG (matplotlib, Agg backend).

DVCLive writes one TSV per metric under ``<live>/plots/metrics/`` (``train/loss.tsv``, ``lr.tsv``,
``val/PCKh.tsv``, ...), each with a header ``step<TAB><name>`` (and sometimes ``timestamp``). A figure gets one panel
per group: training losses together, the learning rate (log scale), and one panel per validation metric.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pose.io import PoseDataError, atomic_path

__all__ = ["read_live_metrics", "render_training_curves", "find_live_dirs"]

METRICS_SUBDIR = Path("plots") / "metrics"


def read_metric_tsv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
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


def read_live_metrics(live_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
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


def _panels(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Group metric names into panels: train losses, learning rate(s), then one panel per other metric."""
    train = [n for n in names if n.startswith("train/")]
    lr = [n for n in names if n.split("/")[-1].startswith("lr")]
    rest = [n for n in names if n not in train and n not in lr]
    panels = []
    if train:
        panels.append(("training loss", train))
    panels += [(n, [n]) for n in rest]
    if lr:
        panels.append(("learning rate", lr))
    return panels


def render_training_curves(live_dir: str | os.PathLike, out_path: str | os.PathLike, title: str | None = None,
                           dpi: int = 100) -> dict[str, int]:
    """Render the metrics of one DVCLive directory into ``out_path`` (PNG, written atomically).

    Returns ``{metric name: number of points}``. Losses are drawn on a log scale when all are positive.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics = read_live_metrics(live_dir)
    if not metrics:
        raise PoseDataError(live_dir, f"no metric files under {METRICS_SUBDIR}")
    panels = _panels(list(metrics))
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    try:
        for ax, (label, names) in zip(axes.ravel(), panels):
            for n in names:
                steps, values = metrics[n]
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=n)
            all_vals = np.concatenate([metrics[n][1] for n in names])
            if (label in ("training loss", "learning rate") and all_vals.size and np.all(all_vals > 0)
                    and np.nanmax(all_vals) > 10 * np.nanmin(all_vals)):
                ax.set_yscale("log")
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            if len(names) > 1:
                ax.legend(fontsize=7)
        for ax in axes.ravel()[len(panels):]:
            ax.axis("off")
        fig.suptitle(title or str(live_dir), fontsize=11)
        fig.tight_layout()
        out_path = Path(out_path)
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return {n: int(len(v[0])) for n, v in metrics.items()}
