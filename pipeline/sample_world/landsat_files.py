"""Write one scene as the two Landsat 8 Collection 2 product folders USGS serves for an
acquisition: Level-1 (L1TP: B1-B8, QA_PIXEL, MTL) and Level-2 (L2SP: SR_B1-SR_B7,
QA_PIXEL, MTL with the surface-reflectance rescaling)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .mtl import mtl_text
from .rasters import write_tif
from .region import Region
from .scenes import Scene
from .spec import WorldSpec

#: Regex of the Collection 2 product id, for readers and tests.
PRODUCT_ID_RE = r"^LC08_L1TP_(\d{3})(\d{3})_(\d{8})_(\d{8})_02_T1$"


def processing_date(acquired: date) -> date:
    """A fixed, deterministic C2 processing date after the acquisition.

    USGS reprocessed the archive into Collection 2 in late 2020; later scenes are
    processed a couple of weeks after acquisition.
    """
    if acquired < date(2020, 8, 1):
        return date(2020, 8, 1) + timedelta(days=acquired.toordinal() % 120)
    return acquired + timedelta(days=16)


def product_id(spec: WorldSpec, acquired: date, level: str = "L1TP") -> str:
    proc = processing_date(acquired)
    return (f"LC08_{level}_{spec.wrs_path:03d}{spec.wrs_row:03d}_{acquired:%Y%m%d}_"
            f"{proc:%Y%m%d}_02_T1")


def write_scene(root: Path, spec: WorldSpec, region: Region, scene: Scene) -> dict[str, Any]:
    """Write the acquisition's L1TP product (and its L2SP, under ``level2``) below
    ``root/landsat/``; return its manifest entry."""
    bands = {f"B{b}": (scene.ms[b - 1], region.grid30) for b in range(1, 8)}
    bands["B8"] = (scene.pan, region.grid15)
    level1 = _write_product(root, spec, region, scene, "L1TP", bands)
    return {
        "product_id": level1["product_id"],
        "level2": _write_product(root, spec, region, scene, "L2SP", {
            f"SR_B{b}": (scene.sr[b - 1], region.grid30) for b in range(1, 8)}),
        "date": scene.date.isoformat(),
        "cloud_cover": scene.cloud_cover,
        "sun_elevation": scene.sun_elevation,
        "sun_azimuth": scene.sun_azimuth,
        "folder": level1["folder"],
        "files": level1["files"],
    }


def _write_product(root: Path, spec: WorldSpec, region: Region, scene: Scene, level: str,
                   bands: dict[str, tuple]) -> dict[str, Any]:
    """One product folder: ``bands`` (file suffix -> (DN, grid)), QA_PIXEL and the MTL."""
    pid = product_id(spec, scene.date, level)
    rel = Path("landsat") / pid
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    files = {suffix: f"{pid}_{suffix}.TIF" for suffix in bands}
    for suffix, (dn, grid) in bands.items():
        write_tif(folder / files[suffix], dn, grid, nodata=0)
    files["QA_PIXEL"] = f"{pid}_QA_PIXEL.TIF"
    write_tif(folder / files["QA_PIXEL"], scene.qa, region.grid30)
    files["MTL"] = f"{pid}_MTL.txt"
    # The MTL names band files by number: B4 and SR_B4 are both band 4.
    numbered = {suffix.rsplit("B", 1)[1]: files[suffix] for suffix in bands}
    (folder / files["MTL"]).write_text(mtl_text(
        pid, processing_date(scene.date), scene, region, (spec.wrs_path, spec.wrs_row),
        numbered, files["QA_PIXEL"], level=level))
    return {"product_id": pid, "folder": rel.as_posix(),
            "files": {key: (rel / name).as_posix() for key, name in files.items()}}
