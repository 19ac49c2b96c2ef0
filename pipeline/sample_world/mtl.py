"""Landsat Collection 2 ``_MTL.txt`` (ODL) writer, Level-1 and Level-2, with the real group
structure (a Level-2 MTL also carries its Level-1 groups, as USGS's do)."""

from __future__ import annotations

import math
from datetime import date

from .region import Region, to_lonlat
from .scenes import REFLECTANCE_ADD, REFLECTANCE_MULT, SR_ADD, SR_MULT, Scene

#: In-band solar irradiance (W m-2 um-1) of OLI bands 1-9; links the radiance and the
#: reflectance rescaling as USGS does: L = rho * ESUN / (pi * d^2).
ESUN = (1971.0, 2019.6, 1861.0, 1569.0, 960.0, 238.8, 80.5, 1776.0, 375.3)
Item = tuple[str, object]


def mtl_text(
    product_id: str,
    proc_date: date,
    scene: Scene,
    region: Region,
    wrs: tuple[int, int],
    band_files: dict[str, str],
    qa_file: str,
    level: str = "L1TP",
) -> str:
    """The MTL of one product (``level`` L1TP or L2SP); corners are 30 m pixel centres, as
    in USGS products."""
    h, w = region.grid30.shape.yx
    left, bottom, right, top = region.bounds
    half = region.grid30.affine.a / 2
    corners = {
        "UL": (left + half, top - half),
        "UR": (right - half, top - half),
        "LL": (left + half, bottom + half),
        "LR": (right - half, bottom + half),
    }
    zone = region.epsg % 100
    d2 = scene.earth_sun_distance**2
    scale = [e / (math.pi * d2) for e in ESUN]

    contents: list[Item] = [
        ("ORIGIN", _q("Image courtesy of the U.S. Geological Survey")),
        ("LANDSAT_PRODUCT_ID", _q(product_id)),
        ("PROCESSING_LEVEL", _q(level)),
        ("COLLECTION_NUMBER", "02"),
        ("COLLECTION_CATEGORY", _q("T1")),
        ("OUTPUT_FORMAT", _q("GEOTIFF")),
    ]
    contents += [(f"FILE_NAME_BAND_{b}", _q(f)) for b, f in band_files.items()]
    contents += [
        ("FILE_NAME_QUALITY_L1_PIXEL", _q(qa_file)),
        ("FILE_NAME_METADATA_ODL", _q(f"{product_id}_MTL.txt")),
    ]
    contents += [(f"DATA_TYPE_BAND_{b}", _q("UINT16")) for b in band_files]
    contents += [("DATA_TYPE_QUALITY_L1_PIXEL", _q("UINT16"))]

    image: list[Item] = [
        ("SPACECRAFT_ID", _q("LANDSAT_8")),
        ("SENSOR_ID", _q("OLI_TIRS")),
        ("WRS_TYPE", 2),
        ("WRS_PATH", wrs[0]),
        ("WRS_ROW", wrs[1]),
        ("NADIR_OFFNADIR", _q("NADIR")),
        ("TARGET_WRS_PATH", wrs[0]),
        ("TARGET_WRS_ROW", wrs[1]),
        ("DATE_ACQUIRED", scene.date.isoformat()),
        ("SCENE_CENTER_TIME", _q(scene.scene_time)),
        ("STATION_ID", _q("LGN")),
        ("CLOUD_COVER", f"{scene.cloud_cover:.2f}"),
        ("CLOUD_COVER_LAND", f"{scene.cloud_cover_land:.2f}"),
        ("IMAGE_QUALITY_OLI", 9),
        ("IMAGE_QUALITY_TIRS", 9),
    ]
    image += [(f"SATURATION_BAND_{b}", _q("N")) for b in range(1, 10)]
    image += [
        ("SUN_AZIMUTH", f"{scene.sun_azimuth:.8f}"),
        ("SUN_ELEVATION", f"{scene.sun_elevation:.8f}"),
        ("EARTH_SUN_DISTANCE", f"{scene.earth_sun_distance:.7f}"),
    ]

    pan_lines = [("PANCHROMATIC_LINES", 2 * h), ("PANCHROMATIC_SAMPLES", 2 * w)]
    projection = _projection_common(zone, region) + (pan_lines if level == "L1TP" else []) + [
        ("REFLECTIVE_LINES", h),
        ("REFLECTIVE_SAMPLES", w),
        ("THERMAL_LINES", h),
        ("THERMAL_SAMPLES", w),
        ("ORIENTATION", _q("NORTH_UP")),
    ]
    for name, (x, y) in corners.items():
        lon, lat = to_lonlat(region.epsg, x, y)
        projection += [
            (f"CORNER_{name}_LAT_PRODUCT", f"{lat:.5f}"),
            (f"CORNER_{name}_LON_PRODUCT", f"{lon:.5f}"),
        ]
    for name, (x, y) in corners.items():
        projection += [
            (f"CORNER_{name}_PROJECTION_X_PRODUCT", f"{x:.1f}"),
            (f"CORNER_{name}_PROJECTION_Y_PRODUCT", f"{y:.1f}"),
        ]

    record: list[Item] = [
        ("ORIGIN", _q("Image courtesy of the U.S. Geological Survey")),
        (
            "LANDSAT_SCENE_ID",
            _q(
                f"LC8{wrs[0]:03d}{wrs[1]:03d}{scene.date.year}"
                f"{scene.date.timetuple().tm_yday:03d}LGN00"
            ),
        ),
        ("LANDSAT_PRODUCT_ID", _q(product_id)),
        ("PROCESSING_LEVEL", _q("L1TP")),
        ("COLLECTION_CATEGORY", _q("T1")),
        ("OUTPUT_FORMAT", _q("GEOTIFF")),
        ("DATE_PRODUCT_GENERATED", f"{proc_date.isoformat()}T00:00:00Z"),
        ("PROCESSING_SOFTWARE_VERSION", _q("SAMPLE_WORLD")),
    ]
    bands = range(1, 10)
    radiance = [
        x
        for b in bands
        for x in (
            (f"RADIANCE_MAXIMUM_BAND_{b}", f"{scale[b - 1] * 1.2107:.5f}"),
            (f"RADIANCE_MINIMUM_BAND_{b}", f"{scale[b - 1] * -0.09998:.5f}"),
        )
    ]
    reflectance = [
        x
        for b in bands
        for x in (
            (f"REFLECTANCE_MAXIMUM_BAND_{b}", "1.210700"),
            (f"REFLECTANCE_MINIMUM_BAND_{b}", "-0.099980"),
        )
    ]
    pixel = [
        x
        for b in bands
        for x in ((f"QUANTIZE_CAL_MAX_BAND_{b}", 65535), (f"QUANTIZE_CAL_MIN_BAND_{b}", 1))
    ]
    rescaling = [
        (f"RADIANCE_MULT_BAND_{b}", f"{REFLECTANCE_MULT * scale[b - 1]:.4E}") for b in bands
    ]
    rescaling += [
        (f"RADIANCE_ADD_BAND_{b}", f"{REFLECTANCE_ADD * scale[b - 1]:.5f}") for b in bands
    ]
    rescaling += [(f"REFLECTANCE_MULT_BAND_{b}", f"{REFLECTANCE_MULT:.4E}") for b in bands]
    rescaling += [(f"REFLECTANCE_ADD_BAND_{b}", f"{REFLECTANCE_ADD:.6f}") for b in bands]
    params = _projection_common(zone, region) + [
        ("ORIENTATION", _q("NORTH_UP")),
        ("RESAMPLING_OPTION", _q("CUBIC_CONVOLUTION")),
    ]

    level1 = [
        ("LEVEL1_PROCESSING_RECORD", record),
        ("LEVEL1_MIN_MAX_RADIANCE", radiance),
        ("LEVEL1_MIN_MAX_REFLECTANCE", reflectance),
        ("LEVEL1_MIN_MAX_PIXEL_VALUE", pixel),
        ("LEVEL1_RADIOMETRIC_RESCALING", rescaling),
        ("LEVEL1_PROJECTION_PARAMETERS", params),
    ]
    groups = [("PRODUCT_CONTENTS", contents), ("IMAGE_ATTRIBUTES", image),
              ("PROJECTION_ATTRIBUTES", projection)]
    if level == "L2SP":
        groups += _level2_groups(product_id, proc_date)
    groups += level1
    lines = ["GROUP = LANDSAT_METADATA_FILE"]
    for name, items in groups:
        lines.append(f"  GROUP = {name}")
        lines += [f"    {key} = {value}" for key, value in items]
        lines.append(f"  END_GROUP = {name}")
    lines += ["END_GROUP = LANDSAT_METADATA_FILE", "END", ""]
    return "\n".join(lines)


def _level2_groups(product_id: str, proc_date: date) -> list[tuple[str, list[Item]]]:
    record: list[Item] = [
        ("ORIGIN", _q("Image courtesy of the U.S. Geological Survey")),
        ("LANDSAT_PRODUCT_ID", _q(product_id)),
        ("PROCESSING_LEVEL", _q("L2SP")),
        ("OUTPUT_FORMAT", _q("GEOTIFF")),
        ("DATE_PRODUCT_GENERATED", f"{proc_date.isoformat()}T00:00:00Z"),
        ("PROCESSING_SOFTWARE_VERSION", _q("SAMPLE_WORLD")),
        ("ALGORITHM_SOURCE_SURFACE_REFLECTANCE", _q("SAMPLE_WORLD_ATMOSPHERE")),
    ]
    bands = range(1, 8)
    params: list[Item] = [x for b in bands for x in (
        (f"REFLECTANCE_MAXIMUM_BAND_{b}", f"{SR_MULT * 65535 + SR_ADD:.6f}"),
        (f"REFLECTANCE_MINIMUM_BAND_{b}", f"{SR_MULT + SR_ADD:.6f}"))]
    params += [x for b in bands for x in ((f"QUANTIZE_CAL_MAX_BAND_{b}", 65535),
                                          (f"QUANTIZE_CAL_MIN_BAND_{b}", 1))]
    params += [(f"REFLECTANCE_MULT_BAND_{b}", f"{SR_MULT:.2e}") for b in bands]
    params += [(f"REFLECTANCE_ADD_BAND_{b}", f"{SR_ADD}") for b in bands]
    return [("LEVEL2_PROCESSING_RECORD", record),
            ("LEVEL2_SURFACE_REFLECTANCE_PARAMETERS", params)]


def _projection_common(zone: int, region: Region) -> list[Item]:
    # UTM_ZONE is the zone number; coordinates are in USGS's northern zone (EPSG:326zz),
    # with negative northings south of the equator, as in real products.
    return [
        ("MAP_PROJECTION", _q("UTM")),
        ("DATUM", _q("WGS84")),
        ("ELLIPSOID", _q("WGS84")),
        ("UTM_ZONE", zone),
        ("GRID_CELL_SIZE_PANCHROMATIC", f"{abs(region.grid15.affine.a):.2f}"),
        ("GRID_CELL_SIZE_REFLECTIVE", f"{abs(region.grid30.affine.a):.2f}"),
        ("GRID_CELL_SIZE_THERMAL", f"{abs(region.grid30.affine.a):.2f}"),
    ]


def _q(text: str) -> str:
    return f'"{text}"'
