"""Both real Landsat crops ingested once into one store, shared by the ingest tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import rioxarray  # noqa: F401  (the .rio accessor)

from pipeline.ingest.scene_ingest import ingest_scene
from tests.ingest.real_crops import (
    L1_DIR,
    L1_ID,
    L2_DIR,
    L2_ID,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both real products ingested once into one store, shared read-only by the tests."""
    path = tmp_path_factory.mktemp("ingest") / "scenes.zarr"
    results = [ingest_scene(L1_DIR, path), ingest_scene(L2_DIR, path)]
    assert [(r.scene_id, r.status) for r in results] == [(L1_ID, "ingested"), (L2_ID, "ingested")]
    assert results[0].source == str(L1_DIR)
    return path
