"""Tests for the bundled province boundaries: 38 provinces, valid geometry, name lookups."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import Point

from pipeline.core.grid import EQUAL_AREA_CRS
from pipeline.core.provinces import (
    BOUNDARIES,
    UnknownProvinceError,
    province_names,
    province_of,
    provinces,
    select_provinces,
    slug,
    union,
)


def test_38_provinces_keyed_by_unique_names() -> None:
    table = provinces()
    assert len(table) == 38
    assert table["province"].is_unique
    assert province_names() == sorted(province_names())
    # Since the 2022 split, Papua is six provinces; their codes repeat, their names do not.
    papua = [n for n in province_names() if n.startswith("Papua")]
    assert sorted(papua) == [
        "Papua", "Papua Barat", "Papua Barat Daya", "Papua Pegunungan", "Papua Selatan",
        "Papua Tengah",
    ]
    assert table.crs is not None and table.crs.to_epsg() == 4326


def test_all_geometries_valid_after_repair() -> None:
    raw = gpd.read_file(BOUNDARIES)
    broken = set(raw.loc[~raw.is_valid, "PROVINSI"])
    assert {"Papua Barat", "Maluku"} <= broken  # the defects the repair exists for
    table = provinces()
    assert table.is_valid.all()
    assert set(table.geom_type) <= {"Polygon", "MultiPolygon"}
    km2 = table.set_index("province").to_crs(EQUAL_AREA_CRS).area / 1e6
    raw_km2 = raw.set_index("PROVINSI").to_crs(EQUAL_AREA_CRS).area / 1e6
    assert (km2 > 500).all()  # DKI Jakarta, the smallest, is about 660 km2
    # Indonesia's land area is about 1.9 million km2.
    assert km2.sum() == pytest.approx(1.9e6, rel=0.05)
    # Repair fixes rings without dropping land.
    for name in broken:
        assert km2[name] == pytest.approx(raw_km2[name], rel=0.01), name


@pytest.mark.parametrize(
    ("name", "lon", "lat"),
    [
        ("Papua Barat", 134.06, -0.86),  # Manokwari
        ("Maluku", 128.18, -3.66),  # Ambon
        ("Kalimantan Tengah", 113.92, -2.21),  # Palangka Raya
    ],
)
def test_repaired_provinces_hold_their_capitals(name: str, lon: float, lat: float) -> None:
    geometry = select_provinces([name]).geometry.iloc[0]
    assert geometry.contains(Point(lon, lat))


def test_select_is_case_insensitive_and_strips_spaces() -> None:
    chosen = select_provinces(["kalimantan tengah", "  RIAU "])
    assert sorted(chosen["province"]) == ["Kalimantan Tengah", "Riau"]
    assert len(chosen) == 2


def test_select_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownProvinceError, match="Kalimantan Tengh") as info:
        select_provinces(["Riau", "Kalimantan Tengh"])
    assert "did you mean" in str(info.value)
    assert "Kalimantan Tengah" in str(info.value)


def test_select_unknown_name_without_suggestion() -> None:
    with pytest.raises(UnknownProvinceError, match="'Qqqq'") as info:
        select_provinces(["Qqqq"])
    assert "did you mean" not in str(info.value)


def test_province_of_land_and_sea() -> None:
    points = gpd.GeoSeries(
        [Point(113.55, -1.95), Point(110.0, -10.0), Point(101.45, 0.5)], index=[7, 3, 5]
    )
    assert province_of(points) == ["Kalimantan Tengah", None, "Riau"]


def test_union_covers_selected_provinces() -> None:
    chosen = select_provinces(["Riau", "Jambi"])
    merged = union(chosen)
    assert merged.is_valid
    area = gpd.GeoSeries([merged], crs=chosen.crs).to_crs(EQUAL_AREA_CRS).area.iloc[0]
    assert area == pytest.approx(chosen.to_crs(EQUAL_AREA_CRS).area.sum(), rel=1e-3)
    assert merged.contains(Point(101.45, 0.5))  # Pekanbaru, Riau
    assert merged.contains(Point(103.6, -1.6))  # Jambi city


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Kalimantan Tengah", "kalimantan-tengah"),
        ("DKI Jakarta", "dki-jakarta"),
        ("Daerah Istimewa Yogyakarta", "daerah-istimewa-yogyakarta"),
        ("  Papua Barat Daya ", "papua-barat-daya"),
        ("Nusa Tenggara Barat (NTB)", "nusa-tenggara-barat-ntb"),
    ],
)
def test_slug(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_slugs_are_unique() -> None:
    slugs = [slug(n) for n in province_names()]
    assert len(set(slugs)) == 38
