"""Prefect artifacts of the train and map flows: metrics, confusion matrix, quick-look maps.

The markdown comes from pure renderers (``forestnet_model.report``,
``pipeline.core.markdown_image``); this module only decides what to publish and under which
key. Keys are stable, so the Prefect UI shows each one's history across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from forestnet_model.bundle_meta import BundleMeta
from forestnet_model.report import (
    CONFUSION_PNG,
    confusion_png,
    render_confusion_markdown,
    render_metrics_markdown,
)
from pipeline.core.atomic import atomic_output
from pipeline.core.markdown_image import png_file_markdown

METRICS_KEY, CONFUSION_KEY, QUICK_LOOK_KEY = (
    "train-metrics", "train-confusion-matrix", "map-quick-look")


def confusion_split(metrics: dict) -> str | None:
    """The split whose confusion matrix is shown: test, else val; None when neither has one."""
    for split in ("test", "val"):
        report = metrics.get(split) or {}
        if report.get("n") and report.get("confusion_matrix"):
            return split
    return None


def publish_training(meta: BundleMeta, bundle: Path) -> Path | None:
    """Publish the metrics table and the confusion matrix; write ``confusion_matrix.png``
    into the bundle when it is writable. Returns the PNG's path, or None when none was
    written (no split has a confusion matrix, or the bundle is read-only)."""
    create_markdown_artifact(
        render_metrics_markdown(meta.metrics, meta.classes, f"Metrics of {meta.model_id}"),
        key=METRICS_KEY, description=f"forestnet model {meta.model_id}: metrics per split")
    split = confusion_split(meta.metrics)
    if split is None:
        return None
    cm = meta.metrics[split]["confusion_matrix"]
    title = f"{meta.model_id}, {split} split"
    png = confusion_png(cm, meta.classes, title)
    path: Path | None = Path(bundle) / CONFUSION_PNG
    try:
        with atomic_output(path) as tmp:
            tmp.write_bytes(png)
    except PermissionError as exc:  # a shared, read-only bundle: publishing is enough
        get_run_logger().warning("%s not written: %s", path, exc)
        path = None
    create_markdown_artifact(
        render_confusion_markdown(cm, meta.classes, png, f"Confusion matrix: {title}"),
        key=CONFUSION_KEY, description=f"forestnet model {meta.model_id}: {split} confusion")
    return path


def publish_quick_looks(pngs: Sequence[Path], run_id: str) -> None:
    """One markdown artifact with every quick-look map of a run (large ones linked)."""
    if not pngs:
        return
    parts = [f"### Quick-look maps of run {run_id}"]
    for png in pngs:
        parts += ["", f"#### {Path(png).stem}", "", png_file_markdown(Path(png), Path(png).stem)]
    create_markdown_artifact("\n".join(parts) + "\n", key=QUICK_LOOK_KEY,
                             description=f"forestnet map run {run_id}: quick-look maps")
