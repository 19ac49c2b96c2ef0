"""Write the area and accuracy estimates: CSV tables, a markdown report with a bar chart, and
tables added to driver-map GeoPackages.

Every file is written to a temporary sibling and renamed into place (``atomic_output``),
so a reader never sees half a table. Callers check their inputs before calling any writer
here, so bad input writes nothing.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

from pipeline.accuracy.area_estimates import Z95, AreaAccuracy
from pipeline.accuracy.labelled_sample import LabelledSample
from pipeline.core.atomic import atomic_output
from pipeline.core.errors import ForestNetError

AREA_CSV = "area_estimates.csv"
ACCURACY_CSV = "accuracy.csv"
MATRIX_CSV = "error_matrix.csv"
REPORT_MD = "report.md"
CHART_PNG = "area_estimates.png"
#: Non-spatial tables added to a driver-map GeoPackage.
AREA_TABLE = "driver_area_estimates"
ACCURACY_TABLE = "driver_accuracy"
_GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"


class MapGeoPackageError(ForestNetError, ValueError):
    """A --map file that is not a GeoPackage this command can add its tables to."""


def write_area_outputs(result: AreaAccuracy, labelled: LabelledSample,
                       out_dir: Path) -> dict[str, Path]:
    """Write the three CSV tables, the PNG chart and report.md into ``out_dir``.

    Everything is rendered in memory first, so a failure to render writes nothing; the
    report goes last, so a report on disk always has its tables and chart beside it.
    Returns the paths by file name.
    """
    png = io.BytesIO()
    area_chart(result, labelled.unit).savefig(png, format="png")
    contents = {
        AREA_CSV: result.area.to_csv(index=False),  # NaN (undefined) -> an empty cell
        ACCURACY_CSV: result.accuracy.to_csv(index=False),
        MATRIX_CSV: result.error_matrix.to_csv(),  # the index header reads "map\reference"
        CHART_PNG: png.getvalue(),
        REPORT_MD: report_markdown(result, labelled),
    }
    paths = {name: Path(out_dir) / name for name in contents}
    for name, content in contents.items():
        with atomic_output(paths[name], suffix=Path(name).suffix) as tmp:
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content, encoding="utf-8")
    return paths


def class_sentences(result: AreaAccuracy, unit: str | None) -> list[str]:
    """One line per class: "Plantation: 1,234 ± 210 ha (95% CI)"."""
    suffix = f" {unit}" if unit else ""
    return [f"{row['class']}: {_number(row['area'])} ± {_number(Z95 * row['se'])}{suffix} "
            "(95% CI)" for _, row in result.area.iterrows()]


def area_chart(result: AreaAccuracy, unit: str | None) -> Figure:
    """Mapped area (where the strata tell it) beside the estimated area with its 95% CI."""
    area = result.area
    x = np.arange(len(area))
    # A bare Figure with an Agg canvas, not pyplot: no global state, no display needed.
    fig = Figure(figsize=(max(5.0, 1.3 * len(area) + 2), 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    has_mapped = area["mapped_area"].notna().any()
    width = 0.38 if has_mapped else 0.6
    if has_mapped:
        ax.bar(x - width / 2, area["mapped_area"], width, color="#b0b0b0", label="mapped")
    ax.bar(x + (width / 2 if has_mapped else 0), area["area"], width, color="#2e7d32",
           yerr=Z95 * area["se"], capsize=4, ecolor="#202020",
           label="estimated (95% CI)")
    ax.set_xticks(x, area["class"], rotation=20 if len(area) > 4 else 0, ha="right"
                  if len(area) > 4 else "center")
    ax.set_ylabel(f"area ({unit})" if unit else "area")
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_title("Area by class: mapped and estimated from the reference sample")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def report_markdown(result: AreaAccuracy, labelled: LabelledSample) -> str:
    """The report: per-class sentences, the tables, the strata and the chart."""
    unit = labelled.unit
    overall, overall_se = result.overall
    n = int(result.strata["n"].sum())
    lines = [
        "# Area and accuracy from the reference sample", "",
        f"Sample: `{labelled.source}`, {n} labelled points in {len(result.strata)} strata "
        f"covering {_number(result.total_size)}{f' {unit}' if unit else ''}.",
    ]
    if labelled.dropped_unlabelled:
        lines.append(f"{labelled.dropped_unlabelled} unlabelled points were left out "
                     "(--drop-unlabelled); the estimates use the labelled ones only.")
    lines += ["", "## Estimates", "", *[f"- {s}" for s in class_sentences(result, unit)],
              f"- Overall accuracy: {overall:.3f} ± {Z95 * overall_se:.3f} (95% CI)", "",
              f"![Mapped and estimated area with 95% confidence intervals]({CHART_PNG})", ""]
    area = result.area.rename(columns={"mapped_area": "mapped area", "ci95_low": "95% CI low",
                                       "ci95_high": "95% CI high"})
    lines += _table(area, _number) + [""]
    lines += ["## Accuracy", "", "User's and producer's accuracy with standard errors; the "
              "last row is the overall accuracy.", ""]
    lines += _table(result.accuracy, lambda v: f"{v:.3f}") + [""]
    matrix = result.error_matrix.reset_index()
    lines += ["## Error matrix", "", "Proportions of area: rows are map classes, columns "
              "reference classes.", ""]
    lines += _table(matrix, lambda v: f"{v:.4f}") + [""]
    lines += ["## Strata", ""]
    lines += _table(result.strata, _number) + [""]
    lines += ["## Method", "",
              "Stratified estimators of Stehman (2014, IJRS 35(13):4923-4939), which equal "
              "those of Olofsson et al. (2014, RSE 148:42-57) when the strata are the map "
              "classes; user's and producer's accuracy are ratio estimators. 95% confidence "
              f"intervals are ± {Z95} standard errors. No finite population correction: "
              "stratum sizes are areas, and the sampled fraction is negligible.",
              "Mapped area is given only where every stratum's points share one map class."
              if result.area["mapped_area"].notna().any() else
              "Mapped area is left empty: some strata hold points of several map classes.", ""]
    return "\n".join(lines)


def check_geopackage(path: Path) -> None:
    """Raise ``MapGeoPackageError`` naming ``path`` unless it is a GeoPackage file whose
    folder is writable (the tables go in through a copy beside it)."""
    path = Path(path)
    if not path.is_file():
        raise MapGeoPackageError(f"{path}: map GeoPackage does not exist")
    if not os.access(path.parent, os.W_OK):
        raise MapGeoPackageError(f"{path}: folder {path.parent} is not writable")
    try:  # read-only URI: checking must not leave a journal beside the map
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro",
                                                uri=True)) as con:
            (app_id,) = con.execute("PRAGMA application_id").fetchone()
    except sqlite3.DatabaseError:
        raise MapGeoPackageError(f"{path}: not a GeoPackage (not an SQLite file)") from None
    if app_id != _GPKG_APPLICATION_ID:
        raise MapGeoPackageError(f"{path}: not a GeoPackage (SQLite application_id {app_id:#x})")


def add_tables_to_geopackage(gpkg: Path, result: AreaAccuracy) -> Path:
    """Add (or replace) ``driver_area_estimates`` and ``driver_accuracy`` in ``gpkg``.

    The map is copied to a temporary sibling, the tables written there and the copy
    renamed over the map, so every other layer (``forest_loss_drivers``, ``layer_styles``)
    is kept and a failure leaves the map as it was.
    """
    import pyogrio

    gpkg = Path(gpkg)
    with atomic_output(gpkg, suffix=".gpkg") as tmp:
        try:
            shutil.copy2(gpkg, tmp)
            for layer, frame, what in (
                (AREA_TABLE, result.area, "Area by class from the reference sample"),
                (ACCURACY_TABLE, result.accuracy, "Accuracy from the reference sample"),
            ):
                pyogrio.write_dataframe(frame, tmp, layer=layer, driver="GPKG",
                                        layer_options={"OVERWRITE": "YES",
                                                       "DESCRIPTION": what})
        finally:  # SQLite and GDAL sidecars never outlive the write
            for suffix in ("-journal", "-wal", "-shm", ".aux.xml"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    return gpkg


def _number(value: object) -> str:
    """Areas with thousands separators; small values (proportions, tiny areas) to 3
    significant digits; NaN as an empty cell."""
    if isinstance(value, str):
        return value
    v = float(value)  # type: ignore[arg-type]
    if math.isnan(v):
        return ""
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _table(frame: pd.DataFrame, fmt) -> list[str]:
    """``frame`` as a markdown table; numbers through ``fmt``, NaN as an empty cell."""
    def cell(v: object) -> str:
        if isinstance(v, str):
            return v.replace("|", "\\|")
        if isinstance(v, (int, np.integer)):
            return f"{v:,}"
        return "" if pd.isna(v) else fmt(v)

    header = [str(c).replace("|", "\\|") for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |"
                    for row in frame.itertuples(index=False)]
