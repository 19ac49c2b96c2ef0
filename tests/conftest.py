"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest path of ``WorldSpec.tiny()``, generated once per test session."""
    from pipeline.sample_world import WorldSpec, generate_world

    return generate_world(tmp_path_factory.mktemp("sample_world") / "tiny", WorldSpec.tiny())
