"""Ingest one Landsat Collection 2 product folder into the Zarr scene store.

Layout (DESIGN §3): one group per scene, named by the product id, on the scene's native
grid. ``multispectral (band, y, x)`` and ``qa_pixel (y, x)`` at 30 m, ``pan (y_pan, x_pan)``
at 15 m for Level-1. Pixels stay integer DN; CF ``scale_factor``/``add_offset`` decode them
to reflectance (sun-corrected TOA for Level-1, surface reflectance for Level-2).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import rasterio
import rioxarray
import xarray as xr
import zarr
from affine import Affine
from odc.geo import CRS
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from pipeline.atomic import atomic_output
from pipeline.landsat import MULTISPECTRAL_BANDS, QA_BITS, SceneMetadata, find_mtl, read_mtl
from pipeline.landsat import reflectance_scaling as _scaling

log = logging.getLogger(__name__)

#: Bands a scene must have to be useful for ForestNet chips (coastal is optional).
REQUIRED_BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
#: Chunk edge in 30 m pixels; the pan band uses twice this, so chunks cover the same ground.
CHUNK = 512
#: QA value written when a product has no QA_PIXEL band: every pixel "clear".
QA_ALL_CLEAR = np.uint16(1 << QA_BITS["clear"])


class SceneInputError(ValueError):
    """A product folder that cannot be ingested; the message names the file and the reason."""


@dataclass(frozen=True)
class IngestResult:
    """Summary of one scene's ingest, small enough to pass between tasks."""

    scene_id: str
    status: str  # "ingested" | "skipped" | "failed"
    error: str = ""
    source: str = ""


def ingest_scene(product_dir: Path, store: Path, overwrite: bool = False) -> IngestResult:
    """Ingest one product folder into ``store``; skip it if its group is already complete."""
    product_dir = Path(product_dir)
    meta = read_mtl(find_mtl(product_dir))
    target = Path(store) / meta.product_id
    if (target / "zarr.json").exists() and not overwrite and _is_complete(store, meta.product_id):
        return IngestResult(meta.product_id, "skipped", source=str(product_dir))
    dataset = open_product(product_dir, meta)
    _ensure_root(Path(store))
    # Write the whole group under a temporary name, then rename it into place, so a
    # killed run never leaves a scene that looks complete.
    with atomic_output(target) as tmp:
        encoding = _encoding(dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            with dask.config.set(scheduler="threads"):
                dataset.to_zarr(
                    str(tmp), mode="w", zarr_format=3, consolidated=False, encoding=encoding
                )
        _mark_complete(tmp)
    return IngestResult(meta.product_id, "ingested", source=str(product_dir))


def _ensure_root(store: Path) -> None:
    if not (store / "zarr.json").exists():
        zarr.open_group(str(store), mode="a", zarr_format=3)


def _mark_complete(group_path: Path) -> None:
    group = zarr.open_group(str(group_path), mode="a", zarr_format=3)
    group.attrs["forestnet_complete"] = True


def _is_complete(store: Path, scene_id: str) -> bool:
    try:
        group = zarr.open_group(str(Path(store) / scene_id), mode="r", zarr_format=3)
        return bool(group.attrs.get("forestnet_complete", False)) and "multispectral" in group
    except (FileNotFoundError, ValueError, KeyError):
        return False


def open_product(product_dir: Path, meta: SceneMetadata) -> xr.Dataset:
    """Open a product folder lazily (dask) as the scene Dataset, validated against its MTL."""
    missing = [b for b in REQUIRED_BANDS if b not in meta.band_files]
    if missing:
        raise SceneInputError(f"{product_dir}: MTL lists no file for bands {missing}")
    paths = {name: product_dir / fname for name, fname in meta.band_files.items()}
    for name in REQUIRED_BANDS:
        if not paths[name].exists():
            raise SceneInputError(f"{paths[name]}: missing {name} band file")
    bands = [b for b in MULTISPECTRAL_BANDS.values() if b in paths and paths[b].exists()]
    geobox = _reflective_geobox(paths[bands[0]], meta)
    arrays = [_read_band(paths[b], tuple(geobox.shape), CHUNK) for b in bands]
    coords = xr_coords(geobox, crs_coord_name="spatial_ref")
    multispectral = xr.DataArray(
        dask.array.stack(arrays),
        dims=("band", "y", "x"),
        coords={"band": np.array(bands, dtype=object), **coords},
    )
    data_vars: dict[str, xr.DataArray] = {"multispectral": multispectral}
    data_vars["qa_pixel"] = _qa_array(paths.get("qa_pixel"), geobox, coords)
    if meta.level == "L1" and "pan" in paths and paths["pan"].exists():
        data_vars["pan"] = _pan_array(paths["pan"], geobox)
    ds = xr.Dataset(data_vars)
    for name in data_vars:
        ds[name].attrs["grid_mapping"] = "spatial_ref"
    ds.attrs.update(_scene_attrs(meta, geobox))
    return apply_scaling(ds, meta)


def _reflective_geobox(first_band: Path, meta: SceneMetadata) -> GeoBox:
    """The 30 m grid: from the GeoTIFF, or from the MTL when the file lost its georeferencing."""
    with _open_raster(first_band) as src:
        shape, crs, transform = src.shape, src.crs, src.transform
    if meta.reflective_shape and tuple(meta.reflective_shape) != tuple(shape):
        raise SceneInputError(
            f"{first_band}: shape {shape} does not match its MTL's REFLECTIVE_LINES/SAMPLES "
            f"{meta.reflective_shape}; the MTL belongs to another product"
        )
    if crs is not None and transform != Affine.identity():
        return GeoBox(shape, transform, CRS(crs))
    if meta.corner_ul_xy is None:
        raise SceneInputError(f"{first_band}: no CRS in the file and no corner coordinates in MTL")
    # MTL corners are pixel centres; USGS grids use the northern UTM zone (negative
    # northings south of the equator), so the CRS is EPSG:326<zone>.
    cell = meta.reflective_cell
    ulx, uly = meta.corner_ul_xy
    affine = Affine(cell, 0.0, ulx - cell / 2, 0.0, -cell, uly + cell / 2)
    log.warning(
        "%s has no georeferencing; georeferenced from %s's MTL (EPSG:326%02d, UL %.1f, %.1f)",
        first_band.name,
        meta.product_id,
        meta.utm_zone,
        ulx,
        uly,
    )
    return GeoBox(shape, affine, CRS(f"EPSG:326{meta.utm_zone:02d}"))


def _open_raster(path: Path) -> rasterio.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneInputError(f"{path}: cannot open as a GeoTIFF ({exc})") from exc


def _check_decodable(src: rasterio.DatasetReader, path: Path) -> None:
    """Decode the first and last rows, so a truncated file fails here, named, not mid-write."""
    try:
        for row in (0, src.height - 1):
            src.read(1, window=rasterio.windows.Window(0, row, src.width, 1))
    except rasterio.errors.RasterioIOError as exc:
        raise SceneInputError(f"{path}: cannot read pixels; truncated or corrupt ({exc})") from exc


def _read_band(path: Path, shape: tuple[int, int], chunk: int) -> dask.array.Array:
    with _open_raster(path) as src:
        if src.shape != tuple(shape):
            raise SceneInputError(f"{path}: shape {src.shape} differs from the scene's {shape}")
        if src.dtypes[0] != "uint16":
            raise SceneInputError(f"{path}: dtype {src.dtypes[0]}, expected uint16 DN")
        _check_decodable(src, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        # lock=False: each task reads its own file handle; GDAL is thread-safe per handle.
        da = rioxarray.open_rasterio(path, chunks={"band": 1, "y": chunk, "x": chunk}, lock=False)
    return da.data[0]


def _qa_array(path: Path | None, geobox: GeoBox, coords: dict) -> xr.DataArray:
    if path is None or not path.exists():
        log.warning(
            "%s: QA_PIXEL file missing; the cloud mask is unknown, every pixel is treated as clear",
            path or "product",
        )
        data = dask.array.full(tuple(geobox.shape), QA_ALL_CLEAR, dtype=np.uint16, chunks=CHUNK)
        return xr.DataArray(data, dims=("y", "x"), coords=coords, attrs={"qa_source": "absent"})
    return xr.DataArray(
        _read_band(path, tuple(geobox.shape), CHUNK),
        dims=("y", "x"),
        coords=coords,
        attrs={"qa_source": path.name},
    )


def _pan_array(path: Path, geobox: GeoBox) -> xr.DataArray:
    """Pan band on its own 15 m grid (the file's, or the USGS layout when it has none)."""
    with _open_raster(path) as src:
        shape, crs, transform = src.shape, src.crs, src.transform
        _check_decodable(src, path)
    expected = (geobox.shape[0] * 2, geobox.shape[1] * 2)
    if abs(shape[0] - expected[0]) > 1 or abs(shape[1] - expected[1]) > 1:
        raise SceneInputError(f"{path}: pan shape {shape} is not twice the 30 m shape")
    if crs is not None and transform != Affine.identity():
        pan_box = GeoBox(shape, transform, CRS(crs))
    else:
        # USGS products centre the first pan pixel on the first 30 m pixel's centre
        # (a full scene has 2n - 1 pan lines), so the pan grid starts half a pan pixel
        # inside the 30 m grid's corner.
        a = geobox.affine
        pan_box = GeoBox(
            shape, Affine(a.a / 2, 0.0, a.c + a.a / 4, 0.0, a.e / 2, a.f + a.e / 4), geobox.crs
        )
    coords = xr_coords(pan_box, crs_coord_name="spatial_ref")
    data = _read_band_any_shape(path, CHUNK * 2)
    return xr.DataArray(
        data,
        dims=("y_pan", "x_pan"),
        coords={"y_pan": coords["y"].values, "x_pan": coords["x"].values},
    )


def _read_band_any_shape(path: Path, chunk: int) -> dask.array.Array:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        da = rioxarray.open_rasterio(path, chunks={"band": 1, "y": chunk, "x": chunk}, lock=False)
    return da.data[0]


def _scene_attrs(meta: SceneMetadata, geobox: GeoBox) -> dict:
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


def _encoding(ds: xr.Dataset) -> dict:
    """CF encoding: integer DN on disk, decoded to reflectance; chunks aligned to writes.

    The arrays already hold DN, so scale_factor/add_offset go into the attributes (written
    as they are, applied by readers). In ``encoding`` xarray would instead treat the DN as
    reflectance and store (DN - offset) / scale, wrapped to uint16.
    """
    enc: dict[str, dict] = {
        "qa_pixel": {"chunks": (CHUNK, CHUNK)},
        "multispectral": {"chunks": (1, CHUNK, CHUNK), "dtype": "uint16", "_FillValue": 0},
    }
    if "pan" in ds:
        enc["pan"] = {"chunks": (CHUNK * 2, CHUNK * 2), "dtype": "uint16", "_FillValue": 0}
    for name in enc:
        ds[name].attrs.update(ds[name].attrs.pop("_cf", {}))
    return enc


def apply_scaling(ds: xr.Dataset, meta: SceneMetadata) -> xr.Dataset:
    """Attach each variable's CF scale/offset (one pair for all multispectral bands)."""
    bands = [str(b) for b in ds["multispectral"]["band"].values]
    pairs = {_scaling(meta, b) for b in bands}
    if len(pairs) != 1:
        raise SceneInputError(
            f"{meta.product_id}: bands have different reflectance coefficients {sorted(pairs)}; "
            "one CF scale_factor per array cannot decode them"
        )
    scale, offset = pairs.pop()
    ds["multispectral"].attrs["_cf"] = {"scale_factor": scale, "add_offset": offset}
    if "pan" in ds and "pan" in meta.rescaling:
        pscale, poffset = _scaling(meta, "pan")
        ds["pan"].attrs["_cf"] = {"scale_factor": pscale, "add_offset": poffset}
    return ds
