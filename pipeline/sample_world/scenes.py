"""One Landsat 8 acquisition of the world: sun, haze, phenology, clouds, shadows, QA_PIXEL.

The output is in digital numbers of both Collection 2 levels (what landsat_files.py
writes): Level-1 inverts the documented TOA formula, Level-2 the surface-reflectance one.
The two are linked by a simple atmosphere, per band: TOA = TRANSMITTANCE * surface +
PATH_REFLECTANCE, so scattering brightens the visible (blue most) and barely touches the
SWIR, as over real tropical forest (TOA blue ~0.08 over surface ~0.02). The Level-2
product is that atmosphere inverted on the TOA: a date's extra haze stays in it, as a
real retrieval's residual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

import numpy as np
from scipy import ndimage

from . import spectra as sp
from .landscape import Surface
from .noise import block_mean, coarse_field, soft_step, stream
from .region import PAN_RES, Region
from .solar import earth_sun_distance, sun_angles
from .spec import WorldSpec

REFLECTANCE_MULT = 2.0e-05
REFLECTANCE_ADD = -0.1
#: Collection 2 Level-2 surface reflectance = DN * SR_MULT + SR_ADD.
SR_MULT = 2.75e-05
SR_ADD = -0.2
#: The world's atmosphere for bands B1..B7 (coastal, blue, green, red, nir, swir1, swir2).
PATH_REFLECTANCE = np.asarray([0.075, 0.060, 0.040, 0.025, 0.012, 0.004, 0.002], np.float32)
TRANSMITTANCE = np.asarray([0.78, 0.80, 0.85, 0.88, 0.92, 0.95, 0.96], np.float32)
OVERPASS_UTC_H = 2.62  # Landsat 8 crosses Kalimantan at ~10:10 local solar time

# QA_PIXEL bits (Landsat Collection 2).
FILL, DILATED, CIRRUS, CLOUD, SHADOW, SNOW, CLEAR, WATER = (1 << i for i in range(8))
CONF_LOW, CONF_MED, CONF_HIGH = 1, 2, 3
CLOUD_CONF, SHADOW_CONF, SNOW_CONF, CIRRUS_CONF = 8, 10, 12, 14  # bit offsets of 2-bit fields

_HAZE = np.asarray([1.0, 0.75, 0.5, 0.3, 0.1, 0.03], np.float32)  # aerosol scatters blue most
_PAN_WEIGHTS = (0.1, 0.5, 0.4)  # B8 (500-680 nm) from blue, green, red


@dataclass(frozen=True)
class Scene:
    date: date
    scene_time: str  # "HH:MM:SS.sssssssZ" as in the MTL
    sun_elevation: float
    sun_azimuth: float
    earth_sun_distance: float
    ms: np.ndarray  # (7, h, w) uint16 Level-1 DN, bands B1..B7 at 30 m
    pan: np.ndarray  # (2h, 2w) uint16 Level-1 DN, B8 at 15 m
    sr: np.ndarray  # (7, h, w) uint16 Level-2 DN, SR_B1..SR_B7 at 30 m
    qa: np.ndarray  # (h, w) uint16 QA_PIXEL
    cloud_cover: float  # % cloud among non-fill pixels
    cloud_cover_land: float  # % cloud among non-fill land pixels


def render_scene(spec: WorldSpec, region: Region, surface: Surface, index: int) -> Scene:
    """Render scene ``index`` of the spec from the shared land surface."""
    day = date.fromisoformat(spec.scene_dates[index])
    rng = stream(spec.seed, f"scene-{day.isoformat()}")
    hour = OVERPASS_UTC_H + rng.uniform(-0.02, 0.02)
    elev, azim = sun_angles(day, hour, spec.center_lon, spec.center_lat)
    h30, w30 = region.grid30.shape.yx
    fill = _fill_mask(rng, (h30, w30))
    fill15 = np.repeat(np.repeat(fill, 2, axis=0), 2, axis=1)

    # Clouds: a smooth random field thresholded so the cloud fraction hits the target; the
    # field extends beyond the scene so shadows near the edge come from clouds outside it.
    cloud_height = rng.uniform(800.0, 1800.0)
    reach = cloud_height / math.tan(math.radians(elev)) / PAN_RES
    drow = int(round(reach * math.cos(math.radians(azim))))  # shadow falls away from the sun
    dcol = int(round(-reach * math.sin(math.radians(azim))))
    pad = max(abs(drow), abs(dcol)) + 2
    h15, w15 = 2 * h30, 2 * w30
    big = (h15 + 2 * pad + (h15 + 2 * pad) % 2, w15 + 2 * pad + (w15 + 2 * pad) % 2)
    field = 0.9 * coarse_field(rng, big, 16, 1.5) + 0.3 * coarse_field(rng, big, 4, 1.5)
    f15 = field[pad : pad + h15, pad : pad + w15]
    s15 = field[pad - drow : pad - drow + h15, pad - dcol : pad - dcol + w15]
    f30, s30 = block_mean(f15), block_mean(s15)
    target = spec.scene_cloud_cover[index]
    thr = float(np.quantile(f30[~fill], 1.0 - target)) if target > 0 else np.inf
    cloud = (f30 >= thr) & ~fill
    shadow = (s30 >= thr) & ~cloud & ~fill
    alpha = soft_step(f15 - thr, 0.12)  # soft edges: thin cloud around the masked core
    shade = soft_step(s15 - thr, 0.12)

    # Per-date illumination, haze and phenology, so that dates differ.
    gains = rng.normal(1.0, 0.02, size=6).astype(np.float32)
    gains[3] *= rng.normal(1.0, 0.03)
    haze = rng.uniform(0.0, 0.015) * _HAZE
    illum = 1.0 + 0.02 * coarse_field(rng, (h15, w15), 16, 1.5)
    crop_delta = 0.5 * (sp.CROP - sp.SOIL) * rng.uniform(-1.0, 1.0)
    x = surface.refl * gains[:, None, None] + haze[:, None, None]
    x += crop_delta[:, None, None] * surface.seasonal[None]
    x *= (illum * (1.0 - 0.65 * shade))[None]
    thick = (0.92 + 0.08 * np.clip(f15 - thr, 0.0, 1.0)) * alpha
    x = x * (1.0 - alpha)[None] + sp.CLOUD[:, None, None] * thick[None]

    ms6 = block_mean(x) + rng.normal(0.0, 0.0025, size=(6, h30, w30)).astype(np.float32)
    coastal = ms6[0] + 0.01 + 0.3 * haze[0] + rng.normal(0, 0.002, (h30, w30)).astype(np.float32)
    surface7 = np.concatenate([coastal[None], ms6])
    toa7 = through_atmosphere(surface7)
    pan = sum(wt * through_atmosphere(x[b], b + 1) for wt, b in zip(_PAN_WEIGHTS, (0, 1, 2),
                                                                    strict=True))
    pan = pan + rng.normal(0.0, 0.004, size=(h15, w15)).astype(np.float32)
    sin_e = math.sin(math.radians(elev))
    ms = to_dn(toa7, sin_e)
    ms[:, fill] = 0
    pan_dn = to_dn(pan, sin_e)
    pan_dn[fill15] = 0
    sr = to_sr_dn(surface_from_toa(dn_to_toa(ms, sin_e)))
    sr[:, fill] = 0

    water = block_mean(surface.water) >= 0.5
    qa = qa_pixel(fill, cloud, shadow, water)
    land = ~fill & ~water
    return Scene(
        date=day,
        scene_time=_clock(hour),
        sun_elevation=round(elev, 8),
        sun_azimuth=round(azim, 8),
        earth_sun_distance=round(earth_sun_distance(day), 7),
        ms=ms,
        pan=pan_dn,
        sr=sr,
        qa=qa,
        cloud_cover=round(100.0 * cloud.sum() / max((~fill).sum(), 1), 2),
        cloud_cover_land=round(100.0 * (cloud & land).sum() / max(land.sum(), 1), 2),
    )


def through_atmosphere(surface: np.ndarray, band: int | None = None) -> np.ndarray:
    """TOA reflectance of surface reflectance: all of B1..B7 ``(7, ...)``, or one band."""
    if band is None:
        return TRANSMITTANCE[:, None, None] * surface + PATH_REFLECTANCE[:, None, None]
    return TRANSMITTANCE[band] * surface + PATH_REFLECTANCE[band]


def surface_from_toa(toa: np.ndarray) -> np.ndarray:
    """The atmosphere inverted: surface reflectance of B1..B7 TOA ``(7, h, w)``."""
    return (toa - PATH_REFLECTANCE[:, None, None]) / TRANSMITTANCE[:, None, None]


def dn_to_toa(dn: np.ndarray, sin_elevation: float) -> np.ndarray:
    """L1 DN -> TOA reflectance (the documented formula; what a reader decodes)."""
    return ((REFLECTANCE_MULT * dn.astype(np.float64) + REFLECTANCE_ADD) / sin_elevation
            ).astype(np.float32)


def to_sr_dn(rho: np.ndarray) -> np.ndarray:
    """Surface reflectance -> L2 DN, inverting rho = DN * SR_MULT + SR_ADD."""
    return np.clip(np.rint((rho - SR_ADD) / SR_MULT), 1, 65535).astype(np.uint16)


def to_dn(rho: np.ndarray, sin_elevation: float) -> np.ndarray:
    """TOA reflectance -> L1 DN, inverting rho = (M * DN + A) / sin(sun elevation)."""
    dn = np.rint((rho * sin_elevation - REFLECTANCE_ADD) / REFLECTANCE_MULT)
    return np.clip(dn, 1, 65535).astype(np.uint16)


def qa_pixel(
    fill: np.ndarray, cloud: np.ndarray, shadow: np.ndarray, water: np.ndarray
) -> np.ndarray:
    """Collection 2 QA_PIXEL from the masks.

    Clear (bit 6) follows USGS: set when the pixel is neither fill, cloud nor dilated cloud.
    Cloud-shadow pixels stay "clear" (real C2 value 23888 is shadow + clear), so users
    must test bit 4 themselves; the shadow is also flagged with high shadow confidence.
    """
    dilated = ndimage.binary_dilation(cloud, structure=np.ones((3, 3), bool), iterations=3)
    dilated &= ~cloud & ~fill
    qa = np.full(
        fill.shape,
        (CONF_LOW << CLOUD_CONF)
        | (CONF_LOW << SHADOW_CONF)
        | (CONF_LOW << SNOW_CONF)
        | (CONF_LOW << CIRRUS_CONF),
        np.uint16,
    )
    qa[cloud] = (qa[cloud] & ~np.uint16(3 << CLOUD_CONF)) | CLOUD | (CONF_HIGH << CLOUD_CONF)
    qa[dilated] |= DILATED  # real C2 keeps low cloud confidence here (21762 over land)
    qa[shadow] |= SHADOW | (CONF_HIGH << SHADOW_CONF)
    clear = ~fill & ~cloud & ~dilated
    qa[clear] |= CLEAR
    qa[clear & water] |= WATER
    qa[fill] = FILL
    return qa


def _fill_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A wedge of no-data along the west edge, like the slanted edge of a WRS-2 scene."""
    h, w = shape
    top, bottom = rng.uniform(0.0, 0.01) * w, rng.uniform(0.035, 0.05) * w
    rows, cols = np.mgrid[0:h, 0:w]
    return cols + 0.5 < top + (bottom - top) * (rows + 0.5) / h


def _clock(hour: float) -> str:
    seconds = hour * 3600.0
    hh, rem = divmod(seconds, 3600.0)
    mm, ss = divmod(rem, 60.0)
    return f"{int(hh):02d}:{int(mm):02d}:{ss:010.7f}Z"
