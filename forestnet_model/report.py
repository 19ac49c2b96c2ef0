"""The evaluation report: ``write_evaluation_report`` turns ``evaluate_bundle``'s result
(``forestnet_model.evaluation``), the random-forest baselines and the published ForestNet
numbers into ``report.md``, ``confusion_matrix.png`` and ``report.json`` (each written atomically).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from forestnet_model.calibration_report import (
    RELIABILITY_PNG,
    calibration_lines,
    reliability_png,
)
from pipeline.core.atomic import atomic_output
from pipeline.core.json_ready import json_ready
from pipeline.core.markdown_image import png_markdown
from pipeline.core.radiometry import LABELS
from pipeline.training_set.band_stats import (
    RELEASE_BAND_MEANS,
    RELEASE_BAND_STDS,
    band_warnings,
)

if TYPE_CHECKING:  # the baselines need scikit-learn; rendering them does not
    from forestnet_model.baseline import BaselineResult


@dataclass(frozen=True)
class PublishedResult:
    """One row of the published comparison: accuracy / macro F1 on val and test."""

    model: str
    inputs: str
    val_accuracy: float
    val_macro_f1: float
    test_accuracy: float
    test_macro_f1: float


#: Irvin et al. 2020, "ForestNet: Classifying Drivers of Deforestation in Indonesia using
#: Deep Learning on Satellite Imagery", results table of the 4-class task (accuracy and
#: macro F1 on the dataset's validation and test splits); as recorded in DESIGN.md section 4.
PUBLISHED_RESULTS: tuple[PublishedResult, ...] = (
    PublishedResult("random forest", "visible", 0.56, 0.49, 0.49, 0.44),
    PublishedResult("random forest", "visible + aux", 0.72, 0.67, 0.67, 0.62),
    PublishedResult("CNN + SDA + PT (ForestNet)", "visible", 0.83, 0.80, 0.80, 0.74),
    PublishedResult("CNN + SDA + PT (ForestNet)", "visible + aux", 0.84, 0.81, 0.80, 0.75),
)

REPORT_MD, CONFUSION_PNG, REPORT_JSON = "report.md", "confusion_matrix.png", "report.json"


# --- report ---------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.3f}"


def _pair(report: dict | None) -> str:
    if not report or not report.get("n"):
        return "—"
    return f"{_num(report['accuracy'])} / {_num(report['macro_f1'])}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _inputs_label(report: dict) -> str:
    inputs = report.get("inputs", {})
    text = ", ".join(inputs.get("bands", []))
    if inputs.get("aux_bands"):
        text += " + aux: " + ", ".join(inputs["aux_bands"])
    return text


def comparison_rows(
    model_report: dict, baselines: Sequence[BaselineResult],
    published: Sequence[PublishedResult],
) -> list[list[str]]:
    """Rows of the comparison table: this run first, then the published numbers."""
    split = model_report["split"]
    ours = {s: model_report if s == split else None for s in ("val", "test")}
    rows = [["ForestNet pipeline model", _inputs_label(model_report),
             f"this run ({model_report['model_id']})", _pair(ours["val"]), _pair(ours["test"])]]
    for b in baselines:
        inputs = b.feature_set.replace("+", " + ")
        rows.append(["random forest", inputs, "this run", _pair(b.val), _pair(b.test)])
    for p in published:
        rows.append([p.model, p.inputs, "Irvin et al. 2020",
                     f"{p.val_accuracy:.2f} / {p.val_macro_f1:.2f}",
                     f"{p.test_accuracy:.2f} / {p.test_macro_f1:.2f}"])
    return rows


def radiometry_lines(r: dict) -> list[str]:
    """Both radiometries, the chips' and the model's (evaluation refuses them unequal)."""
    if "radiometry" not in r:
        return []
    chips, model = r["radiometry"], r.get("bundle_radiometry", "not recorded")
    return [f"- radiometry: chips {LABELS.get(chips, chips)}; model trained on "
            f"{LABELS.get(model, model)}"]


def band_stats_section(stats: dict, radiometry: str) -> list[str]:
    """The chip store's band means and stds beside the release's, with a warning per band
    more than 2x off (the sign of chips of another radiometry or scaling)."""
    if not stats:
        return []
    rows = [[band, _num(v["mean"]), _num(v["std"]), _num(RELEASE_BAND_MEANS[band]),
             _num(RELEASE_BAND_STDS[band])] for band, v in stats.items()]
    warnings = band_warnings(stats)
    return ["", "## Band statistics (display units 0-255, composites)", "",
            f"Chip store radiometry: {radiometry}.", "",
            *_table(["band", "mean", "std", "release mean", "release std"], rows),
            *(["", *(f"- **Warning:** {w}" for w in warnings)] if warnings else [])]


def render_markdown(
    model_report: dict, baselines: Sequence[BaselineResult],
    published: Sequence[PublishedResult],
) -> str:
    """The report as Markdown (pure: no files)."""
    r, classes = model_report, model_report["classes"]
    lines = [
        f"# Evaluation of {r['model_id']} on the {r['split']} split", "",
        f"- bundle: `{r['bundle']}`", f"- chip store: `{r['chips']}`",
        f"- events: {r['n']}",
        *radiometry_lines(r),
        f"- written: {datetime.now(UTC).isoformat(timespec='seconds')}", "",
        "## Headline", "",
        *_table(["metric", "value"], [["accuracy", _num(r["accuracy"])],
                                      ["macro F1", _num(r["macro_f1"])]]),
        "", "## Per class", "",
        *_table(["class", "precision", "recall", "F1", "support"], [
            [c, _num(r["precision_per_class"][i]), _num(r["recall_per_class"][i]),
             _num(r["f1_per_class"][i]), r["support_per_class"][i]]
            for i, c in enumerate(classes)]),
        "", "## Confusion matrix", "", "Rows are true classes, columns predictions.", "",
        *confusion_table(r["confusion_matrix"], classes),
        "", f"![confusion matrix]({CONFUSION_PNG})", "",
        "## Comparison (accuracy / macro F1)", "",
        *_table(["model", "inputs", "source", "validation", "test"],
                comparison_rows(r, baselines, published)),
        "",
        "Published numbers are on the ForestNet dataset's splits (1616 / 473 / 668 events); "
        "ours compare with them only when this chip store is that dataset.",
        *band_stats_section(r.get("band_stats", {}), r.get("radiometry", "")),
        *calibration_lines(r.get("calibration")),
        *map_lines(r.get("map")),
    ]
    for b in baselines:
        lines += ["", f"## Random forest, {b.feature_set}", "",
                  f"Chosen on validation macro F1 ({b.n_train} training events): "
                  f"`{json.dumps(b.params)}`.", "",
                  *_table(["parameters", "val macro F1"],
                          [[f"`{json.dumps(s['params'])}`", _num(s["val_macro_f1"])]
                           for s in b.grid_scores])]
        if b.top_features:
            lines += ["", "Most important features: " + ", ".join(
                f"{name} ({weight:.3f})" for name, weight in b.top_features[:5]) + "."]
    return "\n".join(lines) + "\n"


def confusion_figure(cm: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """Row-normalised colours (recall per cell) with the counts written in each cell."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    FigureCanvasAgg(fig)  # Agg, set on the figure: no pyplot state shared across threads
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=30, ha="right")
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if share[i, j] > 0.5 else "black")
    return fig


def confusion_png(cm: np.ndarray, classes: Sequence[str], title: str) -> bytes:
    """:func:`confusion_figure` as PNG bytes (for files and inlined artifacts alike)."""
    buffer = io.BytesIO()
    confusion_figure(cm, classes, title).savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def confusion_table(cm: Sequence[Sequence[int]], classes: Sequence[str]) -> list[str]:
    """Markdown table lines of a confusion matrix: rows true classes, columns predictions."""
    return _table(["true \\ predicted", *classes],
                  [[c, *row] for c, row in zip(classes, np.asarray(cm).tolist(), strict=True)])


def metric_splits(metrics: dict) -> list[str]:
    """The splits scored in a bundle's ``metrics`` (entries that are classification reports)."""
    return [k for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v]


def render_metrics_markdown(metrics: dict, classes: Sequence[str], title: str) -> str:
    """A bundle's ``metrics`` as markdown: one row per split (events, accuracy, macro F1,
    F1 of each class when recorded), then the training facts beside them."""
    rows = []
    for split in metric_splits(metrics):
        r = metrics[split]
        f1 = list(r.get("f1_per_class") or [None] * len(classes))
        rows.append([split, r.get("n", "n/a"), _num(r["accuracy"]), _num(r.get("macro_f1")),
                     *(_num(v) for v in f1)])
    lines = [f"### {title}", "",
             *_table(["split", "events", "accuracy", "macro F1", *(f"F1 {c}" for c in classes)],
                     rows)]
    facts = [(label, metrics[key]) for key, label in (
        ("best_val_macro_f1", "best validation macro F1"), ("epochs_run", "epochs run"),
        ("train_events", "training events")) if metrics.get(key) is not None]
    if facts:
        lines += ["", *(f"- {label}: {_fact(value)}" for label, value in facts)]
    return "\n".join(lines) + "\n"


def render_confusion_markdown(cm: Sequence[Sequence[int]], classes: Sequence[str], png: bytes,
                              title: str) -> str:
    """The confusion matrix as an inlined PNG and as a table, for a Prefect artifact."""
    return "\n".join([f"### {title}", "", png_markdown(png, "confusion matrix"), "",
                      "Rows are true classes, columns predictions.", "",
                      *confusion_table(cm, classes)]) + "\n"


def map_lines(result: dict | None) -> list[str]:
    """The map beside evaluation (``forestnet evaluate --map``): its accuracy on the split's
    events and its agreement with evaluation's drivers."""
    if not result:
        return []
    return [
        "", "## The map beside evaluation", "",
        f"Each of the {result['n']} events is joined to the map polygon that overlaps it most "
        f"({', '.join(f'`{m}`' for m in result['maps'])}).", "",
        *_table(["", "value"], [
            ["map accuracy", _num(result["map_accuracy"])],
            ["evaluation accuracy", _num(result["evaluation_accuracy"])],
            ["map driver = evaluation driver", _num(result["agreement"])],
            ["largest probability difference, map vs evaluation",
             _num(result["max_probability_gap"])],
            ["events missing from the map", str(result["missing"])]]),
    ]


def _fact(value: object) -> str:
    return _num(value) if isinstance(value, float) else str(value)


def write_evaluation_report(
    out_dir: Path, model_report: dict, baselines: Sequence[BaselineResult] = (),
    published: Sequence[PublishedResult] = PUBLISHED_RESULTS,
) -> dict[str, Path]:
    """Write ``report.md``, ``confusion_matrix.png`` and ``report.json``; return their paths."""
    out_dir = Path(out_dir)
    paths = {"markdown": out_dir / REPORT_MD, "confusion_matrix": out_dir / CONFUSION_PNG,
             "json": out_dir / REPORT_JSON}
    png = confusion_png(model_report["confusion_matrix"], model_report["classes"],
                        f"{model_report['model_id']}, {model_report['split']} split")
    with atomic_output(paths["confusion_matrix"]) as tmp:
        tmp.write_bytes(png)
    if model_report.get("calibration"):
        paths["reliability"] = out_dir / RELIABILITY_PNG
        with atomic_output(paths["reliability"]) as tmp:
            tmp.write_bytes(reliability_png(model_report["calibration"],
                                            f"{model_report['model_id']}, "
                                            f"{model_report['split']} split"))
    full = {"model": model_report, "baselines": [b.to_dict() for b in baselines],
            "published": [vars(p) for p in published]}
    with atomic_output(paths["json"]) as tmp:
        tmp.write_text(json.dumps(json_ready(full), indent=1, allow_nan=False))
    with atomic_output(paths["markdown"]) as tmp:
        tmp.write_text(render_markdown(model_report, baselines, published))
    return paths
