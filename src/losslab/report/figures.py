"""Figures (matplotlib), drawn from plain `Series` data, never from live objects.

During a scenario run they are rendered in a worker process (`report.render`), so the
training process never loads matplotlib.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from losslab.report.series import Series

BROKEN = [("#d62728", "-"), ("#8c1c13", "--"), ("#e377c2", ":")]  # warm, and dashed: broken
PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2"]


def _draw(ax: plt.Axes, s: Series, color: str, style: str = "-") -> None:
    """Every seed's loss (thin), and an x at the last finite loss before inf/NaN."""
    for i, (loss, bad) in enumerate(zip(s.losses, s.diverged, strict=True)):
        epochs = np.arange(1, len(loss) + 1)
        finite = np.where(np.isfinite(loss), loss, np.nan)
        ax.plot(epochs, finite, color=color, ls=style, lw=1.2, alpha=0.7, label=s.label if i == 0 else None)
        if bad and bad > 1 and np.isfinite(loss[bad - 2]):
            ax.plot([bad - 1], [loss[bad - 2]], marker="x", color=color, ms=9, mew=2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (log)")
    ax.grid(True, which="major", alpha=0.3)


def _draw_variants(ax: plt.Axes, all_series: list[Series]) -> None:
    """Broken variants in warm colours (dashed after the first), fixes in the palette."""
    broken = fixes = 0
    for s in all_series:
        if s.role == "broken":
            _draw(ax, s, *BROKEN[broken % len(BROKEN)])
            broken += 1
        else:
            _draw(ax, s, PALETTE[fixes % len(PALETTE)])
            fixes += 1


def variant_figure(s: Series, title: str) -> plt.Figure:
    """One variant's seeds, for its MLflow run."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    _draw(ax, s, *(BROKEN[0] if s.role == "broken" else (PALETTE[0], "-")))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def scenario_figure(all_series: list[Series], title: str) -> plt.Figure:
    """Broken vs every fix on one log axis."""
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    _draw_variants(ax, all_series)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def summary_figure(panels: list[tuple[str, list[Series]]]) -> plt.Figure:
    """One panel per scenario: broken (warm, dashed for extra broken variants) vs fixes."""
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 4.6 * rows), dpi=90, squeeze=False)
    for ax, (name, all_series) in zip(axes.flat, panels, strict=False):
        _draw_variants(ax, all_series)
        ax.set_title(name, fontsize=11)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def variant_png(s: Series, title: str) -> bytes:
    return png(variant_figure(s, title))


def scenario_png(all_series: list[Series], title: str) -> bytes:
    return png(scenario_figure(all_series, title))


def summary_png(panels: list[tuple[str, list[Series]]]) -> bytes:
    return png(summary_figure(panels))
