"""Bad input: each bad scene gets a failed row and a log line naming the file; the rest ingest.

One run over good and bad sources goes through the same steps as the flow (identify,
plan, one ``ingest_row`` per scene); ``test_ingest_cli.py`` checks the command's exit code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import zarr
from shapely.geometry import box

from pipeline.ingest.catalog import query_scenes, read_index
from pipeline.ingest.scene_ingest import ingest_scene
from pipeline.ingest.sources import resolve_sources
from tests.ingest_inputs import (
    L1_DIR,
    L1_ID,
    clone_product,
    ingest_like_the_flow,
    make_tar,
    new_product_id,
    products,
)


@pytest.fixture(scope="module")
def bad_run(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bad")
    inputs, store = root / "inputs", root / "scenes.zarr"
    first, second, third = products(tiny_world)
    ingest_scene(third, store)  # already in the store, from the world folder
    base = second.name
    cases: dict[str, Path] = {"good": first, "no-georef": L1_DIR}

    truncated = clone_product(second, inputs, new_product_id(base, "20210101"))
    with (truncated / f"{truncated.name}_B4.TIF").open("r+b") as f:
        f.truncate(5000)
    cases["truncated"] = truncated

    corrupt = clone_product(second, inputs, new_product_id(base, "20210102"))
    (corrupt / f"{corrupt.name}_B3.TIF").write_bytes(b"\x00garbage, not a TIFF" * 50)
    cases["corrupt"] = corrupt

    missing = clone_product(second, inputs, new_product_id(base, "20210103"))
    (missing / f"{missing.name}_B5.TIF").unlink()
    cases["missing-band"] = missing

    shifted = clone_product(second, inputs, new_product_id(base, "20210104"))
    mtl = shifted / f"{shifted.name}_MTL.txt"
    mtl.write_text(re.sub(r"(CORNER_UL_PROJECTION_X_PRODUCT = )([\d.]+)",
                          lambda m: f"{m.group(1)}{float(m.group(2)) + 3000:.1f}", mtl.read_text()))
    cases["mtl-mismatch"] = shifted

    cases["landsat-7"] = clone_product(second, inputs, base.replace("LC08_", "LE07_"))
    cases["l1gs"] = clone_product(second, inputs, base.replace("_L1TP_", "_L1GS_"))

    garbled = clone_product(second, inputs, new_product_id(base, "20210105"),
                            folder="garbled-product")
    mtl = next(garbled.glob("*_MTL.txt"))
    mtl.write_text(mtl.read_text()[:2500])
    cases["garbled-mtl"] = garbled

    cases["dup-in-run"] = make_tar(first, inputs / f"{first.name}.tar")
    cases["dup-in-store"] = clone_product(third, inputs / "moved", third.name)

    assert len(resolve_sources(cases.values())) == len(cases)
    logger = logging.getLogger("pipeline.ingest.scene_ingest")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        rows = ingest_like_the_flow(list(cases.values()), store)
    finally:
        logger.removeHandler(handler)
    by_source = {r["source"]: r for r in rows}
    return {"cases": cases, "rows": {k: by_source[str(v)] for k, v in cases.items()},
            "records": records, "store": store, "third": third}


def _messages(run: dict, level: int) -> list[str]:
    return [r.getMessage() for r in run["records"] if r.levelno == level]


def test_good_scenes_ingest_beside_bad_ones(bad_run: dict) -> None:
    rows = bad_run["rows"]
    assert rows["good"]["status"] == "ingested"
    assert rows["no-georef"]["status"] == "ingested"
    failed = {k for k, r in rows.items() if r["status"] == "failed"}
    assert failed == set(bad_run["cases"]) - {"good", "no-georef"}
    groups = sorted(zarr.open_group(str(bad_run["store"]), mode="r").group_keys())
    assert groups == sorted([rows["good"]["scene_id"], L1_ID, bad_run["third"].name])


@pytest.mark.parametrize(("case", "file_part", "reason"), [
    ("truncated", "_B4.TIF", "truncated or corrupt"),
    ("corrupt", "_B3.TIF", "cannot open as a GeoTIFF"),
    ("missing-band", "_B5.TIF", "missing nir band file"),
    ("mtl-mismatch", "_B1.TIF", "the MTL belongs to another product"),
    ("landsat-7", "_MTL.txt", "Landsat 7 ETM+"),
    ("l1gs", "_MTL.txt", "processing level L1GS"),
    ("garbled-mtl", "_MTL.txt", "cannot parse MTL"),
    ("dup-in-run", ".tar", "which this run ingests from"),
    ("dup-in-store", "moved", "already in the store from"),
])
def test_bad_input_gets_a_failed_row_and_a_log_line(
    bad_run: dict, case: str, file_part: str, reason: str
) -> None:
    row = bad_run["rows"][case]
    source = bad_run["cases"][case]
    assert row["status"] == "failed" and row["source"] == str(source)
    assert reason in row["error"]
    named = [word for word in row["error"].split() if str(source) in word]
    assert any(file_part in word for word in named), row["error"]
    logged = [m for m in _messages(bad_run, logging.ERROR) if reason in m]
    assert len(logged) == 1 and str(source) in logged[0], logged


def test_failed_rows_keep_a_usable_scene_id(bad_run: dict) -> None:
    rows, cases = bad_run["rows"], bad_run["cases"]
    for case in ("truncated", "corrupt", "missing-band", "mtl-mismatch", "landsat-7", "l1gs"):
        assert rows[case]["scene_id"] == cases[case].name  # the product id, from the MTL
    assert rows["garbled-mtl"]["scene_id"] == "garbled-product"  # MTL unreadable: the folder
    assert rows["dup-in-run"]["scene_id"] == rows["good"]["scene_id"]
    assert rows["dup-in-store"]["scene_id"] == bad_run["third"].name


def test_duplicates_write_nothing_and_hide_nothing(bad_run: dict) -> None:
    store, third = bad_run["store"], bad_run["third"]
    group = zarr.open_group(str(store / third.name), mode="r")
    assert group.attrs["forestnet_source"] == str(third)  # not the moved copy
    index = read_index(store)
    good = query_scenes(index, box(-180, -90, 180, 90))
    assert bad_run["rows"]["good"]["scene_id"] in set(good["scene_id"])
    dup_rows = index[index["scene_id"] == bad_run["rows"]["good"]["scene_id"]]
    assert sorted(dup_rows["status"]) == ["failed", "ingested"]


def test_missing_georeferencing_is_logged_not_failed(bad_run: dict) -> None:
    warnings = _messages(bad_run, logging.WARNING)
    assert any(f"{L1_ID}_B2.TIF has no georeferencing" in m and "MTL" in m for m in warnings)
