"""STAC Items of Landsat Collection 2 products -> ``ProductSource``.

Bands are matched by the file name's USGS suffix (``_SR_B4``, ``_B8``, ``_QA_PIXEL``,
``_MTL.txt``), then by ``eo:bands``, and only then by asset key: USGS (``blue``,
``nir08``), Earth Search and Planetary Computer (``nir08``, ``swir16``) and older
``SR_B4`` / ``B4`` keys name the same assets differently. Hrefs may
be local (absolute, or relative to the item file) or URLs. http(s) URLs stay URLs: they are
read in ranges by ``remote_files`` (retries, re-signing, a byte count); s3 and gs URLs
become GDAL virtual paths (``/vsis3/``, ``/vsigs/``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from pipeline.ingest.landsat import MULTISPECTRAL_BANDS, PAN_BAND, SceneInputError
from pipeline.ingest.mtl import MTL_SUFFIXES, mtl_format
from pipeline.ingest.product_source import ProductSource
from pipeline.ingest.remote_files import is_http, read_text

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_VSI_PREFIX = {"s3": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/", "az": "/vsiaz/",
               "abfs": "/vsiaz/"}
#: Asset keys (lower case) -> our band names.
_KEYS: dict[str, str] = {
    "coastal": "coastal", "blue": "blue", "green": "green", "red": "red",
    "nir08": "nir", "nir": "nir", "swir16": "swir1", "swir1": "swir1",
    "swir22": "swir2", "swir2": "swir2", "pan": "pan", "qa_pixel": "qa_pixel",
    **{f"sr_b{n}": name for n, name in MULTISPECTRAL_BANDS.items()},
    **{f"b{n}": name for n, name in MULTISPECTRAL_BANDS.items()},
    f"b{PAN_BAND}": "pan",
}
#: ``eo:bands`` common names -> our band names.
_COMMON_NAMES = {"coastal": "coastal", "blue": "blue", "green": "green", "red": "red",
                 "nir": "nir", "nir08": "nir", "swir16": "swir1", "swir22": "swir2",
                 "pan": "pan"}
_FILE_BAND = re.compile(r"_(?:SR_)?B(\d)\.TIF$", re.IGNORECASE)


def is_url(text: str) -> bool:
    """True for ``scheme://...`` locations (http, s3, file, ...)."""
    return bool(_URL.match(text))


def gdal_path(location: str) -> str:
    """A path GDAL can open for a local path or an fsspec-style URL."""
    if not is_url(location):
        return location
    scheme, rest = location.split("://", 1)
    scheme = scheme.lower()
    if scheme == "file":
        return unquote(urlparse(location).path)
    if scheme in ("http", "https"):
        return location  # read by remote_files, not GDAL's /vsicurl/
    if scheme in _VSI_PREFIX:
        return f"{_VSI_PREFIX[scheme]}{rest}"
    raise SceneInputError(f"{location}: URL scheme {scheme!r} has no GDAL virtual file system")


def resolve_href(href: str, item_location: str) -> str:
    """An asset's absolute location: relative hrefs resolve against the item's own location."""
    if is_url(href):
        return gdal_path(href) if href.lower().startswith("file://") else href
    if os.path.isabs(href):
        return href
    if is_url(item_location):
        return urljoin(item_location, href)
    return os.path.normpath(os.path.join(os.path.dirname(item_location), href))


def looks_like_item(path: Path) -> bool:
    """A JSON file that is a STAC Item or a collection of Items (not an MTL.json)."""
    if path.stat().st_size > 50 * 2**20:
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") in ("Feature", "FeatureCollection")


def item_sources(location: str) -> list[ProductSource]:
    """One ``ProductSource`` per Item in a STAC Item (or FeatureCollection) JSON file or URL."""
    name = re.sub(r"\.json$", "", os.path.basename(location.rstrip("/")), flags=re.IGNORECASE)
    try:
        data = json.loads(_read_text(location))
    except (OSError, ValueError, ImportError) as exc:
        return [ProductSource(location, name, "stac", error=f"{location}: unreadable STAC Item "
                              f"JSON ({exc})")]
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "Feature":
        return [item_source(data, location, location)]
    if kind == "FeatureCollection":
        return [item_source(item, location, f"{location}#{item.get('id', i)}")
                for i, item in enumerate(data.get("features") or [])]
    return [ProductSource(location, name, "stac",
                          error=f"{location}: not a STAC Item (type {kind!r})")]


def _read_text(location: str) -> str:
    if is_http(location):
        return read_text(location)
    if is_url(location) and not location.lower().startswith("file://"):
        import fsspec

        with fsspec.open(location, "rt") as f:
            return f.read()
    return Path(gdal_path(location)).read_text()


def item_source(item: dict, location: str, origin: str) -> ProductSource:
    """The product of one STAC Item (a dict); relative hrefs resolve against ``location``."""
    item_id = str(item.get("id") or os.path.basename(origin))
    bands: dict[str, tuple[int, str]] = {}
    mtls: dict[str, str] = {}
    for key, asset in (item.get("assets") or {}).items():
        href = asset.get("href") if isinstance(asset, dict) else None
        if not isinstance(href, str):
            continue
        loc = resolve_href(href, location)
        fmt = _mtl_format(key, loc)
        if fmt:
            mtls.setdefault(fmt, loc)
            continue
        hit = _band_of(key, asset, loc)
        if hit and (hit[0] not in bands or hit[1] < bands[hit[0]][0]):
            try:
                bands[hit[0]] = (hit[1], gdal_path(loc))
            except SceneInputError as exc:
                return ProductSource(origin, item_id, "stac", error=str(exc))
    order = list(MTL_SUFFIXES.values())
    metadata = next((mtls[f] for f in order if f in mtls), "")
    error = "" if metadata else (
        f"{origin}: no MTL asset (mtl.txt, mtl.json or mtl.xml); the item cannot be ingested"
    )
    return ProductSource(origin, item_id, "stac", metadata=metadata,
                         assets={b: p for b, (_, p) in bands.items()}, error=error)


def _mtl_format(key: str, location: str) -> str | None:
    lower = key.lower()
    if lower in ("mtl.txt", "mtl.json", "mtl.xml"):
        return lower.split(".")[1]
    return mtl_format(location.split("?")[0])


def _band_of(key: str, asset: dict, location: str) -> tuple[str, int] | None:
    """(band, rank): by the file name's USGS band suffix, then by ``eo:bands`` common name
    or name, and only then by the asset key (catalogs name one asset differently:
    ``red`` / ``SR_B4`` / ``B4``; the file names and band metadata agree)."""
    base = os.path.basename(location.split("?")[0])
    match = _FILE_BAND.search(base)
    if match and int(match.group(1)) in MULTISPECTRAL_BANDS:
        return MULTISPECTRAL_BANDS[int(match.group(1))], 0
    if match and int(match.group(1)) == PAN_BAND:
        return "pan", 0
    if base.upper().endswith("_QA_PIXEL.TIF"):
        return "qa_pixel", 0
    described = [*(asset.get("eo:bands") or []), *(asset.get("bands") or [])]
    for band in described:
        if not isinstance(band, dict):
            continue
        common = band.get("common_name") or band.get("eo:common_name")
        if common in _COMMON_NAMES:
            return _COMMON_NAMES[common], 1
        if str(band.get("name", "")).lower() in _KEYS:
            return _KEYS[str(band["name"]).lower()], 2
    if key.lower() in _KEYS:
        return _KEYS[key.lower()], 3
    return None
