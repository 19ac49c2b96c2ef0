"""The streamed publish: batch size changes nothing in its outputs, the GeoPackage it
appends batch by batch is a whole, valid map, and a crash mid-write leaves the old one.

Synthetic parts (``tests/synthetic_parts.py``) over two provinces, one across a UTM zone
border; a bundle without a fusion head, so drivers are the softmax of the merged logits.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely

from pipeline.export import driver_maps
from pipeline.export.driver_grid import dominant_driver_grid, dominant_driver_grid_batches
from pipeline.export.driver_maps import MapOutputs, publish_driver_maps
from pipeline.export.driver_raster import (
    driver_raster_grid,
    lonlat_raster_grid,
    write_driver_cog,
    write_driver_cog_batches,
)
from pipeline.export.event_spill import EventSpill
from pipeline.export.geopackage import (
    AREA_TABLE,
    DRIVER_MAP_LAYER,
    driver_layer_table,
    write_driver_geopackage,
    write_driver_geopackage_batches,
)
from pipeline.export.summary_map import write_driver_png, write_driver_png_batches
from pipeline.mapping import seam_stream
from tests.map_job import untrained_bundle
from tests.mapped_features import make_features, utm_squares
from tests.synthetic_parts import REGIONS, write_synthetic_parts

PROVINCES = ["Riau", "Jambi"]  # Riau spans the zone 47/48 border at 102 E
#: Pieces per batch in the streamed runs: every province takes many batches.
SMALL_BATCH = 150
PROVENANCE = {"run_id": "run-s", "model_id": "m", "config": "{}"}


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> list[Path]:
    regions = [r for r in REGIONS if r[0] in PROVINCES]
    return write_synthetic_parts(tmp_path_factory.mktemp("parts"), n_tiles=40, n_pieces=1600,
                                 regions=regions).paths


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


def publish(parts: list[Path], bundle: Path, out: Path) -> dict[str, list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    return publish_driver_maps(parts, bundle, PROVINCES, None, True, out, PROVENANCE,
                               MapOutputs((2015, 2020), driver_raster=True, dominant_grid=True),
                               out / "run" / "events.parquet")


@pytest.fixture(scope="module")
def streamed(parts, bundle, tmp_path_factory) -> Path:
    """One publish in batches of :data:`SMALL_BATCH` pieces, one in a single batch."""
    out = tmp_path_factory.mktemp("maps")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seam_stream, "BATCH_PIECES", SMALL_BATCH)
        publish(parts, bundle, out / "small")
    publish(parts, bundle, out / "whole")
    return out


def layer(path: Path, name: str = DRIVER_MAP_LAYER) -> pd.DataFrame:
    frame = pyogrio.read_dataframe(path, layer=name)
    key = "event_id" if name == DRIVER_MAP_LAYER else ["province", "year", "driver"]
    return frame.sort_values(key).reset_index(drop=True)


def test_batch_size_changes_nothing_in_the_outputs(streamed) -> None:
    small, whole = streamed / "small", streamed / "whole"
    names = sorted(p.name for p in whole.iterdir() if p.is_file())
    assert names == sorted(p.name for p in small.iterdir() if p.is_file())
    assert {"indonesia.gpkg", "riau.gpkg", "jambi.png", "riau-drivers.tif",
            "indonesia-dominant-1km.gpkg"} <= set(names)
    for gpkg in (n for n in names if n.endswith(".gpkg") and "dominant" not in n):
        a, b = layer(small / gpkg), layer(whole / gpkg)
        assert len(a) > 100 and a["event_id"].is_unique
        pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
        assert shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), 0).all()
        pd.testing.assert_frame_equal(layer(small / gpkg, AREA_TABLE),
                                      layer(whole / gpkg, AREA_TABLE), rtol=1e-12)
        meta = [pyogrio.read_info(d / gpkg, layer=DRIVER_MAP_LAYER)["layer_metadata"]
                for d in (small, whole)]
        blind = [sorted(m.pop("events_without_imagery").split(",")) for m in meta]
        assert blind[0] == blind[1] and len(blind[0]) > 0
        assert {k: v for k, v in meta[0].items() if k != "created"} == {
            k: v for k, v in meta[1].items() if k != "created"}
    for cog in (n for n in names if n.endswith(".tif")):
        with rasterio.open(small / cog) as a, rasterio.open(whole / cog) as b:
            assert a.profile == b.profile
            # Only pixel centres inside two overlapping synthetic events may differ.
            assert (a.read() != b.read()).any(axis=0).mean() < 1e-3
    events = [gpd.read_parquet(d / "run" / "events.parquet") for d in (small, whole)]
    a, b = (e.sort_values("event_id").reset_index(drop=True) for e in events)
    pd.testing.assert_frame_equal(pd.DataFrame(a).drop(columns="geometry"),
                                  pd.DataFrame(b).drop(columns="geometry"))
    # Mapped events first, then those without imagery, as the whole-frame writer wrote them.
    assert events[0]["driver_code"].eq(0).is_monotonic_increasing


def test_the_appended_geopackage_is_one_valid_map_with_every_event(streamed) -> None:
    small = streamed / "small"
    events = gpd.read_parquet(small / "run" / "events.parquet")
    assert events["n_pieces"].max() > 1  # seams were merged
    mapped = events[events["driver_code"] > 0]
    for gpkg, rows in (("riau.gpkg", mapped[mapped["province"] == "Riau"]),
                       ("indonesia.gpkg", mapped)):
        info = pyogrio.read_info(small / gpkg, layer=DRIVER_MAP_LAYER)
        assert info["features"] == len(rows) and info["geometry_type"] == "MultiPolygon"
        back = gpd.read_file(small / gpkg, layer=DRIVER_MAP_LAYER)  # through GDAL
        assert sorted(back["event_id"]) == sorted(rows["event_id"])
        table = pyogrio.read_dataframe(small / gpkg, layer=AREA_TABLE)
        assert table["n_events"].sum() == len(rows)
        assert table["area_ha"].sum() == pytest.approx(rows["area_ha"].sum(), rel=1e-9)
        with contextlib.closing(sqlite3.connect(small / gpkg)) as con:
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            (indexed,) = con.execute(f'SELECT count(*) FROM "rtree_{DRIVER_MAP_LAYER}_geom"'
                                     ).fetchone()
        assert indexed == len(rows)
    assert not [p for p in small.rglob("*") if ".tmp-" in p.name]


def _tables(n: int, size: int = 4) -> list:
    squares = [(600_000 + 3_000 * i, 60_000, 1_000) for i in range(n * size)]
    frame = make_features(utm_squares(squares), ["Plantation", "Other"] * (n * size // 2))
    return [driver_layer_table(frame.iloc[k * size:(k + 1) * size]) for k in range(n)]


def test_a_crash_after_the_first_batch_leaves_the_previous_map(tmp_path) -> None:
    target = tmp_path / "riau.gpkg"

    def failing():
        tables = _tables(3)
        yield tables[0]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_driver_geopackage_batches(failing(), target, metadata=PROVENANCE)
    assert list(tmp_path.iterdir()) == []
    write_driver_geopackage_batches(_tables(2), target, metadata=PROVENANCE)
    before = target.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        write_driver_geopackage_batches(failing(), target, metadata={"run_id": "next"})
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]
    assert pyogrio.read_info(target, layer=DRIVER_MAP_LAYER)["features"] == 8


def test_an_event_id_in_two_batches_is_refused(tmp_path) -> None:
    tables = _tables(2)
    with pytest.raises(ValueError, match="event_id is not unique"):
        write_driver_geopackage_batches([tables[0], tables[0]], tmp_path / "x.gpkg",
                                        metadata={})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="driver_layer_table"):
        write_driver_geopackage_batches([tables[0].drop_columns(["run_id"])],
                                        tmp_path / "x.gpkg", metadata={})


def test_a_publish_that_fails_mid_write_keeps_every_previous_map(parts, bundle, streamed,
                                                                 tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(seam_stream, "BATCH_PIECES", SMALL_BATCH)
    shutil.copytree(streamed / "whole", tmp_path, dirs_exist_ok=True)  # the previous maps
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real = EventSpill.layers

    def first_then_fail(self, keys):
        tables = real(self, keys)
        yield next(tables)
        raise OSError("disk full")

    monkeypatch.setattr(driver_maps.EventSpill, "layers", first_then_fail)
    with pytest.raises(OSError, match="disk full"):
        publish(parts, bundle, tmp_path)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()  # no temp file, no spill left behind
    assert all(after[p] == before[p] for p in before if p.suffix in (".gpkg", ".parquet"))


def test_side_outputs_from_batches_equal_the_whole_frames(tmp_path) -> None:
    squares = [(600_000 + 2_500 * (i % 7), 60_000 + 2_500 * (i // 7), 900 + 50 * i)
               for i in range(21)]
    drivers = ["Plantation", "Smallholder agriculture", "Grassland shrubland", "Other",
               "No imagery"] * 4 + ["Other"]
    whole = make_features(utm_squares(squares), drivers)
    batches = [whole.iloc[:8], whole.iloc[8:15], whole.iloc[15:]]

    pd.testing.assert_frame_equal(dominant_driver_grid_batches(batches),
                                  dominant_driver_grid(whole), rtol=1e-9)
    mapped = whole[whole["driver_code"] > 0]
    assert lonlat_raster_grid(tuple(mapped.total_bounds)) == driver_raster_grid(mapped)
    one = write_driver_cog(whole, tmp_path / "one.tif")
    many = write_driver_cog_batches(batches, tmp_path / "many.tif",
                                    grid=lonlat_raster_grid(tuple(mapped.total_bounds)))
    with rasterio.open(one) as a, rasterio.open(many) as b:
        assert a.profile == b.profile and np.array_equal(a.read(), b.read())
    png = write_driver_png(whole, None, tmp_path / "one.png", "t")
    pngs = write_driver_png_batches(batches, None, tmp_path / "many.png", "t",
                                    bounds=tuple(mapped.total_bounds))
    from PIL import Image

    with Image.open(png) as a, Image.open(pngs) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_the_whole_frame_writer_still_refuses_a_bad_frame_before_writing(tmp_path) -> None:
    frame = make_features(utm_squares([(600_000, 60_000, 500)]), ["Other"])
    with pytest.raises(ValueError, match="unknown driver"):
        write_driver_geopackage(frame.assign(driver="Mining"), tmp_path / "x.gpkg",
                                metadata={})
    assert list(tmp_path.iterdir()) == []
