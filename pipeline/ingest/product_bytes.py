"""What ingesting a product costs in bytes: its files' sizes, and the share of them that
the part a job's area needs would read (by pixels; headers are a rounding error)."""

from __future__ import annotations

import os

from odc.geo.geom import Geometry

from pipeline.ingest.product_source import ProductSource
from pipeline.ingest.remote_files import fetch, is_http
from pipeline.ingest.scene_parts import part_for_area
from pipeline.ingest.scene_reader import multispectral_names, present_bands, reflective_geobox
from pipeline.ingest.sources import band_locations, read_source_metadata


def file_size(location: str) -> int:
    """Bytes of a local file or an http(s) object (one 1-byte ranged read); 0 otherwise."""
    if is_http(location):
        return fetch(location, 0, 1)[1] or 0
    return os.path.getsize(location) if os.path.exists(location) else 0


def product_bytes(source: ProductSource, area: Geometry | None = None, margin: int = 0
                  ) -> tuple[int, int]:
    """``(bytes an ingest would read, the product's full bytes)``: its MTL and band files,
    all of them without an ``area``, else their share in the part the area needs."""
    meta = read_source_metadata(source)
    paths = present_bands(*band_locations(source, meta))
    full = sum(file_size(p) for p in (source.metadata, *paths.values()))
    if area is None:
        return full, full
    files = reflective_geobox(paths[multispectral_names(paths)[0]], meta)
    part = part_for_area(files, area, margin)
    if part is None:
        return 0, full
    share = part[2] * part[3] / (files.shape[0] * files.shape[1])
    return round(full * share), full
