"""Plan one product's scene group from its band files' headers, validated against its MTL.

Paths are anything GDAL opens: local files, ``/vsitar/`` members of USGS bundles, http(s)
URLs (read in ranges by ``remote_files``) or ``/vsis3/`` objects. Every check that can fail
on bad input (missing, truncated or foreign files, a grid that disagrees with the MTL) runs
here, before anything is written, and its message names the file. A layout may hold one
part of a product (``part``): the window of its files that a job's area needs.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox

from pipeline.ingest.landsat import (
    MULTISPECTRAL_BANDS,
    QA_BITS,
    SceneInputError,
    SceneMetadata,
    reflectance_scaling,
)
from pipeline.ingest.remote_files import RemoteReadError, is_http, remote_opener
from pipeline.ingest.scene_parts import CHUNK, Part, part_grid

log = logging.getLogger("pipeline.ingest.scene_ingest")  # one logger for the whole ingest stage

#: Bands a scene must have to be useful for ForestNet chips (coastal is optional).
REQUIRED_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
#: QA value written when a product has no QA_PIXEL band: every pixel "clear".
QA_ALL_CLEAR = np.uint16(1 << QA_BITS["clear"])
#: GDAL settings while a scene is read. Strips read each tile once, so GDAL's block cache
#: (5% of RAM by default) would only hold a decoded copy of the scene: capping it cut the
#: peak memory of a 3,200-pixel scene by ~190 MB at equal speed (bench/bench_ingest.py).
#: No directory listing on open: USGS products have no sidecar files, and listing a
#: remote (/vsicurl/) folder costs a request.
READ_OPTIONS = {"GDAL_CACHEMAX": 64 * 2**20, "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def present_bands(found: dict[str, str], missing: dict[str, str]) -> dict[str, str]:
    """The band paths to read; a required band that is missing is an error naming its file."""
    for band in REQUIRED_BANDS:
        where = missing.get(band)
        if where is None and not _exists(found[band]):
            where = found[band]
        if where is not None:
            raise SceneInputError(f"{where}: missing {band} band file")
    return {b: p for b, p in found.items() if _exists(p)}


def _exists(path: str) -> bool:
    # Virtual paths and URLs are checked when opened (a tar member was checked when listed).
    return path.startswith("/vsi") or is_http(path) or os.path.exists(path)


def multispectral_names(paths: dict[str, str]) -> list[str]:
    """The multispectral bands present, in band-number order."""
    return [b for b in MULTISPECTRAL_BANDS.values() if b in paths]


def store_chunks(shape: tuple[int, int]) -> tuple[int, int]:
    """Zarr chunk edges of a 30 m grid (``CHUNK``, or the whole grid when smaller)."""
    return min(shape[0], CHUNK), min(shape[1], CHUNK)


@dataclass(frozen=True)
class SceneLayout:
    """What a scene group will hold, known from file headers and the MTL (no pixels read).

    ``sources`` lists each stored array's band files in order (``multispectral``: one per
    band; ``qa_pixel``: ``(None,)`` when the product has none, written as all clear).
    ``array_attrs`` holds each array's CF scale/offset, fill value and provenance.
    ``part`` is the window of the band files the group holds (all of them by default).
    """

    geobox: GeoBox  # the stored part's 30 m grid
    pan_box: GeoBox | None  # its 15 m pan grid, Level-1 only
    bands: tuple[str, ...]
    sources: dict[str, tuple[str | None, ...]]
    attrs: dict
    array_attrs: dict[str, dict]
    part: Part = (0, 0, 0, 0)

    def shape(self, name: str) -> tuple[int, ...]:
        """Shape of one stored array."""
        if name == "pan" and self.pan_box is not None:
            return tuple(self.pan_box.shape)
        if name == "multispectral":
            return (len(self.bands), *self.geobox.shape)
        return tuple(self.geobox.shape)

    def offset(self, name: str) -> tuple[int, int]:
        """First row and column of the part in ``name``'s band files (pan: twice as many)."""
        scale = 2 if name == "pan" else 1
        return self.part[0] * scale, self.part[1] * scale


def plan_product(paths: dict[str, str], meta: SceneMetadata, part: Part | None = None
                 ) -> SceneLayout:
    """Validate a product's band files against each other and its MTL; the layout of its
    group, holding ``part`` of the files (all of them when None).

    Every file is opened once here (header, dtype, first and last block), so bad input
    fails before anything is written; the pixels are read by the writer, strip by strip.
    """
    bands = multispectral_names(paths)
    files = reflective_geobox(paths[bands[0]], meta)
    shape = tuple(files.shape)
    part = part or (0, 0, *shape)
    for band in bands:
        _check_band(paths[band], shape, part)
    qa_path = paths.get("qa_pixel")
    if qa_path is None:
        log.warning(
            "%s: QA_PIXEL file missing; the cloud mask is unknown, every pixel is treated as clear",
            meta.band_files.get("qa_pixel", meta.product_id),
        )
    else:
        _check_band(qa_path, shape, part)
    sources: dict[str, tuple[str | None, ...]] = {
        "multispectral": tuple(paths[b] for b in bands), "qa_pixel": (qa_path,)}
    pan_box = None
    if meta.level == "L1" and "pan" in paths:
        pan_box = part_grid(_pan_box(paths["pan"], files, part), part, 2)
        sources["pan"] = (paths["pan"],)
    geobox = part_grid(files, part)
    array_attrs = cf_scaling(meta, bands, pan_box is not None)
    array_attrs["qa_pixel"] = {
        "qa_source": os.path.basename(qa_path) if qa_path else "absent"}
    attrs = {**scene_attrs(meta, geobox), "product_shape": list(shape), "part": list(part)}
    return SceneLayout(geobox, pan_box, tuple(bands), sources, attrs, array_attrs, part)


def reflective_geobox(first_band: str, meta: SceneMetadata) -> GeoBox:
    """The band files' 30 m grid: their own georeferencing (checked against the MTL, which
    may describe a larger scene the files were clipped from), or the MTL's grid when the
    files lost theirs."""
    with open_raster(first_band) as src:
        shape, crs, transform = src.shape, src.crs, src.transform
    if crs is not None and transform != Affine.identity():
        grid = GeoBox(shape, transform, CRS(crs))
        _check_against_mtl(first_band, grid, meta)
        return grid
    if meta.reflective_shape and tuple(meta.reflective_shape) != tuple(shape):
        raise SceneInputError(
            f"{first_band}: no georeferencing, and its shape {shape} is not its MTL's "
            f"REFLECTIVE_LINES/SAMPLES {meta.reflective_shape}: where the pixels lie is "
            "unknown (a clipped file must keep its own georeferencing)",
            scene_id=meta.product_id,
        )
    if meta.corner_ul_xy is None:
        raise SceneInputError(f"{first_band}: no CRS in the file and no corner coordinates in MTL")
    # MTL corners are pixel centres; USGS grids use the northern UTM zone (negative
    # northings south of the equator), so the CRS is EPSG:326<zone>.
    cell = meta.reflective_cell
    ulx, uly = meta.corner_ul_xy
    affine = Affine(cell, 0.0, ulx - cell / 2, 0.0, -cell, uly + cell / 2)
    log.warning(
        "%s has no georeferencing; georeferenced from %s's MTL (EPSG:326%02d, UL %.1f, %.1f)",
        os.path.basename(first_band), meta.product_id, meta.utm_zone, ulx, uly,
    )
    return GeoBox(shape, affine, CRS(f"EPSG:326{meta.utm_zone:02d}"))


def _check_against_mtl(path: str, grid: GeoBox, meta: SceneMetadata) -> None:
    """A georeferenced file must sit where its MTL says: same UTM zone and pixel size, on
    the scene's 30 m lattice, inside its footprint (the whole of it, unless clipped)."""
    epsg = grid.crs.epsg or 0
    if epsg // 100 in (326, 327) and epsg % 100 != meta.utm_zone:
        raise SceneInputError(
            f"{path}: file is in UTM zone {epsg % 100} but the MTL says zone {meta.utm_zone}; "
            "the MTL belongs to another product", scene_id=meta.product_id,
        )
    cell = meta.reflective_cell
    size = (abs(grid.affine.a), abs(grid.affine.e))
    if any(abs(s - cell) > 1e-6 * cell for s in size):
        raise SceneInputError(
            f"{path}: pixel size {size[0]:g} x {size[1]:g} m is not the product's {cell:g} m; "
            "a resampled product cannot be ingested (use the product's own files)",
            scene_id=meta.product_id,
        )
    if meta.corner_ul_xy is None or epsg // 100 not in (326, 327):
        return
    x, y = grid.affine @ (0.5, 0.5)
    ulx, uly = meta.corner_ul_xy
    # The MTL may give southern-hemisphere northings with or without the 10,000 km offset.
    uly = min((uly, uly - 1e7, uly + 1e7), key=lambda v: abs(v - y))
    col, row = (x - ulx) / cell, (uly - y) / cell
    whole = meta.reflective_shape is None or tuple(meta.reflective_shape) == tuple(grid.shape)
    if whole:
        if abs(col) > 1 or abs(row) > 1:
            raise SceneInputError(
                f"{path}: first pixel centre ({x:.1f}, {y:.1f}) is not the MTL's UL corner "
                f"{meta.corner_ul_xy}; the MTL belongs to another product",
                scene_id=meta.product_id,
            )
        return
    lines, samples = meta.reflective_shape
    h, w = grid.shape
    inside = -1 <= row <= lines - h + 1 and -1 <= col <= samples - w + 1
    if not inside:
        raise SceneInputError(
            f"{path}: its {h} x {w} pixels from row {row:.0f}, column {col:.0f} lie outside "
            f"the {lines} x {samples} scene its MTL describes; the MTL belongs to another "
            "product", scene_id=meta.product_id,
        )
    if abs(col - round(col)) > 0.01 or abs(row - round(row)) > 0.01:
        raise SceneInputError(
            f"{path}: pixels are off the scene's {cell:g} m lattice by ({col % 1:.2f}, "
            f"{row % 1:.2f}) pixels; a resampled product cannot be ingested",
            scene_id=meta.product_id,
        )
    log.info("%s: clipped product: rows %d-%d, columns %d-%d of the %d x %d scene of %s",
             os.path.basename(path), round(row), round(row) + h, round(col), round(col) + w,
             lines, samples, meta.product_id)


def open_raster(path: str) -> rasterio.DatasetReader:
    """Open a GeoTIFF (any GDAL path, or an http(s) URL read in ranges by
    ``remote_files``); a clear error naming the file when that fails."""
    opener = remote_opener(path) if is_http(path) else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path, opener=opener)
    except (rasterio.errors.RasterioIOError, RemoteReadError) as exc:
        raise SceneInputError(f"{path}: cannot open as a GeoTIFF ({exc})") from exc


def _check_decodable(src: rasterio.DatasetReader, path: str, part: Part | None = None,
                     scale: int = 1) -> None:
    """Decode the first and last blocks of the part read (of the whole file by default),
    so a truncated file fails here, named, not mid-write; a remote part costs no block
    outside it.

    One block each, not whole rows: on a tiled file a row costs a whole row of tiles.
    """
    block_h, block_w = src.block_shapes[0]
    r0, c0, h, w = (v * scale for v in (part or (0, 0, *src.shape)))
    first = (r0 // block_h * block_h, c0 // block_w * block_w)
    last_row = (min(r0 + h, src.height) - 1) // block_h * block_h
    last_col = (min(c0 + w, src.width) - 1) // block_w * block_w
    try:
        for row, col in {first, (last_row, last_col)}:
            window = rasterio.windows.Window(
                col, row, min(block_w, src.width - col), min(block_h, src.height - row)
            )
            src.read(1, window=window)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneInputError(f"{path}: cannot read pixels; truncated or corrupt ({exc})") from exc


def _check_band(path: str, shape: tuple[int, ...], part: Part | None = None) -> None:
    with open_raster(path) as src:
        if src.shape != tuple(shape):
            raise SceneInputError(f"{path}: shape {src.shape} differs from the scene's {shape}")
        if src.dtypes[0] != "uint16":
            raise SceneInputError(f"{path}: dtype {src.dtypes[0]}, expected uint16 DN")
        _check_decodable(src, path, part)


def _pan_box(path: str, geobox: GeoBox, part: Part | None = None) -> GeoBox:
    """Pan band grid at 15 m (the file's, or the USGS layout when it has none)."""
    with open_raster(path) as src:
        shape, crs, transform = src.shape, src.crs, src.transform
        if src.dtypes[0] != "uint16":
            raise SceneInputError(f"{path}: dtype {src.dtypes[0]}, expected uint16 DN")
        _check_decodable(src, path, part, 2)
    expected = (geobox.shape[0] * 2, geobox.shape[1] * 2)
    if abs(shape[0] - expected[0]) > 1 or abs(shape[1] - expected[1]) > 1:
        raise SceneInputError(f"{path}: pan shape {shape} is not twice the 30 m shape")
    if crs is not None and transform != Affine.identity():
        return GeoBox(shape, transform, CRS(crs))
    # USGS products centre the first pan pixel on the first 30 m pixel's centre (a full
    # scene has 2n - 1 pan lines), so the pan grid starts half a pan pixel inside the
    # 30 m grid's corner.
    a = geobox.affine
    return GeoBox(
        shape, Affine(a.a / 2, 0.0, a.c + a.a / 4, 0.0, a.e / 2, a.f + a.e / 4), geobox.crs
    )


def read_strips(
    path: str, rows: int, start: int = 0, stop: int | None = None,
    cols: tuple[int, int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, pixels)`` of strips of ``rows`` lines and columns ``cols`` (default:
    the full width), from row ``start`` to ``stop`` (default: the last row), top to bottom.

    A strip as high as a row of store chunks decodes each tile of a tiled GeoTIFF once.
    A read that fails (a file truncated past the blocks checked up front) names the file.
    """
    with open_raster(path) as src:
        height, width = src.shape
        stop = height if stop is None else min(stop, height)
        first, last = cols or (0, width)
        last = min(last, width)
        for top in range(start, stop, rows):
            window = rasterio.windows.Window(first, top, last - first, min(rows, stop - top))
            try:
                yield top, src.read(1, window=window)
            except rasterio.errors.RasterioIOError as exc:
                raise SceneInputError(
                    f"{path}: cannot read pixels; truncated or corrupt ({exc})") from exc


def scene_attrs(meta: SceneMetadata, geobox: GeoBox) -> dict:
    """Group attributes: what the index and the chip builder need without the MTL."""
    return {
        "product_id": meta.product_id,
        "processing_level": meta.processing_level,
        "spacecraft": meta.spacecraft,
        "wrs_path": meta.wrs_path,
        "wrs_row": meta.wrs_row,
        "acquired": meta.acquired.isoformat(),
        "sun_elevation": meta.sun_elevation,
        "sun_azimuth": meta.sun_azimuth,
        "cloud_cover": meta.cloud_cover,
        "epsg": int(geobox.crs.epsg),
        "reflectance": "toa_sun_corrected" if meta.level == "L1" else "surface",
    }


def cf_scaling(meta: SceneMetadata, bands: list[str], with_pan: bool) -> dict[str, dict]:
    """Each array's CF attributes: one scale/offset for all multispectral bands, fill DN 0."""
    pairs = {reflectance_scaling(meta, b) for b in bands}
    if len(pairs) != 1:
        raise SceneInputError(
            f"{meta.product_id}: bands have different reflectance coefficients {sorted(pairs)}; "
            "one CF scale_factor per array cannot decode them"
        )
    scale, offset = pairs.pop()
    # DN 0 is Collection 2 fill: readers decode it to NaN.
    out = {"multispectral": {"scale_factor": scale, "add_offset": offset, "_FillValue": 0}}
    if with_pan:
        out["pan"] = {"_FillValue": 0}
        if "pan" in meta.rescaling:
            pscale, poffset = reflectance_scaling(meta, "pan")
            out["pan"].update(scale_factor=pscale, add_offset=poffset)
    return out


def expected_shapes(paths: dict[str, str], meta: SceneMetadata, part: Part | None = None
                    ) -> dict[str, tuple[int, ...]]:
    """Array shapes a complete group of this product (or of ``part`` of it) has, from file
    headers only (cheap)."""
    bands = multispectral_names(paths)
    with open_raster(paths[bands[0]]) as src:
        shape = src.shape
    shapes: dict[str, tuple[int, ...]] = {"multispectral": (len(bands), *shape),
                                          "qa_pixel": tuple(shape)}
    if meta.level == "L1" and "pan" in paths:
        with open_raster(paths["pan"]) as src:
            shapes["pan"] = tuple(src.shape)
    return part_shapes(shapes, part) if part else shapes


def part_shapes(whole: dict[str, tuple[int, ...]], part: Part) -> dict[str, tuple[int, ...]]:
    """The array shapes of ``part`` of a product whose whole group has shapes ``whole``."""
    r0, c0, h, w = part
    shapes = {"multispectral": (whole["multispectral"][0], h, w), "qa_pixel": (h, w)}
    if "pan" in whole:
        pan_h, pan_w = whole["pan"]
        shapes["pan"] = (min(2 * h, pan_h - 2 * r0), min(2 * w, pan_w - 2 * c0))
    return shapes
