"""Tests for the region losses: focal, Dice, their combination, class weights, fusion CE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forestnet_model.losses import (
    IGNORE_INDEX,
    class_weight_tensor,
    event_cross_entropy,
    make_loss,
    pixel_cross_entropy,
    pixel_dice_loss,
    pixel_focal_loss,
    pixel_targets,
)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 4, 8, 8, generator=g)
    mask = torch.zeros(3, 8, 8, dtype=torch.bool)
    mask[0, 1:4, 2:6] = True
    mask[1, 5:8, 0:3] = True
    mask[2, 0, 0] = True
    return logits, mask, torch.tensor([1, 3, 0])


@pytest.mark.parametrize("weights", [None, torch.tensor([0.5, 1.0, 2.0, 4.0])])
def test_focal_with_gamma_zero_equals_cross_entropy(weights):
    logits, mask, labels = _batch()
    targets = pixel_targets(mask, labels)
    focal = pixel_focal_loss(logits, targets, weights, gamma=0.0)
    torch.testing.assert_close(focal, pixel_cross_entropy(logits, targets, weights))
    torch.testing.assert_close(make_loss("focal", weights, gamma=0.0)(logits, mask, labels),
                               make_loss("ce", weights)(logits, mask, labels))


def test_focal_down_weights_easy_pixels():
    logits, mask, labels = _batch()
    targets = pixel_targets(mask, labels)
    ce = pixel_cross_entropy(logits, targets)
    assert pixel_focal_loss(logits, targets, gamma=2.0) < ce
    # By hand for one pixel: -(1 - p)^2 log p.
    one = torch.full((1, 4, 1, 1), 0.0)
    one[0, 2] = 1.0
    p = torch.softmax(one[0, :, 0, 0], 0)[2]
    expected = -((1 - p) ** 2) * torch.log(p)
    torch.testing.assert_close(pixel_focal_loss(one, torch.tensor([[[2]]]), gamma=2.0), expected)


@pytest.mark.parametrize("name", ["ce", "focal", "focal_dice"])
def test_ignored_pixels_get_zero_gradient(name):
    logits, mask, labels = _batch()
    logits.requires_grad_(True)
    make_loss(name, torch.tensor([1.0, 2.0, 1.0, 0.5]))(logits, mask, labels).backward()
    outside = ~mask.unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[outside] == 0)
    assert logits.grad[~outside].abs().sum() > 0


@pytest.mark.parametrize("name", ["ce", "focal", "focal_dice"])
def test_pixels_outside_the_region_do_not_change_the_loss(name):
    logits, mask, labels = _batch()
    loss = make_loss(name)(logits, mask, labels)
    changed = logits.clone()
    changed[~mask.unsqueeze(1).expand_as(changed)] = 50.0
    torch.testing.assert_close(make_loss(name)(changed, mask, labels), loss)


def test_dice_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    _, mask, labels = _batch()
    targets = pixel_targets(mask, labels)
    perfect = 100.0 * F.one_hot(targets.clamp(min=0), 4).permute(0, 3, 1, 2).float()
    assert pixel_dice_loss(perfect, targets).item() == pytest.approx(0.0, abs=1e-6)
    wrong = 100.0 * F.one_hot((targets.clamp(min=0) + 1) % 4, 4).permute(0, 3, 1, 2).float()
    assert pixel_dice_loss(wrong, targets).item() > 0.5
    # Ignored pixels may hold anything.
    messy = perfect.clone()
    messy[:, 0][~mask] = 1e3
    assert pixel_dice_loss(messy, targets).item() == pytest.approx(0.0, abs=1e-6)


def test_empty_regions_give_zero_with_a_graph():
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    targets = torch.full((2, 5, 5), IGNORE_INDEX)
    for fn in (pixel_cross_entropy, pixel_focal_loss, pixel_dice_loss):
        loss = fn(logits, targets)
        assert loss.item() == 0.0 and loss.requires_grad


def test_make_loss_rejects_unknown_names():
    with pytest.raises(ValueError, match="focal_dice"):
        make_loss("dice")


def test_class_weights():
    labels = np.array([0, 0, 0, 1, 2, 2])
    balanced = class_weight_tensor("balanced", labels, 4)
    torch.testing.assert_close(balanced, torch.tensor([6 / 3 / 4, 6 / 1 / 4, 6 / 2 / 4, 6 / 4]))
    assert class_weight_tensor("none", labels, 4) is None
    torch.testing.assert_close(class_weight_tensor((1.0, 2.0, 3.0, 4.0), labels, 4),
                               torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError, match="4 classes"):
        class_weight_tensor((1.0, 2.0), labels, 4)


def test_event_cross_entropy_matches_torch():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 1])
    w = torch.tensor([1.0, 2.0, 0.5, 1.0])
    torch.testing.assert_close(event_cross_entropy(logits, labels, w),
                               F.cross_entropy(logits, labels, weight=w))
