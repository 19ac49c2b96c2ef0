"""Segmentation loss over the loss region only: every other pixel is ignored."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def pixel_targets(mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel targets: the event's class inside the loss region, ignored elsewhere."""
    targets = labels.view(-1, 1, 1).expand_as(mask).clone().long()
    targets[~mask.bool()] = IGNORE_INDEX
    return targets


def region_cross_entropy(
    logits: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy averaged over loss-region pixels (ForestNet's training objective)."""
    targets = pixel_targets(mask, labels)
    if (targets != IGNORE_INDEX).sum() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, weight=class_weights,
                           ignore_index=IGNORE_INDEX)
