"""A stability map as files: maps/<scenario>.csv (one row per cell) and the figure.

The figure puts the second axis across and the learning rate up (log): each cell coloured
by its outcome shares (green converged, orange rising, purple oscillating, red diverged,
grey stalled or improving), darker
where the final loss is higher; the theory line 2/λ_max through it, dashed white the lowest
learning rate at which most seeds' loss rose at some epoch; the scenario's own variants marked where they sit.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import numpy as np

from losslab.report.outputs import csv_number

# The outcome shares, in `core.outcome.OUTCOMES` terms: the three the map is about first.
SHARES = ("converged", "rising", "diverged", "oscillating", "stalled", "improving")
COLUMNS = ("lr", "seeds", *SHARES, "rose", "final_loss", "critical_lr")


def map_csv(
    axis: str,
    values: np.ndarray,
    lrs: np.ndarray,
    seeds: int,
    shares: dict[str, np.ndarray],
    rose: np.ndarray,
    final: np.ndarray,
    critical: np.ndarray,
) -> str:
    """Rows: lr fastest, then the axis value; shares and `rose` (the share of seeds whose
    loss went above its first value at some epoch) are [values, lrs] arrays."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["lr", axis, *COLUMNS[1:]])
    for vi, value in enumerate(values):
        for li, lr in enumerate(lrs):
            row = [*(shares[k][vi, li] for k in SHARES), rose[vi, li]]
            shown = int(value) if float(value).is_integer() else value
            numbers = (csv_number(final[vi, li]), csv_number(critical[vi]))
            w.writerow([csv_number(lr), shown, seeds, *(f"{s:.4g}" for s in row), *numbers])
    return buf.getvalue()


def map_png(
    axis: str,
    values: np.ndarray,
    lrs: np.ndarray,
    shares: dict[str, np.ndarray],
    rose: np.ndarray,  # [values, lrs] share of (bounded) seeds whose loss rose; NaN: unknown
    final: np.ndarray,
    critical: np.ndarray,
    marks: Sequence[tuple[str, float, float]],
    title: str,
) -> bytes:
    """The map as PNG bytes (matplotlib, Agg)."""
    import matplotlib  # Deferred: matplotlib (~0.8 s) only where a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # Deferred: see above

    colours = {
        "converged": [0.2, 0.65, 0.3],
        "rising": [0.95, 0.6, 0.1],
        "oscillating": [0.55, 0.3, 0.75],
        "diverged": [0.85, 0.15, 0.15],
    }
    grey = np.array([0.6, 0.6, 0.6])
    other = np.clip(1 - sum(shares[k] for k in colours), 0, 1)
    rgb = other[..., None] * grey + sum(shares[k][..., None] * np.array(c) for k, c in colours.items())
    finite = np.isfinite(final) & (final > 0)
    if finite.any():  # shade: the higher the final loss among the finite ones, the darker
        logs = np.log10(np.where(finite, final, np.nan))
        lo, hi = np.nanmin(logs), np.nanmax(logs)
        shade = np.where(finite, 1 - 0.45 * (logs - lo) / max(hi - lo, 1e-12), 1.0)
        rgb = rgb * np.nan_to_num(shade, nan=1.0)[..., None]
    logx = len(values) > 2 and values.min() > 0 and values.max() / values.min() > 50  # decades apart
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    ax.pcolormesh(
        _edges(values, log=logx), _edges(lrs, log=True), np.transpose(rgb, (1, 0, 2)), shading="flat"
    )
    ax.plot(values, critical, color="black", lw=2, label="theory: lr = 2/λ_max")
    edges = _edges(lrs, log=True)
    first = [int(np.argmax(r >= 0.5)) if np.any(r >= 0.5) else -1 for r in np.nan_to_num(rose, nan=0.0)]
    xs = _edges(values, log=logx)
    for vi, li in enumerate(first):  # per column: the lowest lr where most seeds' loss rose
        if li >= 0:
            ax.plot(xs[vi : vi + 2], [edges[li]] * 2, "w--", lw=1.8)
    if any(li >= 0 for li in first):
        ax.plot([], [], "w--", label="measured: from here up the loss rises at some epoch")
    for name, value, lr in marks:
        ax.plot([value], [lr], "o", ms=8, mfc="white", mec="black")
        ax.annotate(name, (value, lr), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_ylim(lrs.min(), lrs.max())
    ax.set_xlabel(axis)
    ax.set_ylabel("learning rate")
    ax.set_title(title, fontsize=10)
    from matplotlib.patches import Patch  # Deferred: see above

    legend = [Patch(color=c, label=k) for k, c in [*colours.items(), ("stalled or improving", grey)]]
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    ax.legend(handles=[*legend, *lines], loc="lower left", fontsize=8, facecolor="0.85")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _edges(centres: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted centres (geometric midpoints on a log axis)."""
    c = np.log(centres) if log else centres.astype(float)
    if len(c) == 1:
        e = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        mid = (c[1:] + c[:-1]) / 2
        e = np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])
    return np.exp(e) if log else e
