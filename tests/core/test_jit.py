"""Kernels still run where numba's own cache folders cannot be written (read-only installs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from numba.core import config

from pipeline.core.jit import cached_njit, temporary_cache_dir


def _double(x: np.ndarray) -> np.ndarray:
    return x * 2


@pytest.fixture
def no_cache_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No NUMBA_CACHE_DIR, and a temporary directory of the test's own."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)  # restored (unset) afterwards
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config.reload_config()
    yield tmp_path
    monkeypatch.undo()
    config.reload_config()  # numba's settings from the restored environment


def _only_locators(monkeypatch: pytest.MonkeyPatch, names: str) -> None:
    monkeypatch.setenv("NUMBA_CACHE_LOCATOR_CLASSES", names)
    config.reload_config()


def test_unwritable_module_and_user_folders_fall_back_to_a_temporary_one(
    monkeypatch: pytest.MonkeyPatch, no_cache_folder: Path
) -> None:
    # As from a read-only install with a read-only home: numba finds no folder of its own.
    _only_locators(monkeypatch, "UserProvidedCacheLocator")  # NUMBA_CACHE_DIR only
    kernel = cached_njit(_double)
    np.testing.assert_array_equal(kernel(np.arange(3.0)), [0.0, 2.0, 4.0])
    folder = temporary_cache_dir()
    assert folder.parent == no_cache_folder
    assert os.environ["NUMBA_CACHE_DIR"] == str(folder)  # Dask workers inherit it
    assert any(folder.rglob("*_double*.nbi"))


def test_no_writable_folder_at_all_still_runs_without_a_disk_cache(
    monkeypatch: pytest.MonkeyPatch, no_cache_folder: Path
) -> None:
    _only_locators(monkeypatch, "IPythonCacheLocator")  # only for notebook cells: none
    kernel = cached_njit(_double)
    with pytest.warns(RuntimeWarning, match="compiles in every process"):
        np.testing.assert_array_equal(kernel(np.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(kernel(np.ones(1)), [2.0])  # warned once
