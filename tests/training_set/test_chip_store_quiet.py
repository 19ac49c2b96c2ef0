"""Writing and opening chips.zarr shows a user no library warning."""

from __future__ import annotations

import warnings
from pathlib import Path

from pipeline.training_set.chip_store import open_chips
from tests.model.synthetic_chips import synthetic_chip_store


def test_finishing_and_opening_a_chip_store_warns_about_nothing(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chips = open_chips(synthetic_chip_store(tmp_path / "chips.zarr"))
    assert chips.sizes["event"] == 8
    # zarr warns on each v3 consolidated-metadata write and read; chips.zarr uses it on
    # purpose, and only that warning is silenced.
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []


def test_other_warnings_still_show(tmp_path: Path) -> None:
    from pipeline.training_set.chip_store import consolidated_metadata_quiet

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with consolidated_metadata_quiet():
            warnings.warn("Consolidated metadata is not in the spec", UserWarning, stacklevel=1)
            warnings.warn("a warning a user must see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning a user must see"]
