"""The sample world generator: formats match the real products, and the drivers are learnable."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio import features
from scipy import ndimage

from pipeline.core.drivers import DRIVER_CLASSES, FINE_TO_MERGED
from pipeline.sample_world import WorldExistsError, WorldSpec, generate_world

C2_ID = re.compile(r"^LC08_(?:L1TP|L2SP)_(\d{3})(\d{3})_(\d{8})_(\d{8})_02_T1$")
RELEASE_COLUMNS = ["label", "merged_label", "latitude", "longitude", "year", "example_path"]
FILL, DILATED, CLOUD, SHADOW, CLEAR, WATER = 1, 1 << 1, 1 << 3, 1 << 4, 1 << 6, 1 << 7


def parse_odl(text: str) -> dict:
    """A tiny ODL reader: nested dicts of GROUPs, values as strings without quotes."""
    root: dict = {}
    stack = [root]
    for line in text.splitlines():
        line = line.strip()
        if not line or line == "END":
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        if key == "GROUP":
            stack[-1][value] = {}
            stack.append(stack[-1][value])
        elif key == "END_GROUP":
            stack.pop()
        else:
            stack[-1][key] = value.strip('"')
    assert stack == [root], "unbalanced GROUP/END_GROUP"
    return root


@pytest.fixture(scope="module")
def manifest(tiny_world: Path) -> dict:
    return json.loads(tiny_world.read_text())


@pytest.fixture(scope="module")
def root(tiny_world: Path) -> Path:
    return tiny_world.parent


def read(path: Path) -> tuple[np.ndarray, rasterio.profiles.Profile]:
    with rasterio.open(path) as src:
        return src.read(), src.profile


def test_manifest_records_spec_region_and_every_output(manifest: dict, root: Path) -> None:
    assert manifest["spec"] == WorldSpec.tiny().to_json()
    assert manifest["province"] == "Kalimantan Tengah"
    assert manifest["epsg"] == 32649
    assert manifest["min_event_pixels"] == 6
    west, south, east, north = manifest["region"]["bbox_lonlat"]
    assert west < 113.55 < east and south < -1.95 < north
    for rel in manifest["paths"].values():
        assert (root / rel).is_file(), rel
    for scene in manifest["scenes"]:
        for rel in scene["files"].values():
            assert (root / rel).is_file(), rel
    assert manifest["events"]["total"] == 12
    assert set(manifest["events"]["by_class"].values()) == {3}
    text = (root / "manifest.json").read_text()
    assert not re.search(r"\d{2}:\d{2}:\d{2}", text), "manifest must not hold timestamps"


def test_scene_files_have_collection2_names(manifest: dict, root: Path) -> None:
    ids = sorted(p.name for p in (root / "landsat").iterdir())
    assert len(ids) == 6  # each acquisition as USGS serves it: Level-1 and Level-2
    for pid in ids:
        m = C2_ID.match(pid)
        assert m and m.group(1, 2) == ("118", "062")
        assert m.group(4) > m.group(3)  # processed after acquisition
        names = {p.name for p in (root / "landsat" / pid).iterdir()}
        if "_L1TP_" in pid:
            bands = {f"{pid}_B{b}.TIF" for b in range(1, 9)}
        else:
            bands = {f"{pid}_SR_B{b}.TIF" for b in range(1, 8)}
        assert names == bands | {f"{pid}_QA_PIXEL.TIF", f"{pid}_MTL.txt"}
    assert {s["level2"]["product_id"] for s in manifest["scenes"]} == {
        pid for pid in ids if "_L2SP_" in pid}


def test_scene_grids_are_usgs_utm_30m_with_aligned_15m_pan(manifest: dict, root: Path) -> None:
    scene = manifest["scenes"][0]
    with (
        rasterio.open(root / scene["files"]["B4"]) as ms,
        rasterio.open(root / scene["files"]["B8"]) as pan,
    ):
        # USGS's convention: the northern zone, negative northings south of the equator.
        assert ms.crs.to_epsg() == 32649 and pan.crs.to_epsg() == 32649
        assert ms.transform.f < 0
        assert ms.dtypes == ("uint16",) and pan.dtypes == ("uint16",)
        assert ms.res == (30.0, 30.0) and pan.res == (15.0, 15.0)
        assert ms.transform.c % 30 == 0 and ms.transform.f % 30 == 0
        assert (pan.transform.c, pan.transform.f) == (ms.transform.c, ms.transform.f)
        assert pan.shape == (2 * ms.height, 2 * ms.width)
        assert ms.compression.name == "deflate"
    for band in ("B1", "B7", "QA_PIXEL"):
        with rasterio.open(root / scene["files"][band]) as src:
            assert src.shape == ms.shape and src.transform == ms.transform


def test_mtl_parses_and_matches_the_tiffs(manifest: dict, root: Path) -> None:
    for scene in manifest["scenes"]:
        mtl = parse_odl((root / scene["files"]["MTL"]).read_text())["LANDSAT_METADATA_FILE"]
        contents, image = mtl["PRODUCT_CONTENTS"], mtl["IMAGE_ATTRIBUTES"]
        proj, rescale = mtl["PROJECTION_ATTRIBUTES"], mtl["LEVEL1_RADIOMETRIC_RESCALING"]
        assert "LEVEL1_PROJECTION_PARAMETERS" in mtl
        pid = contents["LANDSAT_PRODUCT_ID"]
        assert pid == scene["product_id"] and contents["PROCESSING_LEVEL"] == "L1TP"
        folder = root / scene["folder"]
        for b in range(1, 9):
            assert (folder / contents[f"FILE_NAME_BAND_{b}"]).is_file()
        assert (folder / contents["FILE_NAME_QUALITY_L1_PIXEL"]).is_file()
        assert contents["FILE_NAME_METADATA_ODL"] == f"{pid}_MTL.txt"
        assert image["DATE_ACQUIRED"] == scene["date"]
        assert (image["WRS_PATH"], image["WRS_ROW"]) == ("118", "62")
        assert 50.0 <= float(image["SUN_ELEVATION"]) <= 66.0
        assert 30.0 <= float(image["SUN_AZIMUTH"]) <= 90.0
        assert proj["UTM_ZONE"] == "49"
        for b in range(1, 10):
            assert float(rescale[f"REFLECTANCE_MULT_BAND_{b}"]) == 2.0e-05
            assert float(rescale[f"REFLECTANCE_ADD_BAND_{b}"]) == -0.1

        with rasterio.open(folder / contents["FILE_NAME_BAND_4"]) as src:
            b = src.bounds
            assert (int(proj["REFLECTIVE_LINES"]), int(proj["REFLECTIVE_SAMPLES"])) == src.shape
        assert int(proj["PANCHROMATIC_LINES"]) == 2 * int(proj["REFLECTIVE_LINES"])
        # USGS corners are the centres of the corner pixels.
        assert float(proj["CORNER_UL_PROJECTION_X_PRODUCT"]) == b.left + 15
        assert float(proj["CORNER_UL_PROJECTION_Y_PRODUCT"]) == b.top - 15
        assert float(proj["CORNER_LR_PROJECTION_X_PRODUCT"]) == b.right - 15
        assert float(proj["CORNER_LR_PROJECTION_Y_PRODUCT"]) == b.bottom + 15
        west, south, east, north = manifest["region"]["bbox_lonlat"]
        assert west <= float(proj["CORNER_UL_LON_PRODUCT"]) <= east
        assert south <= float(proj["CORNER_LR_LAT_PRODUCT"]) <= north

        qa = read(folder / contents["FILE_NAME_QUALITY_L1_PIXEL"])[0][0]
        valid = qa != FILL
        cloud_pct = 100.0 * ((qa & CLOUD) > 0)[valid].mean()
        assert abs(float(image["CLOUD_COVER"]) - cloud_pct) <= 0.01
        assert float(image["CLOUD_COVER"]) == scene["cloud_cover"]


def test_qa_pixel_semantics_and_cloud_targets(manifest: dict, root: Path) -> None:
    spec = WorldSpec.tiny()
    for scene, target in zip(manifest["scenes"], spec.scene_cloud_cover, strict=True):
        qa = read(root / scene["files"]["QA_PIXEL"])[0][0]
        dn = read(root / scene["files"]["B5"])[0][0]
        fill = (qa & FILL) > 0
        assert np.array_equal(fill, dn == 0)
        assert np.all(qa[fill] == 1)
        assert 0 < fill.mean() < 0.05  # a slanted no-data edge, as on real WRS-2 scenes
        cloud, dilated, clear = (qa & CLOUD) > 0, (qa & DILATED) > 0, (qa & CLEAR) > 0
        assert not np.any(clear & (cloud | dilated | fill))
        assert np.array_equal(clear, ~fill & ~cloud & ~dilated)
        assert not np.any(((qa & WATER) > 0) & ~clear)
        assert not np.any(cloud & ((qa & SHADOW) > 0))
        assert abs(scene["cloud_cover"] - 100 * target) < 1.0
        if target > 0:
            assert dilated.any() and ((qa & SHADOW) > 0).any()
    assert any(
        ((read(root / s["files"]["QA_PIXEL"])[0][0] & WATER) > 0).any() for s in manifest["scenes"]
    )


def test_dn_decode_to_realistic_forest_reflectance(manifest: dict, root: Path) -> None:
    scene = min(manifest["scenes"], key=lambda s: s["cloud_cover"])
    qa = read(root / scene["files"]["QA_PIXEL"])[0][0]
    usable = ((qa & CLEAR) > 0) & ((qa & (SHADOW | WATER)) == 0)
    sin_e = math.sin(math.radians(scene["sun_elevation"]))
    medians = {}
    for band in ("B2", "B3", "B4", "B5", "B6", "B7"):
        dn = read(root / scene["files"][band])[0][0].astype(float)
        medians[band] = float(np.median((2.0e-05 * dn[usable] - 0.1) / sin_e))
    # The landscape is mostly intact forest: dark visible, bright NIR.
    assert 0.02 < medians["B4"] < 0.06
    assert 0.24 < medians["B5"] < 0.36
    assert 0.10 < medians["B6"] < 0.20
    assert medians["B3"] > medians["B4"]


def test_lossyear_is_hansen_format_with_one_component_per_event(manifest: dict, root: Path) -> None:
    loss, profile = read(root / manifest["paths"]["gfc_lossyear"])
    loss = loss[0]
    assert profile["dtype"] == "uint8" and profile["nodata"] is None
    assert profile["crs"].to_epsg() == 4326
    t = profile["transform"]
    assert math.isclose(t.a, 0.00025) and math.isclose(-t.e, 0.00025)
    assert math.isclose(t.c / 0.00025, round(t.c / 0.00025), abs_tol=1e-6)
    assert math.isclose(t.f / 0.00025, round(t.f / 0.00025), abs_tol=1e-6)
    events = gpd.read_file(root / manifest["paths"]["loss_regions"], layer="loss_regions")
    per_year = Counter(int(y) for y in events["year"])
    specks = 0
    for code in np.unique(loss[loss > 0]):
        labels, _ = ndimage.label(loss == code, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        big = sizes >= manifest["min_event_pixels"]
        assert big.sum() == per_year[2000 + int(code)]
        assert np.all(sizes[big] >= 20)
        specks += int((~big).sum())
    assert 3 <= specks <= 6
    # Every event's CSV point falls on loss of its own year.
    inv = ~t
    for _, e in events.iterrows():
        col, row = (int(v) for v in inv @ (e["longitude"], e["latitude"]))
        assert loss[row, col] == e["year"] - 2000


def test_treecover_and_auxiliary_rasters(manifest: dict, root: Path) -> None:
    cover, profile = read(root / manifest["paths"]["gfc_treecover2000"])
    assert profile["dtype"] == "uint8" and profile["nodata"] is None
    assert cover.max() <= 100 and np.median(cover) >= 80 and cover.min() < 30
    west, south, east, north = manifest["region"]["bbox_lonlat"]
    margin_lat = 3000 / 111_320
    margin_lon = margin_lat / math.cos(math.radians(south))

    dem, profile = read(root / manifest["paths"]["srtm_dem"])
    assert profile["dtype"] == "int16" and profile["nodata"] == -32768
    assert math.isclose(profile["transform"].a, 1 / 3600)
    valid = dem[dem != -32768]
    assert 0 < (dem == -32768).sum() < 100 and valid.min() >= 10 and valid.max() <= 250
    with rasterio.open(root / manifest["paths"]["srtm_dem"]) as src:
        b = src.bounds
    assert b.left <= west - margin_lon and b.right >= east + margin_lon
    assert b.bottom <= south - margin_lat and b.top >= north + margin_lat

    with rasterio.open(root / manifest["paths"]["climate"]) as src:
        assert src.count == 2 and src.dtypes == ("float32", "float32")
        assert src.nodata == -9999 and math.isclose(src.res[0], 1 / 120)
        assert src.descriptions == ("annual_precipitation_mm", "mean_temperature_c")
        precip, temp = src.read()
    assert precip.min() > 1500 and precip.max() < 4500 and 24 < temp.min() < temp.max() < 29


def test_vector_layers(manifest: dict, root: Path) -> None:
    roads = gpd.read_file(root / manifest["paths"]["roads"], layer="roads")
    assert roads.crs.to_epsg() == 4326 and set(roads.geom_type) == {"LineString"}
    assert roads["osm_id"].dtype == np.int64
    assert set(roads["highway"]) <= {"primary", "secondary", "track"}
    towns = gpd.read_file(root / manifest["paths"]["settlements"], layer="settlements")
    assert set(towns.geom_type) == {"Point"} and set(towns["place"]) <= {"town", "village"}
    assert (towns["population"] > 0).all()
    peat = gpd.read_file(root / manifest["paths"]["peat"], layer="peat")
    assert set(peat.geom_type) <= {"Polygon", "MultiPolygon"} and peat["peat_depth_class"].all()
    events = gpd.read_file(root / manifest["paths"]["loss_regions"], layer="loss_regions")
    on_peat = events.intersects(peat.union_all())
    assert on_peat.any() and not on_peat.all()


def test_event_csvs_follow_the_release_schema(manifest: dict, root: Path) -> None:
    rows = {}
    for split in ("train", "val", "test"):
        with (root / manifest["paths"][f"events_{split}"]).open(newline="") as f:
            reader = csv.reader(f)
            assert next(reader) == RELEASE_COLUMNS
            rows[split] = list(reader)
        for label, merged, lat, lon, year, path in rows[split]:
            assert FINE_TO_MERGED[label] == merged
            assert re.fullmatch(r"-?\d+\.\d{6}", lat) and re.fullmatch(r"-?\d+\.\d{6}", lon)
            assert int(year) in WorldSpec.tiny().loss_years
            assert path == f"examples/{lat}_{lon}"
        assert len(rows[split]) == manifest["events"]["by_split"][split]
    assert {r[1] for r in rows["train"]} == set(DRIVER_CLASSES)

    events = gpd.read_file(root / manifest["paths"]["loss_regions"], layer="loss_regions")
    assert list(events.columns[:-1]) == [
        "event_id",
        "label",
        "merged_label",
        "year",
        "split",
        "latitude",
        "longitude",
        "area_ha",
    ]
    assert events["event_id"].is_unique and events.crs.to_epsg() == 4326
    inside = gpd.points_from_xy(events["longitude"], events["latitude"])
    assert all(poly.contains(pt) for poly, pt in zip(events.geometry, inside, strict=True))
    # Events keep >= 600 m apart (checked in UTM).
    utm = events.to_crs(32649)
    gaps = [a.distance(b) for i, a in enumerate(utm.geometry) for b in utm.geometry[i + 1 :]]
    assert min(gaps) >= 600


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generation_is_deterministic(tiny_world: Path, tmp_path: Path) -> None:
    again = generate_world(tmp_path / "again", WorldSpec.tiny())
    assert _hashes(again.parent) == _hashes(tiny_world.parent)
    assert not list(tmp_path.glob(".again.partial-*"))


def test_rerun_is_idempotent_and_other_specs_are_refused(tiny_world: Path, tmp_path: Path) -> None:
    # A rerun writes nothing: every file keeps its modification time.
    before = {p: p.stat().st_mtime_ns for p in tiny_world.parent.rglob("*") if p.is_file()}
    assert generate_world(tiny_world.parent, WorldSpec.tiny()) == tiny_world
    after = {p: p.stat().st_mtime_ns for p in tiny_world.parent.rglob("*") if p.is_file()}
    assert after == before
    with pytest.raises(WorldExistsError, match=re.escape(str(tiny_world.parent))):
        generate_world(tiny_world.parent, WorldSpec(seed=7, size_km=8.0, n_events=12))
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("not a world")
    with pytest.raises(WorldExistsError, match=re.escape(str(stray))):
        generate_world(stray, WorldSpec.tiny())


def test_failed_generation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.sample_world import world

    def boom(root: Path, spec: WorldSpec) -> None:
        (root / "half-written.tif").write_bytes(b"x")
        raise RuntimeError("disk full")

    monkeypatch.setattr(world, "_build", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_world(tmp_path / "w", WorldSpec.tiny())
    assert list(tmp_path.iterdir()) == []


def test_drivers_differ_in_spectrum_and_texture(manifest: dict, root: Path) -> None:
    """What a CNN needs: per-class NIR/SWIR levels and local texture that differ clearly."""
    scene = min(manifest["scenes"], key=lambda s: s["cloud_cover"])
    sin_e = math.sin(math.radians(scene["sun_elevation"]))

    def toa(band: str) -> np.ndarray:
        return (2.0e-05 * read(root / scene["files"][band])[0][0] - 0.1) / sin_e

    red, nir, swir1, swir2 = toa("B4"), toa("B5"), toa("B6"), toa("B7")
    qa = read(root / scene["files"]["QA_PIXEL"])[0][0]
    usable = ((qa & CLEAR) > 0) & ((qa & SHADOW) == 0)
    texture = red - ndimage.gaussian_filter(red, 1.0)  # high-pass: field/row/road structure
    with rasterio.open(root / scene["files"]["B4"]) as src:
        transform, crs, shape = src.transform, src.crs, src.shape
    events = gpd.read_file(root / manifest["paths"]["loss_regions"]).to_crs(crs)
    stats: dict[str, list[np.ndarray]] = {c: [] for c in DRIVER_CLASSES}
    for _, e in events.iterrows():
        mask = features.rasterize([e.geometry], out_shape=shape, transform=transform) > 0
        mask = ndimage.binary_erosion(mask) & usable
        assert mask.sum() >= 10, e["event_id"]
        stats[e["merged_label"]].append(
            np.array(
                [nir[mask].mean(), swir1[mask].mean(), swir2[mask].mean(), texture[mask].std()]
            )
        )
    mean = {c: np.mean(v, axis=0) for c, v in stats.items()}
    plant, small, grass, other = (mean[c] for c in DRIVER_CLASSES)
    # Grassland is smooth; smallholder mosaics are the roughest; plantations sit in between.
    assert grass[3] < 0.5 * min(plant[3], small[3], other[3])
    assert small[3] > 1.2 * plant[3]
    # Bare soil and burn scars: smallholder plots have the highest SWIR2/NIR among the
    # vegetated drivers; grassland the lowest.
    ratio = {c: m[2] / m[0] for c, m in mean.items()}
    assert ratio["Smallholder agriculture"] > ratio["Plantation"] > ratio["Grassland shrubland"]
    # Every pair of classes differs by >= 15 % in at least one of NIR, SWIR1, SWIR2, texture.
    for i, a in enumerate(DRIVER_CLASSES):
        for b in DRIVER_CLASSES[i + 1 :]:
            rel = np.abs(mean[a] - mean[b]) / np.maximum(mean[a], mean[b])
            assert rel.max() >= 0.15, (a, b, rel)
