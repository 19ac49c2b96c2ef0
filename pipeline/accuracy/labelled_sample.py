"""Read a labelled reference sample and its strata table, and check them before estimating.

Two forms are read:

* the GeoPackage ``forestnet sample-design`` writes, once interpreters have filled
  ``reference_class``: point layer ``reference_points`` (``stratum, map_driver,
  reference_class``, ...) and attributes table ``strata`` (``stratum, size_ha, n``);
* two CSV files: ``sample.csv`` (``stratum, map_class, reference_class``) and
  ``strata.csv`` (``stratum, size``, or ``size_ha``).

Both become one table of ``stratum, map_class, reference_class`` (stripped strings) and one
of ``stratum, size``. Every problem a user can fix raises ``SampleInputError`` with one line
naming the file and what is wrong, before anything is estimated or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.accuracy.area_estimates import OVERALL
from pipeline.core.errors import ForestNetError

SAMPLE_LAYER = "reference_points"
STRATA_LAYER = "strata"
SAMPLE_COLUMNS = ["stratum", "map_class", "reference_class"]
#: GeoPackage field -> normalised column.
_GPKG_SAMPLE_FIELDS = {"stratum": "stratum", "map_driver": "map_class",
                       "reference_class": "reference_class"}
_SQLITE_MAGIC = b"SQLite format 3\x00"


class SampleInputError(ForestNetError, ValueError):
    """A reference sample or strata table that cannot be used; the message says why."""


@dataclass(frozen=True)
class LabelledSample:
    """A checked sample: every stratum known, sized > 0 and holding >= 2 labelled units."""

    sample: pd.DataFrame  # stratum, map_class, reference_class
    strata: pd.DataFrame  # stratum, size
    unit: str | None  # the sizes' unit ("ha"), None where the table does not say
    dropped_unlabelled: int
    source: Path


def read_labelled_sample(sample_path: Path, strata_path: Path | None = None, *,
                         drop_unlabelled: bool = False) -> LabelledSample:
    """Read and check a sample GeoPackage, or a sample CSV with its strata CSV.

    Unlabelled rows (empty ``reference_class``) are an error unless ``drop_unlabelled``,
    which drops them and counts them, so the report can say so.
    """
    sample_path = Path(sample_path)
    kind = _kind(sample_path)
    if kind == "gpkg":
        if strata_path is not None:
            raise SampleInputError(f"{sample_path}: a GeoPackage sample holds its own "
                                   f"'{STRATA_LAYER}' table; leave out --strata")
        sample, strata, unit = _read_geopackage(sample_path)
        strata_name = f"{sample_path} (table {STRATA_LAYER})"
    else:
        if strata_path is None:
            raise SampleInputError(f"{sample_path}: a CSV sample needs its strata table "
                                   "(--strata strata.csv with columns stratum,size)")
        strata_path = Path(strata_path)
        if _kind(strata_path) != "csv":
            raise SampleInputError(f"{strata_path}: the strata table must be a .csv file")
        sample = _read_csv(sample_path, SAMPLE_COLUMNS)
        strata, unit = _strata_csv(strata_path)
        strata_name = str(strata_path)
    sample, dropped = _labelled(sample, sample_path, drop_unlabelled)
    strata = _checked_strata(strata, strata_name)
    _check_coverage(sample, strata, sample_path, strata_name)
    return LabelledSample(sample.reset_index(drop=True), strata, unit, dropped, sample_path)


def _kind(path: Path) -> str:
    """"gpkg" or "csv", or a SampleInputError naming the file."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise SampleInputError(f"{path}: {what}")
    suffix = path.suffix.lower()
    if suffix == ".gpkg":
        with path.open("rb") as f:
            if f.read(16) != _SQLITE_MAGIC:
                raise SampleInputError(f"{path}: not a GeoPackage (no SQLite header)")
        return "gpkg"
    if suffix == ".csv":
        return "csv"
    raise SampleInputError(f"{path}: not a GeoPackage (.gpkg) or CSV (.csv) file")


def _read_geopackage(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    import pyogrio

    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(path)}
    except Exception as exc:  # GDAL's own words on a damaged file
        raise SampleInputError(f"{path}: not a readable GeoPackage ({exc})") from None
    missing = [name for name in (SAMPLE_LAYER, STRATA_LAYER) if name not in layers]
    if missing:
        raise SampleInputError(f"{path}: no {' or '.join(missing)} layer (it has: "
                               f"{', '.join(sorted(layers)) or 'none'}); write it with "
                               "forestnet sample-design")
    points = pyogrio.read_dataframe(path, layer=SAMPLE_LAYER, read_geometry=False)
    _require(points, list(_GPKG_SAMPLE_FIELDS), f"{path} (layer {SAMPLE_LAYER})")
    sample = points[list(_GPKG_SAMPLE_FIELDS)].rename(columns=_GPKG_SAMPLE_FIELDS)
    table = pyogrio.read_dataframe(path, layer=STRATA_LAYER, read_geometry=False)
    _require(table, ["stratum", "size_ha"], f"{path} (table {STRATA_LAYER})")
    strata = table[["stratum", "size_ha"]].rename(columns={"size_ha": "size"})
    return _as_text(sample, SAMPLE_COLUMNS), _as_text(strata, ["stratum"]), "ha"


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        # Every cell as text, and no "NA"-like word read as missing: labels are free strings.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SampleInputError(f"{path}: not a readable CSV file ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _require(frame, columns, str(path))
    return _as_text(frame, columns)


def _strata_csv(path: Path) -> tuple[pd.DataFrame, str | None]:
    """``stratum, size`` (unit unknown) or ``stratum, size_ha`` (hectares)."""
    frame = _read_csv(path, ["stratum"])
    if "size" in frame.columns:
        return frame[["stratum", "size"]], None
    if "size_ha" in frame.columns:
        return frame[["stratum", "size_ha"]].rename(columns={"size_ha": "size"}), "ha"
    raise SampleInputError(f"{path}: missing column size (the stratum's area)")


def _require(frame: pd.DataFrame, columns: list[str], where: str) -> None:
    if missing := [c for c in columns if c not in frame.columns]:
        raise SampleInputError(f"{where}: missing column{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(missing)} (it has: {', '.join(map(str, frame))})")


#: The reference label of a point the interpreter could not decide.
UNSURE = "Unsure"


def _as_text(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Strip the ``columns`` to text; NULL becomes "" (unlabelled, for reference_class)."""
    out = frame.copy()
    for c in columns:
        out[c] = out[c].map(lambda v: "" if v is None or v != v else str(v).strip())
    return out


def _labelled(sample: pd.DataFrame, path: Path, drop: bool) -> tuple[pd.DataFrame, int]:
    """Rows with a reference label; the others dropped (and counted) or an error."""
    if sample.empty:
        raise SampleInputError(f"{path}: the sample has no rows")
    for column in ("stratum", "map_class"):
        if (blank := int((sample[column] == "").sum())):
            raise SampleInputError(f"{path}: {blank} row(s) without a {column}")
    # "Unsure" (a choice of sample-design's QGIS form) flags a point for a second look: it
    # is not a class whose area anyone wants, so it counts as not labelled yet.
    reference = sample["reference_class"]
    unlabelled = (reference == "") | (reference.str.casefold() == UNSURE.casefold())
    count = int(unlabelled.sum())
    if count and not drop:
        raise SampleInputError(f"{path}: {count} of {len(sample)} rows have no reference_class "
                               f"or are {UNSURE!r} (not labelled yet); label them, or pass "
                               "--drop-unlabelled to leave them out")
    labelled = sample.loc[~unlabelled, SAMPLE_COLUMNS]
    classes = set(labelled["map_class"]) | set(labelled["reference_class"])
    if OVERALL in classes:  # accuracy.csv's last row is named so
        raise SampleInputError(f"{path}: '{OVERALL}' is reserved and cannot name a class")
    return labelled, count


def _checked_strata(strata: pd.DataFrame, where: str) -> pd.DataFrame:
    if strata.empty:
        raise SampleInputError(f"{where}: the strata table has no rows")
    if (blank := int((strata["stratum"] == "").sum())):
        raise SampleInputError(f"{where}: {blank} row(s) without a stratum name")
    if dupes := sorted(set(strata["stratum"][strata["stratum"].duplicated()])):
        raise SampleInputError(f"{where}: strata listed more than once: {_names(dupes)}")
    size = pd.to_numeric(strata["size"], errors="coerce")
    if bad := list(strata["stratum"][~(size > 0)]):  # NaN fails the test too
        raise SampleInputError(f"{where}: strata without a size > 0: {_names(bad)}")
    return pd.DataFrame({"stratum": strata["stratum"].to_numpy(), "size": size.to_numpy(float)})


def _check_coverage(sample: pd.DataFrame, strata: pd.DataFrame, path: Path,
                    strata_name: str) -> None:
    """Every sample stratum is in the table, and every table stratum has >= 2 labelled
    units: a stratum without any cannot be estimated, one with a single unit has no
    sample variance."""
    known = set(strata["stratum"])
    if unknown := list(dict.fromkeys(s for s in sample["stratum"] if s not in known)):
        raise SampleInputError(f"{path}: strata not in {strata_name}: {_names(unknown)}")
    counts = sample["stratum"].value_counts()
    n = strata["stratum"].map(counts).fillna(0).astype(int)
    if empty := list(strata["stratum"][n == 0]):
        raise SampleInputError(f"{path}: no labelled points in strata {_names(empty)} of "
                               f"{strata_name}; their area cannot be estimated")
    if few := list(strata["stratum"][n == 1]):
        raise SampleInputError(f"{path}: strata with fewer than 2 labelled points (no "
                               f"variance): {_names(few)}")


def _names(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
