"""The scene index (scenes.parquet): rows, footprints, round trips and queries."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
from pyproj import Transformer
from shapely.geometry import Point, Polygon, box

from pipeline.ingest.catalog import (
    INDEX_COLUMNS,
    INDEX_NAME,
    failed_row,
    query_scenes,
    read_index,
    scene_row,
    write_index,
)
from tests.ingest.real_crops import (
    L1_DIR,
    L1_ID,
    L2_ID,
    mtl_float,
)

# --- Scene index -------------------------------------------------------------------------------


def _scene_quad(folder: Path) -> Polygon:
    """The full scene's footprint from the MTL's CORNER_*_LAT/LON_PRODUCT values."""
    return Polygon([
        (
            mtl_float(folder, f"CORNER_{c}_LON_PRODUCT"),
            mtl_float(folder, f"CORNER_{c}_LAT_PRODUCT"),
        )
        for c in ("UL", "UR", "LR", "LL")
    ])


def test_scene_row_footprint(store: Path) -> None:
    row = scene_row(store, L1_ID, "ingested", source=str(L1_DIR))
    assert set(INDEX_COLUMNS) | {"footprint"} == set(row)
    assert row["scene_id"] == L1_ID and row["product"] == "LC08" and row["level"] == "L1TP"
    assert (row["path"], row["row"], row["epsg"]) == (17, 51, 32616)
    assert row["acquired"] == pd.Timestamp("2015-12-05T16:06:06.877338")
    assert row["status"] == "ingested" and row["error"] == "" and row["source"] == str(L1_DIR)

    footprint = row["footprint"]
    # The crop lies inside the full scene whose corners the MTL gives in lon/lat...
    assert _scene_quad(L1_DIR).contains(footprint)
    # ...and its corners are the grid's outer corners (MTL pixel centres +- 15 m) in lon/lat.
    to_lonlat = Transformer.from_crs("EPSG:32616", "EPSG:4326", always_xy=True)
    ulx = mtl_float(L1_DIR, "CORNER_UL_PROJECTION_X_PRODUCT") - 15
    uly = mtl_float(L1_DIR, "CORNER_UL_PROJECTION_Y_PRODUCT") + 15
    lrx = mtl_float(L1_DIR, "CORNER_LR_PROJECTION_X_PRODUCT") + 15
    lry = mtl_float(L1_DIR, "CORNER_LR_PROJECTION_Y_PRODUCT") - 15
    outer = [(ulx, uly), (lrx, uly), (lrx, lry), (ulx, lry)]
    corners = [to_lonlat.transform(x, y) for x, y in outer]
    for lon, lat in corners:
        assert footprint.exterior.distance(Point(lon, lat)) < 1e-7
    assert footprint.area == pytest.approx(Polygon(corners).area, rel=1e-6)
    centre = footprint.centroid
    assert (centre.x, centre.y) == pytest.approx((-86.53, 12.43), abs=0.01)


def test_scene_row_in_a_fresh_process(store: Path) -> None:
    # catalog alone (no ingest import) must be able to read a group's grid.
    code = (
        "import sys; from pipeline.ingest.catalog import scene_row; "
        "print(scene_row(sys.argv[1], sys.argv[2], 'ingested')['epsg'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(store), L1_ID], capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[2], timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "32616"


@pytest.fixture(scope="module")
def rows(store: Path) -> dict[str, dict]:
    return {sid: scene_row(store, sid, "ingested") for sid in (L1_ID, L2_ID)}


def test_index_round_trip(rows: dict[str, dict], tmp_path: Path) -> None:
    path = write_index(tmp_path, [rows[L2_ID], rows[L1_ID]])
    assert path == tmp_path / INDEX_NAME
    assert [p.name for p in tmp_path.iterdir()] == [INDEX_NAME]  # no temporaries left
    index = read_index(tmp_path)
    assert index.crs.to_epsg() == 4326 and index.geometry.name == "footprint"
    assert list(index["scene_id"]) == [L1_ID, L2_ID]  # sorted by scene_id
    assert set(INDEX_COLUMNS) <= set(index.columns)
    for _, got in index.iterrows():
        want = rows[got["scene_id"]]
        assert got["footprint"].equals_exact(want["footprint"], 1e-12)
        assert got["acquired"] == want["acquired"]
        assert (got["level"], got["epsg"], got["status"]) == (want["level"], 32616, "ingested")
        assert got["cloud_cover"] == want["cloud_cover"]


def test_write_index_replaces_rows_with_the_same_scene_id(
    rows: dict[str, dict], tmp_path: Path
) -> None:
    write_index(tmp_path, [rows[L1_ID], rows[L2_ID]])
    write_index(tmp_path, [{**rows[L1_ID], "status": "skipped", "cloud_cover": 12.5}])
    index = read_index(tmp_path).set_index("scene_id")
    assert sorted(index.index) == [L1_ID, L2_ID]
    assert index.loc[L1_ID, "status"] == "skipped"
    assert index.loc[L1_ID, "cloud_cover"] == 12.5
    assert index.loc[L2_ID, "status"] == "ingested"
    assert index.loc[L2_ID, "cloud_cover"] == rows[L2_ID]["cloud_cover"]


def test_failed_row_is_recorded(rows: dict[str, dict], tmp_path: Path) -> None:
    bad_id = "LC08_L1TP_118062_20160101_20200907_02_T1"
    write_index(tmp_path, [failed_row(bad_id, "/data/bad", "B4.TIF: truncated")])
    write_index(tmp_path, [rows[L1_ID]])
    index = read_index(tmp_path).set_index("scene_id")
    assert sorted(index.index) == sorted([bad_id, L1_ID])
    assert index.loc[bad_id, "status"] == "failed"
    assert index.loc[bad_id, "error"] == "B4.TIF: truncated"
    assert index.loc[bad_id, "source"] == "/data/bad"
    assert index.geometry[bad_id] is None or index.geometry[bad_id].is_empty
    # A failed scene is never offered to queries, wherever one looks.
    assert list(query_scenes(index.reset_index(), box(-180, -90, 180, 90))["scene_id"]) == [L1_ID]
    # A later success replaces the failure.
    write_index(tmp_path, [{**rows[L1_ID], "scene_id": bad_id}])
    assert read_index(tmp_path).set_index("scene_id").loc[bad_id, "status"] == "ingested"


def test_read_index_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="forestnet ingest"):
        read_index(tmp_path)


def test_query_scenes(rows: dict[str, dict], tmp_path: Path) -> None:
    later_clearer = {**rows[L2_ID], "acquired": pd.Timestamp("2016-06-01"), "cloud_cover": 10.0}
    write_index(tmp_path, [rows[L1_ID], later_clearer, failed_row("LC08_x", "/x", "boom")])
    index = read_index(tmp_path)
    inside = Point(-86.53, 12.43).buffer(0.01)
    far_away = Point(113.55, -1.95).buffer(0.5)  # Kalimantan
    # Only the L1 crop reaches this far west (its UL corner is 30 m west of the L2 one).
    l1_only = box(-86.5954, 12.40, -86.5952, 12.41)

    def ids(**kwargs: object) -> list[str]:
        return list(query_scenes(index, **kwargs)["scene_id"])  # type: ignore[arg-type]

    assert ids(geometry=inside) == [L2_ID, L1_ID]  # clearest first
    assert ids(geometry=far_away) == []
    assert ids(geometry=l1_only) == [L1_ID]
    assert ids(geometry=inside, start=datetime(2016, 1, 1)) == [L2_ID]
    assert ids(geometry=inside, end=datetime(2015, 12, 31)) == [L1_ID]
    assert ids(geometry=inside, start=datetime(2015, 12, 5), end=datetime(2015, 12, 6)) == [L1_ID]
    assert ids(geometry=inside, max_cloud_cover=20.0) == [L2_ID]
    assert ids(geometry=inside, max_cloud_cover=61.45) == [L2_ID, L1_ID]
    assert ids(geometry=inside, max_cloud_cover=5.0) == []


def test_each_level2_scene_knows_the_level1_product_that_sharpens_it(tiny_scene_store) -> None:
    from pipeline.ingest.catalog import read_index

    index = read_index(tiny_scene_store)
    level2 = index[index["level"] == "L2SP"]
    assert len(level2) == 3
    for row in level2.itertuples():
        assert row.pan_partner == row.scene_id.replace("_L2SP_", "_L1TP_")
    assert (index.loc[index["level"] == "L1TP", "pan_partner"] == "").all()
    stored = pd.read_parquet(tiny_scene_store / "index.parquet")
    assert "pan_partner" not in stored  # derived when read, never stale on disk
