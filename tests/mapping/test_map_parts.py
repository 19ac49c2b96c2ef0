"""Map parts: their keys and paths, the one reader, and the per-province writer over them.

Two parts of neighbouring tiles near the Kalimantan Tengah / Selatan border hold pieces
written by hand, so every merged event, driver and metadata field is known in advance. The
bundle has no fusion head, so its drivers are the softmax of the merged logits (mapping
with a fusion head: ``test_map_fusion``).
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import box

from pipeline.core.tile_lattice import MapTile
from pipeline.export.driver_maps import (
    MapOutputs,
    parts_by_province,
    province_events,
    write_driver_maps,
)
from pipeline.export.geopackage import DRIVER_MAP_LAYER
from pipeline.mapping.parts import (
    PART_COLUMNS,
    MapPartError,
    part_path,
    part_provinces,
    parts_key,
    read_pieces,
)
from pipeline.mapping.piece_merge import LOGIT_COLUMNS
from tests.map_job import untrained_bundle

KT, KS = "Kalimantan Tengah", "Kalimantan Selatan"
WEST_TILE, EAST_TILE = MapTile(50, -70, 100), MapTile(50, -70, 101)
#: The edge shared by the two tiles, in degrees (pieces are placed relative to it).
SEAM = 114.475


def piece(tile: MapTile, k: int, province: str, west: float, east: float, logits: list[float],
          n_pixels: int, touches_edge: bool = False) -> dict:
    return {"piece_id": f"{tile.tile_id}_{k:04d}", "tile_id": tile.tile_id, "loss_year": 2015,
            "province": province, "n_pixels": n_pixels, "touches_edge": touches_edge,
            **dict(zip(LOGIT_COLUMNS, logits, strict=True)), "logit_weight": float(n_pixels),
            "band_mean": np.zeros(6), "band_var": np.ones(6), "aux_values": np.zeros(0),
            "scene_ids": "LC08_A", "scene_dates": "2016-05-01", "model_id": "m1",
            "geometry": box(west, -3.15, east, -3.14)}


def write_part(parts_dir: Path, tile: MapTile, rows: list[dict]) -> Path:
    path = part_path(parts_dir, tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    gpd.GeoDataFrame(rows, crs="EPSG:4326")[PART_COLUMNS].to_parquet(path, index=False)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture
def parts(tmp_path) -> list[Path]:
    """West tile: a KT piece at the seam (plantation 1:3 against the east half), a KS piece
    with no imagery (NaN logits). East tile: the seam piece's other half (smallholder)."""
    nan = float("nan")
    west = write_part(tmp_path / "parts", WEST_TILE, [
        piece(WEST_TILE, 1, KT, SEAM - 0.003, SEAM, [4.0, 0.0, 0.0, 0.0], 100, True),
        piece(WEST_TILE, 2, KS, SEAM - 0.02, SEAM - 0.01, [nan] * 4, 40),
    ])
    east = write_part(tmp_path / "parts", EAST_TILE, [
        piece(EAST_TILE, 1, KT, SEAM, SEAM + 0.001, [0.0, 4.0, 0.0, 0.0], 300, True),
    ])
    return [east, west]


def test_a_part_key_depends_on_what_decides_its_content_only() -> None:
    inputs = {"lossyear": "gfc.tif:1:2"}
    key = parts_key((2013, 2016), "m1", inputs, {"window": 1})
    assert key == parts_key((2013, 2016), "m1", dict(inputs), {"window": 1})
    assert len({key, parts_key((2013, 2017), "m1", inputs, {"window": 1}),
                parts_key((2013, 2016), "m2", inputs, {"window": 1}),
                parts_key((2013, 2016), "m1", {"lossyear": "gfc.tif:1:3"}, {"window": 1}),
                parts_key((2013, 2016), "m1", inputs, {"window": 2})}) == 5
    assert part_path(Path("p"), WEST_TILE) == Path("p/z50") / f"{WEST_TILE.tile_id}.parquet"


def test_the_reader_filters_by_province_in_path_order(parts) -> None:
    east, west = parts
    assert part_provinces(west) == [KS, KT] and part_provinces(east) == [KT]
    assert parts_by_province(parts) == {KT: [east, west], KS: [west]}
    every = read_pieces(parts)
    assert list(every.columns) == PART_COLUMNS and every.crs == "EPSG:4326"
    assert every["piece_id"].tolist() == [f"{WEST_TILE.tile_id}_0001", f"{WEST_TILE.tile_id}_0002",
                                          f"{EAST_TILE.tile_id}_0001"]  # x+0100 before x+0101
    assert read_pieces(parts, KS)["piece_id"].tolist() == [f"{WEST_TILE.tile_id}_0002"]
    empty = read_pieces([])
    assert empty.empty and list(empty.columns) == PART_COLUMNS


def test_a_damaged_or_foreign_part_is_refused_naming_the_file(tmp_path, parts) -> None:
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"PAR1 not really")
    for read in (part_provinces, lambda p: read_pieces([p])):
        with pytest.raises(MapPartError, match=f"{damaged}: unreadable map part"):
            read(damaged)
    foreign = tmp_path / "foreign.parquet"
    read_pieces([parts[0]]).drop(columns=["logit_weight"]).to_parquet(foreign)
    lacks = rf"{foreign}: map part lacks columns \['logit_weight'\]"
    with pytest.raises(MapPartError, match=lacks):
        read_pieces([foreign])
    projected = tmp_path / "projected.parquet"
    read_pieces([parts[0]]).to_crs("EPSG:32750").to_parquet(projected)
    with pytest.raises(MapPartError, match=f"{projected}: map part is in .*UTM zone 50S"):
        read_pieces([projected])
    plain = tmp_path / "plain.parquet"
    pd.DataFrame(read_pieces([parts[0]]).to_wkb()).to_parquet(plain)
    with pytest.raises(MapPartError, match=f"{plain}: map part has no GeoParquet metadata"):
        read_pieces([plain])
    arrow = tmp_path / "arrow.parquet"
    read_pieces([parts[0]]).to_parquet(arrow, geometry_encoding="geoarrow")
    with pytest.raises(MapPartError, match=f"{arrow}: map part geometry is .*, not WKB"):
        read_pieces([arrow])


def test_seam_pieces_merge_into_one_event_and_no_imagery_is_kept_apart(parts, bundle) -> None:
    events, blind = province_events(parts, KT, min_pixels=1, bundle=bundle)
    assert len(events) == 1 and blind.empty
    event = events.iloc[0]
    assert event["n_pixels"] == 400 and event["n_pieces"] == 2
    # Pixel-weighted logits: (100 * [4, 0] + 300 * [0, 4]) / 400 = [1, 3] -> smallholder.
    p = np.exp([1.0, 3.0, 0.0, 0.0]) / np.exp([1.0, 3.0, 0.0, 0.0]).sum()
    assert event["driver"] == "Smallholder agriculture" and event["driver_code"] == 2
    assert event["confidence"] == pytest.approx(p[1])
    assert event["area_ha"] > 0
    events, blind = province_events(parts, KS, min_pixels=1, bundle=bundle)
    assert events.empty and blind["driver_code"].tolist() == [0]
    # The speckle filter applies to the merged event's size, not the pieces'.
    assert province_events(parts, KT, min_pixels=401, bundle=bundle)[0].empty


def test_the_writer_writes_one_geopackage_per_province_and_a_national_one(tmp_path, parts,
                                                                         bundle) -> None:
    provenance = {"run_id": "run-1", "model_id": "m1", "config": "{}"}
    out = tmp_path / "maps"
    out.mkdir()
    gpkgs, extras, events = write_driver_maps(
        parts, bundle, [KT, KS], aoi=None, national=True, out_dir=out, provenance=provenance,
        outputs=MapOutputs(years=(2013, 2016)))
    assert [p.name for p in gpkgs] == ["kalimantan-tengah.gpkg", "kalimantan-selatan.gpkg",
                                       "indonesia.gpkg"]
    assert sorted(p.name for p in extras) == sorted(p.with_suffix(".png").name for p in gpkgs)
    assert sorted(events["driver_code"].tolist()) == [0, 2]  # the blind event is counted
    kt = gpd.read_file(gpkgs[0], layer=DRIVER_MAP_LAYER)
    assert kt["driver"].tolist() == ["Smallholder agriculture"]
    assert kt["run_id"].tolist() == ["run-1"]
    ks_meta = pyogrio.read_info(gpkgs[1], layer=DRIVER_MAP_LAYER)["layer_metadata"]
    assert ks_meta["events_without_imagery"] == f"{WEST_TILE.tile_id}_0002"
    assert ks_meta["province"] == KS and ks_meta["run_id"] == "run-1"
    assert len(gpd.read_file(gpkgs[2], layer=DRIVER_MAP_LAYER)) == 1


def test_an_aoi_gets_one_geopackage_clipped_to_it(tmp_path, parts, bundle) -> None:
    aoi = tmp_path / "seam.geojson"
    gpd.GeoDataFrame(geometry=[box(SEAM - 0.001, -3.2, SEAM + 0.01, -3.1)],
                     crs="EPSG:4326").to_file(aoi)
    gpkgs, _, events = write_driver_maps(
        parts, bundle, [KT, KS], aoi=aoi, national=False, out_dir=tmp_path,
        provenance={"run_id": "r"}, outputs=MapOutputs(years=(2013, 2016)))
    assert [p.name for p in gpkgs] == ["seam.gpkg"]
    mapped = gpd.read_file(gpkgs[0], layer=DRIVER_MAP_LAYER)
    assert len(mapped) == 1 and mapped.total_bounds[0] == pytest.approx(SEAM - 0.001)
    assert events["driver_code"].tolist() == [2]  # the KS piece lies outside the area
