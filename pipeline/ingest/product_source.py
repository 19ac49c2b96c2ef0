"""One Landsat product's file locations, whatever kind of source named it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProductSource:
    """One product's file locations; small and picklable, so it travels to Dask workers."""

    origin: str  # folder / tar / item path (``#id`` inside a collection): messages and index
    name: str  # scene id to report when the metadata cannot be read
    kind: str  # "folder" | "tar" | "stac"
    metadata: str = ""  # the preferred MTL: local path, URL, or the tar holding it
    metadata_member: str = ""  # the MTL's member name when ``metadata`` is a tar
    #: file name -> GDAL path (folder, tar), for files the MTL names.
    files: Mapping[str, str] = field(default_factory=dict)
    #: band -> GDAL path (STAC items, whose assets name the bands).
    assets: Mapping[str, str] = field(default_factory=dict)
    error: str = ""  # why the source cannot be read at all (unreadable tar or item)
    requester_pays: bool = False  # s3 assets in a requester-pays bucket (USGS's)
