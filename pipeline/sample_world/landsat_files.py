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
    """Write the product under ``root/landsat/<product_id>/``; return its manifest entry."""
    pid = product_id(spec, scene.date)
    rel = Path("landsat") / pid
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    band_files = {str(b): f"{pid}_B{b}.TIF" for b in range(1, 9)}
    for b in range(1, 8):
        write_tif(folder / band_files[str(b)], scene.ms[b - 1], region.grid30, nodata=0)
    write_tif(folder / band_files["8"], scene.pan, region.grid15, nodata=0)
    qa_file = f"{pid}_QA_PIXEL.TIF"
    write_tif(folder / qa_file, scene.qa, region.grid30)
    mtl_file = f"{pid}_MTL.txt"
    text = mtl_text(
        pid,
        processing_date(scene.date),
        scene,
        region,
        (spec.wrs_path, spec.wrs_row),
        band_files,
        qa_file,
    )
    (folder / mtl_file).write_text(text)
    return {
        "product_id": pid,
        "level2": write_level2(root, spec, region, scene),
        "date": scene.date.isoformat(),
        "cloud_cover": scene.cloud_cover,
        "sun_elevation": scene.sun_elevation,
        "sun_azimuth": scene.sun_azimuth,
        "folder": rel.as_posix(),
        "files": {
            **{f"B{b}": (rel / f).as_posix() for b, f in band_files.items()},
            "QA_PIXEL": (rel / qa_file).as_posix(),
            "MTL": (rel / mtl_file).as_posix(),
        },
    }


def write_level2(root: Path, spec: WorldSpec, region: Region, scene: Scene) -> dict[str, Any]:
    """The acquisition's L2SP product under ``root/landsat/<product_id>/``; its manifest."""
    pid = product_id(spec, scene.date, "L2SP")
    rel = Path("landsat") / pid
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    band_files = {str(b): f"{pid}_SR_B{b}.TIF" for b in range(1, 8)}
    for b in range(1, 8):
        write_tif(folder / band_files[str(b)], scene.sr[b - 1], region.grid30, nodata=0)
    qa_file = f"{pid}_QA_PIXEL.TIF"
    write_tif(folder / qa_file, scene.qa, region.grid30)
    mtl_file = f"{pid}_MTL.txt"
    (folder / mtl_file).write_text(mtl_text(pid, processing_date(scene.date), scene, region,
                                            (spec.wrs_path, spec.wrs_row), band_files,
                                            qa_file, level="L2SP"))
    return {
        "product_id": pid,
        "folder": rel.as_posix(),
        "files": {
            **{f"SR_B{b}": (rel / f).as_posix() for b, f in band_files.items()},
            "QA_PIXEL": (rel / qa_file).as_posix(),
            "MTL": (rel / mtl_file).as_posix(),
        },
    }
