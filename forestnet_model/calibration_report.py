"""The calibration part of the evaluation report: ECE before and after, and a reliability
diagram (accuracy against confidence per bin) as PNG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

RELIABILITY_PNG = "reliability.png"


def reliability_png(calibration: dict, title: str) -> bytes:
    """Two panels, raw softmax and calibrated: per-bin accuracy as bars over the diagonal,
    so bars below it are over-confidence."""
    fig = Figure(figsize=(8, 4), dpi=100)
    for k, name in enumerate(("before", "after")):
        ax = fig.add_subplot(1, 2, k + 1)
        bins = calibration[f"reliability_{name}"]
        edges = np.asarray(bins["edges"])
        acc = np.nan_to_num(np.asarray(bins["accuracy"], float))
        width = np.diff(edges)
        ax.bar(edges[:-1], acc, width=width, align="edge", color="#3182bd", edgecolor="white",
               label="accuracy")
        ax.plot([0, 1], [0, 1], color="#636363", linestyle="--", linewidth=1, label="ideal")
        label = "raw softmax" if name == "before" else \
            f"calibrated (T = {calibration['temperature']:.2f})"
        ax.set_title(f"{label}\nECE {calibration[f'ece_{name}']:.3f}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        if k == 0:
            ax.set_ylabel("accuracy")
            ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()


def calibration_lines(calibration: dict | None) -> list[str]:
    """Markdown lines of the calibration section; none when the report has no calibration."""
    if not calibration:
        return []
    fitted = calibration.get("method") == "temperature"
    how = (f"one temperature T = {calibration['temperature']:.3f}, fitted on the val split by "
           "negative log-likelihood (Guo et al. 2017)" if fitted else
           "none: this bundle records no calibration, so its probabilities are the raw softmax")
    return [
        "", "## Calibration", "",
        f"Calibration: {how}. Expected calibration error over 15 equal-width confidence "
        "bins, on these events:", "",
        "| probabilities | ECE | NLL |", "|---|---|---|",
        f"| raw softmax | {calibration['ece_before']:.3f} | {calibration['nll_before']:.3f} |",
        f"| calibrated | {calibration['ece_after']:.3f} | {calibration['nll_after']:.3f} |",
        "", f"![reliability diagram]({RELIABILITY_PNG})",
    ]
