"""``generate_world``: build every file of a sample world atomically and resumably."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.core.drivers import DRIVER_CLASSES

from .ancillary import write_ancillary
from .events_csv import write_events
from .features import make_features
from .gfc import MIN_EVENT_PIXELS, write_gfc
from .landcover import write_landcover
from .landsat_files import write_scene
from .landscape import render_surface
from .layout import SPLITS, Event, layout_events
from .region import make_region
from .scenes import render_scene
from .spec import GENERATOR_VERSION, WorldSpec

MANIFEST = "manifest.json"
DEFAULT_SPEC = WorldSpec()


class WorldExistsError(FileExistsError):
    """The output folder holds something other than this spec's world."""


def generate_world(out_dir: Path, spec: WorldSpec = DEFAULT_SPEC) -> Path:
    """Generate the world of ``spec`` into ``out_dir``; return the path of its manifest.

    Built in a sibling temporary folder and moved into place with one ``os.replace``, so
    ``out_dir`` is either absent or complete. A folder already holding this spec's world
    is returned as is (reruns are free); anything else there is an error.
    """
    out_dir = Path(out_dir)
    if _existing(out_dir, spec):
        return out_dir / MANIFEST
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the world is ordinary data
        _build(tmp, spec)
        try:
            os.replace(tmp, out_dir)  # atomic; also replaces an empty out_dir
        except OSError:
            if not _existing(out_dir, spec):  # lost a race to a different world: report it
                raise
            shutil.rmtree(tmp)  # a concurrent run built the same world first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / MANIFEST


def _existing(out_dir: Path, spec: WorldSpec) -> bool:
    """True if ``out_dir`` holds this spec's world; False if absent or empty; else raise."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise WorldExistsError(f"{out_dir} exists and is not a folder")
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        if any(out_dir.iterdir()):
            raise WorldExistsError(
                f"{out_dir} is not empty and holds no {MANIFEST}; "
                "choose another folder or delete it"
            )
        return False
    data = json.loads(manifest.read_text())
    if data.get("spec") != spec.to_json() or data.get("generator_version") != GENERATOR_VERSION:
        raise WorldExistsError(
            f"{out_dir} holds a sample world of a different spec or generator version "
            f"({data.get('spec')}, version {data.get('generator_version')}); "
            "choose another folder or delete it"
        )
    return True


def _build(root: Path, spec: WorldSpec) -> None:
    region = make_region(spec)
    features = make_features(spec, region)
    events = layout_events(spec, region, features)
    surface = render_surface(spec, region, features, events)
    scenes = []
    for i in range(len(spec.scene_dates)):
        scenes.append(write_scene(root, spec, region, render_scene(spec, region, surface, i)))
    del surface
    paths: dict[str, str] = {}
    paths.update(write_gfc(root, spec, region, features, events))
    paths.update(write_ancillary(root, spec, region, features, events))
    paths.update(write_landcover(root, region, features, events))
    paths.update(write_events(root, events))
    left, bottom, right, top = region.bounds
    manifest: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "spec": spec.to_json(),
        "province": region.province,
        "epsg": region.epsg,
        "region": {
            "bbox_lonlat": [round(v, 7) for v in region.bbox_lonlat],
            "aux_bbox_lonlat": [round(v, 7) for v in region.aux_bbox_lonlat],
            "bounds_utm": [left, bottom, right, top],
            "shape_30m": list(region.grid30.shape.yx),
            "shape_15m": list(region.grid15.shape.yx),
        },
        "scenes": scenes,
        "events": _event_counts(events),
        "paths": paths,
        "min_event_pixels": MIN_EVENT_PIXELS,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _event_counts(events: tuple[Event, ...]) -> dict[str, Any]:
    by_split_class = {s: {c: 0 for c in DRIVER_CLASSES} for s in SPLITS}
    for e in events:
        by_split_class[e.split][e.merged_label] += 1
    return {
        "total": len(events),
        "by_split": {s: sum(v.values()) for s, v in by_split_class.items()},
        "by_class": dict(Counter(e.merged_label for e in events)),
        "by_split_and_class": by_split_class,
        "by_year": {str(y): n for y, n in sorted(Counter(e.year for e in events).items())},
    }
