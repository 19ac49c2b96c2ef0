"""Indonesia's 38 provinces (bundled, CC BY 4.0; see data/ATTRIBUTION.md), keyed by name."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from pipeline.core.errors import ForestNetError

BOUNDARIES = Path(__file__).parent / "data" / "indonesia-38-provinces.geojson"


class UnknownProvinceError(ForestNetError, ValueError):
    """A province name that matches none of the 38."""


@lru_cache(maxsize=1)
def provinces() -> gpd.GeoDataFrame:
    """Provinces with repaired geometry. Keyed by name: ``KODE_PROV`` is not unique."""
    frame = gpd.read_file(BOUNDARIES)
    frame["geometry"] = frame.geometry.make_valid()
    frame = frame.rename(columns={"PROVINSI": "province", "KODE_PROV": "code"})
    return frame[["province", "code", "geometry"]].sort_values("province").reset_index(drop=True)


def province_names() -> list[str]:
    return provinces()["province"].tolist()


def select_provinces(names: list[str]) -> gpd.GeoDataFrame:
    """Provinces by name, case-insensitively; unknown names get suggestions."""
    table = provinces()
    lookup = {n.lower(): n for n in table["province"]}
    chosen = []
    for name in names:
        key = name.strip().lower()
        if key not in lookup:
            close = difflib.get_close_matches(key, list(lookup), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(lookup[c] for c in close)}?" if close else ""
            raise UnknownProvinceError(f"unknown province {name!r}{hint}")
        chosen.append(lookup[key])
    return table[table["province"].isin(chosen)].reset_index(drop=True)


def province_of(points: gpd.GeoSeries) -> list[str | None]:
    """The province holding each point (the first by name where borders overlap)."""
    table = provinces()
    joined = gpd.sjoin(gpd.GeoDataFrame(geometry=points, crs="EPSG:4326"), table,
                       how="left", predicate="within")
    joined = joined[~joined.index.duplicated(keep="first")]
    return [p if isinstance(p, str) else None for p in joined["province"].reindex(points.index)]


def union(frame: gpd.GeoDataFrame) -> BaseGeometry:
    return unary_union(list(frame.geometry))


def slug(name: str) -> str:
    """File-safe province name: ``Kalimantan Tengah`` -> ``kalimantan-tengah``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
