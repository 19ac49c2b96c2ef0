"""The event window: what evaluation and prediction feed the network for one event."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forestnet_model.model_inputs import event_window
from forestnet_model.predict import predict_events
from tests.map_job import untrained_bundle

SIZE = 332


def region(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[rows, cols] = True
    return mask


def test_the_window_holds_the_region_and_its_context_in_whole_strides() -> None:
    rows, cols = event_window(region(slice(150, 170), slice(160, 200)), context=64)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (160, 192)
    assert rows.start <= 150 - 64 and rows.stop >= 170 + 64
    assert cols.start <= 160 - 64 and cols.stop >= 200 + 64


def test_a_window_at_the_edge_stays_inside_the_chip() -> None:
    rows, cols = event_window(region(slice(0, 5), slice(320, SIZE)), context=64)
    assert (rows.start, cols.stop) == (0, SIZE)
    assert rows.stop - rows.start == cols.stop - cols.start == 160


@pytest.mark.parametrize("mask, context", [
    (region(slice(150, 170), slice(160, 200)), None),  # no window asked for
    (np.zeros((SIZE, SIZE), bool), 64),  # no region
    (region(slice(10, 320), slice(160, 170)), 64),  # the window would not fit
])
def test_otherwise_the_whole_chip(mask: np.ndarray, context: int | None) -> None:
    assert event_window(mask, context) == (slice(None), slice(None))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_bundle(tmp_path_factory.mktemp("window-bundle"), fusion_features=())


def test_a_prediction_sees_its_window_only_and_not_its_batch(bundle: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 0.3, (3, 6, SIZE, SIZE)).astype(np.float32)
    masks = np.stack([region(slice(150, 170), slice(160, 200)),
                      region(slice(140, 190), slice(140, 190)),
                      region(slice(0, 5), slice(320, SIZE))])
    together, _ = predict_events(bundle, images, masks, batch_size=3, device="cpu")
    alone, _ = predict_events(bundle, images[:1], masks[:1], device="cpu")
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)

    outside, inside = images[:1].copy(), images[:1].copy()
    outside[..., :60, :] = 0.9  # rows 0-59 lie outside the first event's window (80-240)
    inside[..., 100:110, :] = 0.9
    np.testing.assert_allclose(predict_events(bundle, outside, masks[:1], device="cpu")[0],
                               alone, atol=1e-5)
    assert not np.allclose(predict_events(bundle, inside, masks[:1], device="cpu")[0], alone,
                           atol=1e-4)
