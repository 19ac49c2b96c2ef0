"""The weight average (EMA) that ``train.ema_decay`` judges and keeps; its resume is in
``test_train.py``."""

from __future__ import annotations

import pytest
import torch

from forestnet_model.weight_average import WeightAverage


def test_the_weight_average_is_an_ema_with_warm_up_and_copies_counters():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(net, decay=0.9)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 5
    average.update(net)  # first update: decay min(0.9, 1 / 10) = 0.1
    assert torch.allclose(average.module[0].weight, start + 0.9)
    assert int(average.module[1].num_batches_tracked) == 5
    assert all(not p.requires_grad for p in average.module.parameters())
    restored = WeightAverage(net, decay=0.9)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 1 and restored.current_decay() == pytest.approx(2 / 11)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, decay=1.0)
