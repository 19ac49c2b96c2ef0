"""Segmentation losses over the loss region only: every other pixel is ignored.

ForestNet trains segmentation in which only the loss region carries the event's label.
``make_loss`` builds the configured pixel loss (cross-entropy, focal, focal + soft Dice);
``event_cross_entropy`` is the event-level term on the fusion head's logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

PixelLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def pixel_targets(mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel targets: the event's class inside the loss region, ignored elsewhere."""
    targets = labels.view(-1, 1, 1).expand_as(mask).clone().long()
    targets[~mask.bool()] = IGNORE_INDEX
    return targets


def _empty(targets: torch.Tensor) -> bool:
    return bool((targets == IGNORE_INDEX).all())



def pixel_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over pixels whose target is not IGNORE_INDEX (zero when there are none)."""
    if _empty(targets):
        return logits.sum() * 0.0  # keeps the graph: backward gives zero gradients
    return F.cross_entropy(logits.float(), targets, weight=class_weights,
                           ignore_index=IGNORE_INDEX)


def pixel_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017) over non-ignored pixels; with gamma 0 it is the CE.

    Normalised like weighted cross-entropy (by the summed weights of the pixels' classes),
    so the two agree exactly at gamma 0 with or without class weights.
    """
    if _empty(targets):
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits.float(), dim=1)
    keep = targets != IGNORE_INDEX
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    log_pt = log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    focus = (1.0 - log_pt.exp()).clamp(min=0.0) ** gamma if gamma else 1.0
    w = class_weights[safe] if class_weights is not None else torch.ones_like(log_pt)
    w = w * keep
    return -(w * focus * log_pt).sum() / w.sum().clamp(min=1e-12)


def pixel_dice_loss(logits: torch.Tensor, targets: torch.Tensor,
                    eps: float = 1e-6) -> torch.Tensor:
    """1 - mean soft Dice over classes, counted over non-ignored pixels of the whole batch.

    A class absent from both targets and predictions scores a Dice of 1 (nothing to miss),
    so a perfect prediction gives 0.
    """
    if _empty(targets):
        return logits.sum() * 0.0
    probs = torch.softmax(logits.float(), dim=1)
    keep = (targets != IGNORE_INDEX).unsqueeze(1).to(probs.dtype)
    safe = torch.where(targets == IGNORE_INDEX, torch.zeros_like(targets), targets)
    onehot = F.one_hot(safe, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype) * keep
    probs = probs * keep
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1.0 - dice.mean()


def make_loss(
    name: str, class_weights: torch.Tensor | None = None, gamma: float = 2.0,
) -> PixelLoss:
    """``loss(logits, mask, labels)`` over the loss region: "ce", "focal" or "focal_dice"."""
    if name not in ("ce", "focal", "focal_dice"):
        raise ValueError(f"unknown loss {name!r}; valid: ce, focal, focal_dice")

    def loss(logits: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        targets = pixel_targets(mask, labels)
        w = class_weights.to(logits.device) if class_weights is not None else None
        if name == "ce":
            return pixel_cross_entropy(logits, targets, w)
        value = pixel_focal_loss(logits, targets, w, gamma)
        if name == "focal_dice":
            value = value + pixel_dice_loss(logits, targets)
        return value

    return loss


def event_cross_entropy(
    event_logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Event-level cross-entropy on the fusion head's logits."""
    w = class_weights.to(event_logits.device) if class_weights is not None else None
    return F.cross_entropy(event_logits.float(), labels.long(), weight=w)


def class_weight_tensor(
    choice: str | Sequence[float], labels: np.ndarray, n_classes: int
) -> torch.Tensor | None:
    """Class weights from the training labels: "balanced", "none" or explicit values."""
    if isinstance(choice, str):
        if choice == "none":
            return None
        if choice != "balanced":
            raise ValueError(f"unknown class_weights {choice!r}; valid: balanced, none, a list")
        counts = np.bincount(np.asarray(labels, int), minlength=n_classes)[:n_classes]
        # Inverse frequency, scaled so that a balanced set gets weight 1 everywhere.
        return torch.tensor(counts.sum() / np.maximum(counts, 1) / n_classes,
                            dtype=torch.float32)
    if len(choice) != n_classes:
        raise ValueError(f"class_weights has {len(choice)} values; the model has {n_classes} "
                         "classes")
    return torch.tensor(list(choice), dtype=torch.float32)
