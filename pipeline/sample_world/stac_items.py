"""STAC Items of the sample world's products, laid out as real catalogs lay them out.

Level-1 items follow the USGS LandsatLook layout (collection ``landsat-c2l1``; keys
``blue`` ... ``pan``, ``qa_pixel``, ``mtl.txt``); Level-2 items follow Planetary
Computer's (collection ``landsat-c2-l2``; keys ``nir08``, ``swir16``, ...). Both carry
``eo:bands``, ``raster:bands`` and ``proj:*``; ``proj:code`` gives the southern-hemisphere
EPSG code, as some catalogs do for southern scenes, while the files are in the northern
zone (USGS's convention), so a reader that trusts ``proj:code`` alone is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

import rasterio
from rasterio.warp import transform_bounds

#: Band suffix -> (asset key, common name), per level.
_L1_KEYS = {"B1": ("coastal", "coastal"), "B2": ("blue", "blue"), "B3": ("green", "green"),
            "B4": ("red", "red"), "B5": ("nir08", "nir08"), "B6": ("swir16", "swir16"),
            "B7": ("swir22", "swir22"), "B8": ("pan", "pan")}
_L2_KEYS = {f"SR_{band}": key for band, key in _L1_KEYS.items() if band != "B8"}
COLLECTIONS = {"L1": "landsat-c2l1", "L2": "landsat-c2-l2"}


def product_item(files: dict[str, str], world: Path, base_url: str, level: str,
                 date: str, cloud_cover: float, wrs: tuple[int, int]) -> dict:
    """One product's Item; asset hrefs are ``base_url`` + the files' paths in the world."""
    keys = _L1_KEYS if level == "L1" else _L2_KEYS
    mtl = files["MTL"]
    pid = Path(mtl).name.removesuffix("_MTL.txt")
    with rasterio.open(world / files["QA_PIXEL"]) as src:
        epsg, bounds, shape = src.crs.to_epsg(), src.bounds, src.shape
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *bounds)
    assets: dict[str, dict] = {}
    for suffix, (key, common) in keys.items():
        band = suffix.removeprefix("SR_")
        assets[key] = {
            "href": f"{base_url}/{files[suffix]}", "roles": ["data"],
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "eo:bands": [{"name": band, "common_name": common}],
            "raster:bands": [{"nodata": 0, "data_type": "uint16",
                              "spatial_resolution": 15 if band == "B8" else 30}],
        }
    assets["qa_pixel"] = {"href": f"{base_url}/{files['QA_PIXEL']}", "roles": ["cloud"],
                          "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
    assets["mtl.txt"] = {"href": f"{base_url}/{mtl}", "roles": ["metadata"],
                         "type": "text/plain"}
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": pid,
        "collection": COLLECTIONS[level],
        "geometry": {"type": "Polygon", "coordinates": [[
            [west, south], [east, south], [east, north], [west, north], [west, south]]]},
        "bbox": [west, south, east, north],
        "properties": {
            "datetime": f"{date}T02:30:00Z", "platform": "landsat-8",
            "instruments": ["oli", "tirs"], "eo:cloud_cover": cloud_cover,
            "landsat:wrs_path": f"{wrs[0]:03d}", "landsat:wrs_row": f"{wrs[1]:03d}",
            "proj:code": f"EPSG:{327 * 100 + epsg % 100}", "proj:shape": list(shape),
        },
        "links": [], "assets": assets,
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        ],
    }


def write_stac_items(world: Path, out: Path, base_urls: dict[str, str]) -> Path:
    """Write every product of the world as Items, in one FeatureCollection file at ``out``;
    ``base_urls`` maps each level ("L1", "L2") to where the world's files are served."""
    manifest = json.loads((world / "manifest.json").read_text())
    wrs = tuple(int(v) for v in (manifest["spec"]["wrs_path"], manifest["spec"]["wrs_row"]))
    items = []
    for scene in manifest["scenes"]:
        items.append(product_item(scene["files"], world, base_urls["L1"], "L1", scene["date"],
                                  scene["cloud_cover"], wrs))
        items.append(product_item(scene["level2"]["files"], world, base_urls["L2"], "L2",
                                  scene["date"], scene["cloud_cover"], wrs))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return out
