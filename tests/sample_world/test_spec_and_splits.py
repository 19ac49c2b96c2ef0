"""The sample world's specification and its split of events over train, val and test."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from pipeline.core.drivers import FINE_TO_MERGED
from pipeline.sample_world import WorldSpec
from pipeline.sample_world.layout import stratified_split


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="after the last loss year"):
        WorldSpec(loss_years=(2016, 2018))
    with pytest.raises(ValueError, match="same length"):
        WorldSpec(scene_cloud_cover=(0.1,))
    assert WorldSpec.from_json(WorldSpec.demo().to_json()) == WorldSpec()


def test_each_fine_label_is_spread_over_the_splits() -> None:
    """Every kind of land use is in the training split: a fine label held out whole (all
    the Mining pits of "Other" in test) is one no model can learn."""
    fines = [f for f, m in FINE_TO_MERGED.items() if m == "Other"]
    labels = [(fine, "Other") for fine in fines for _ in range(5)]
    labels += [("Grassland shrubland", "Grassland shrubland")] * 3
    for seed in range(20):
        split = stratified_split(np.random.default_rng(seed), labels, (0.5, 0.2, 0.3))
        per_fine = Counter((label[0], s) for label, s in zip(labels, split, strict=True))
        for fine in fines:
            assert per_fine[fine, "train"] >= 2 and per_fine[fine, "test"] >= 1, per_fine
        # The class's counts are those of its fractions; a class of 3 gets one per split.
        assert Counter(s for (_, m), s in zip(labels, split, strict=True) if m == "Other") == {
            "train": 12, "val": 5, "test": 8}
        assert sorted(split[-3:]) == ["test", "train", "val"]
