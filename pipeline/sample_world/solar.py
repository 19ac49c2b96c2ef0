"""Sun position and Earth-Sun distance for a scene's acquisition time (NOAA approximations)."""

from __future__ import annotations

import math
from datetime import date


def sun_angles(day: date, hour_utc: float, lon: float, lat: float) -> tuple[float, float]:
    """(elevation, azimuth) in degrees; azimuth clockwise from north, as in Landsat MTLs."""
    g = 2 * math.pi / 365.0 * (day.timetuple().tm_yday - 1 + (hour_utc - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    solar_minutes = hour_utc * 60.0 + eqtime + 4.0 * lon
    hour_angle = math.radians(solar_minutes / 4.0 - 180.0)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    elevation = 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    azimuth = math.degrees(
        math.atan2(
            -math.sin(hour_angle),
            math.tan(decl) * math.cos(phi) - math.sin(phi) * math.cos(hour_angle),
        )
    )
    return elevation, azimuth % 360.0


def earth_sun_distance(day: date) -> float:
    """Earth-Sun distance in astronomical units (perihelion in early January)."""
    doy = day.timetuple().tm_yday
    return 1.0 - 0.01672 * math.cos(math.radians(0.9856 * (doy - 4)))
