"""Tests for the driver model: factory, encoder weights, region pooling, loss, metrics."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from forestnet_model.losses import pixel_cross_entropy, pixel_targets
from forestnet_model.metrics import classification_report, confusion_matrix, f1_per_class
from forestnet_model.model import (
    ForestNetModel,
    ModelSpec,
    as_forestnet,
    build_model,
    check_input_size,
    load_encoder_weights,
    region_band_stats,
    region_mean_logits,
    segmentation_net,
)
from pipeline.core.runtime import tune_malloc_for_tensors

SMALL = "resnet18"  # fast encoder for tests that do not need EfficientNet-B2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batchnorms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# --- factory -------------------------------------------------------------------------------


def test_default_model_is_fpn_efficientnet_b2_with_6_bands_and_4_classes():
    spec = ModelSpec()
    model = build_model(spec)
    assert isinstance(model, smp.FPN)
    # smp's EfficientNet-B2 encoder; its stem maps the 6 chip bands to 32 channels.
    assert type(model.encoder).__name__ == "EfficientNetEncoder"
    assert model.encoder._conv_stem.weight.shape[:2] == (32, 6)
    assert spec.in_channels == 6
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 6, 64, 64))
    assert out.shape == (2, 4, 64, 64)
    # smp keeps TensorFlow's 0.01 momentum for EfficientNet; build_model sets 0.1 on all.
    bns = _batchnorms(model)
    assert len(bns) > 50
    assert all(bn.momentum == pytest.approx(0.1) for bn in bns)


@pytest.mark.parametrize(
    ("architecture", "cls"),
    [("fpn", smp.FPN), ("unet", smp.Unet), ("DeepLabV3Plus", smp.DeepLabV3Plus)],
)
def test_architectures_and_channel_count(architecture, cls):
    spec = ModelSpec(architecture=architecture, encoder=SMALL, aux_bands=("elevation", "slope"))
    model = build_model(spec).eval()
    assert isinstance(model, cls)
    with torch.no_grad():
        out = model(torch.randn(1, 8, 64, 64))
    assert out.shape == (1, 4, 64, 64)
    assert all(bn.momentum == pytest.approx(0.1) for bn in _batchnorms(model))


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ValueError, match="segformer") as err:
        build_model(ModelSpec(architecture="segformer", encoder=SMALL))
    for name in ("fpn", "unet", "deeplabv3plus"):
        assert name in str(err.value)


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(ValueError, match="efficientnet-b9") as err:
        build_model(ModelSpec(encoder="efficientnet-b9"))
    message = str(err.value)
    for name in ("efficientnet-b0", "efficientnet-b2", "resnet18", "resnet34", "mobilenet_v2"):
        assert name in message


def test_model_spec_rejects_unknown_keys():
    with pytest.raises(ValueError, match="encoder_name"):
        ModelSpec(encoder_name="resnet18")


# --- encoder weights -------------------------------------------------------------------------


@pytest.fixture
def rgb_encoder_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Encoder weights of another (3-band) model, perturbed so they differ from any init."""
    torch.manual_seed(1)
    rgb = build_model(ModelSpec(encoder=SMALL, in_bands=("red", "green", "blue")))
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in rgb.encoder.state_dict().items()}
    path = tmp_path / "rgb_encoder.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, state


def test_load_encoder_weights_extends_rgb_filters_to_extra_channels(rgb_encoder_weights):
    path, state = rgb_encoder_weights
    torch.manual_seed(2)
    model = build_model(ModelSpec(encoder=SMALL, aux_bands=("elevation",)))  # 7 channels
    load_encoder_weights(model, path, n_rgb=3)
    loaded = model.encoder.state_dict()
    rgb = state["conv1.weight"]
    stem = loaded["conv1.weight"]
    assert stem.shape == (64, 7, 7, 7)
    scale = 3 / 7
    torch.testing.assert_close(stem[:, :3], rgb * scale)
    mean = rgb.mean(dim=1)
    for c in range(3, 7):
        torch.testing.assert_close(stem[:, c], mean * scale)
    # Every other tensor is copied as is.
    for name, value in state.items():
        if name != "conv1.weight":
            torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)


def test_build_model_loads_encoder_weights_from_spec(rgb_encoder_weights):
    path, state = rgb_encoder_weights
    model = build_model(ModelSpec(encoder=SMALL, encoder_weights=path))
    stem = model.encoder.state_dict()["conv1.weight"]
    torch.testing.assert_close(stem[:, :3], state["conv1.weight"] * 0.5)
    torch.testing.assert_close(model.encoder.state_dict()["layer4.1.conv2.weight"],
                               state["layer4.1.conv2.weight"])
    assert all(bn.momentum == pytest.approx(0.1) for bn in _batchnorms(model))


def test_load_encoder_weights_rejects_wrong_shape_naming_the_file(rgb_encoder_weights, tmp_path):
    _, state = rgb_encoder_weights
    bad = dict(state)
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 32, 3, 3)
    path = tmp_path / "bad_encoder.safetensors"
    save_file({k: v.contiguous() for k, v in bad.items()}, str(path))
    model = build_model(ModelSpec(encoder=SMALL))
    with pytest.raises(ValueError, match="layer1.0.conv1.weight") as err:
        load_encoder_weights(model, path)
    assert str(path) in str(err.value)


def test_load_encoder_weights_refuses_a_file_that_matches_nothing(rgb_encoder_weights, tmp_path):
    _, state = rgb_encoder_weights
    # A whole-model state dict ("encoder." prefixes) would otherwise load nothing silently.
    prefixed = {f"encoder.{k}": v.contiguous() for k, v in state.items()}
    path = tmp_path / "whole_model.safetensors"
    save_file(prefixed, str(path))
    model = build_model(ModelSpec(encoder=SMALL))
    with pytest.raises(ValueError, match="no tensor name matches") as err:
        load_encoder_weights(model, path)
    assert str(path) in str(err.value)


# --- region pooling and input size -------------------------------------------------------------


def test_region_mean_logits_is_masked_mean_with_whole_chip_fallback():
    logits = torch.tensor([
        [[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]],
        [[[1.0, 2.0], [3.0, 5.0]], [[0.0, 0.0], [0.0, 8.0]]],
    ])  # (2, 2, 2, 2)
    mask = torch.tensor([[[1, 0], [0, 1]], [[0, 0], [0, 0]]], dtype=torch.uint8)
    pooled = region_mean_logits(logits, mask)
    expected = torch.tensor([
        [(1.0 + 4.0) / 2, (10.0 + 40.0) / 2],  # pixels (0, 0) and (1, 1)
        [(1 + 2 + 3 + 5) / 4, 8.0 / 4],  # empty region: mean over the chip
    ])
    torch.testing.assert_close(pooled, expected)


def test_region_mean_logits_accepts_bool_masks_and_keeps_gradients():
    logits = torch.randn(3, 4, 8, 8, requires_grad=True)
    mask = torch.zeros(3, 8, 8, dtype=torch.bool)
    mask[0, 2:4, 2:5] = True
    mask[2, 7, 7] = True
    pooled = region_mean_logits(logits, mask)
    torch.testing.assert_close(pooled[0], logits[0, :, 2:4, 2:5].mean(dim=(1, 2)))
    torch.testing.assert_close(pooled[2], logits[2, :, 7, 7])
    pooled.sum().backward()
    assert logits.grad[0, :, 0, 0].abs().sum() == 0  # outside the region
    assert logits.grad[1].abs().min() > 0  # fallback: every pixel counts


def test_check_input_size_says_the_padded_size():
    check_input_size(64, 352)
    with pytest.raises(ValueError, match="pad to 352x352"):
        check_input_size(332, 332)
    with pytest.raises(ValueError, match="pad to 224x64"):
        check_input_size(200, 64)


# --- late fusion ------------------------------------------------------------------------------

FUSION = ModelSpec(encoder=SMALL, fusion=True, fusion_features=("elevation_mean", "peat_fraction"))


def test_fusion_model_wraps_the_network_and_an_mlp_head():
    model = build_model(FUSION)
    assert isinstance(model, ForestNetModel)
    assert isinstance(segmentation_net(model), smp.FPN)
    layers = list(model.head.mlp)
    # ForestNet: (128, 128), ReLU, dropout 0.2; inputs = 4 logits + 2 x 6 band stats + 2.
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert (layers[0].in_features, layers[0].out_features) == (4 + 12 + 2, 128)
    assert (layers[3].in_features, layers[3].out_features) == (128, 128)
    assert layers[-1].out_features == 4 and layers[2].p == pytest.approx(0.2)
    assert model.head.norm.num_features == 4 + 12 + 2  # inputs standardised first
    model.eval()
    x, mask = torch.randn(3, 6, 64, 64), torch.zeros(3, 64, 64, dtype=torch.bool)
    mask[:, 20:30, 20:40] = True
    with torch.no_grad():
        assert model(x).shape == (3, 4, 64, 64)  # the plain segmentation call still works
        pixels, events = model(x, mask, torch.randn(3, 2))
    assert pixels.shape == (3, 4, 64, 64) and events.shape == (3, 4)
    with pytest.raises(ValueError, match="one scalar per fusion feature"):
        model(x, mask, torch.randn(3, 5))
    model.train()
    _, one = model(x[:1], mask[:1], torch.randn(1, 2))  # a batch of one still trains
    assert one.shape == (1, 4)


def test_without_fusion_event_logits_are_the_region_mean():
    net = build_model(ModelSpec(encoder=SMALL)).eval()
    assert as_forestnet(net).net is net and segmentation_net(net) is net
    x, mask = torch.randn(2, 6, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[0, :10, :10] = True
    with torch.no_grad():
        pixels, events = as_forestnet(net)(x, mask)
        torch.testing.assert_close(events, region_mean_logits(net(x), mask))
    assert pixels.shape == (2, 4, 64, 64)


def test_region_band_stats_by_hand():
    x = torch.zeros(2, 2, 3, 3)
    x[0, 0] = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
    x[0, 1] = 5.0
    x[1, 0] = torch.arange(9.0).view(3, 3)
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[0, 0, :2] = True
    mask[0, 1, 0] = True  # values 1, 2, 3 of channel 0
    stats = region_band_stats(x, mask)
    assert stats.shape == (2, 4)  # mean of each channel, then std of each
    torch.testing.assert_close(stats[0], torch.tensor([2.0, 5.0, (2 / 3) ** 0.5, 0.0]),
                               atol=1e-3, rtol=0)
    # Empty region: the whole chip.
    torch.testing.assert_close(stats[1, 0], torch.tensor(4.0))
    torch.testing.assert_close(stats[1, 2], torch.arange(9.0).std(unbiased=False),
                               atol=1e-3, rtol=0)


def test_fusion_features_need_fusion():
    with pytest.raises(ValueError, match="fusion is false"):
        ModelSpec(fusion_features=("elevation_mean",))
    with pytest.raises(ValueError, match="repeated"):
        ModelSpec(fusion=True, fusion_features=("a", "a"))


def test_fusion_model_loads_encoder_weights(rgb_encoder_weights):
    path, state = rgb_encoder_weights
    model = build_model(FUSION.model_copy(update={"encoder_weights": path}))
    torch.testing.assert_close(model.encoder.state_dict()["layer4.1.conv2.weight"],
                               state["layer4.1.conv2.weight"])


# --- loss ---------------------------------------------------------------------------------------


def test_region_cross_entropy_ignores_pixels_outside_the_mask():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6)
    mask = torch.zeros(2, 6, 6, dtype=torch.uint8)
    mask[0, 1:3, 1:4] = 1
    mask[1, 5, 0] = 1
    labels = torch.tensor([2, 0])
    loss = pixel_cross_entropy(logits, pixel_targets(mask, labels))

    changed = logits.clone()
    changed[mask.bool().unsqueeze(1).expand_as(changed).logical_not()] = 100.0
    torch.testing.assert_close(pixel_cross_entropy(changed, pixel_targets(mask, labels)), loss)

    # Equals plain cross-entropy over the region pixels alone.
    inside = mask.bool()
    pixels = logits.permute(0, 2, 3, 1)[inside]  # (n_inside, 4)
    targets = labels.view(-1, 1, 1).expand_as(mask)[inside]
    torch.testing.assert_close(loss, F.cross_entropy(pixels, targets))
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    torch.testing.assert_close(pixel_cross_entropy(logits, pixel_targets(mask, labels), weights),
                               F.cross_entropy(pixels, targets, weight=weights))


def test_region_cross_entropy_of_empty_mask_is_zero_with_gradient():
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    loss = pixel_cross_entropy(logits, pixel_targets(torch.zeros(2, 5, 5), torch.tensor([1, 3])))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# --- metrics ------------------------------------------------------------------------------------

Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 3]
Y_PRED = [0, 0, 1, 1, 2, 2, 2, 0]


def test_confusion_matrix_rows_are_truth():
    cm = confusion_matrix(np.array(Y_TRUE), np.array(Y_PRED), 4)
    np.testing.assert_array_equal(cm, [
        [2, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 2, 0],
        [1, 0, 0, 0],
    ])


def test_f1_and_macro_f1_by_hand():
    # Per class (tp, fp, fn): 0 (2, 1, 1), 1 (1, 1, 1), 2 (2, 1, 0), 3 (0, 0, 1).
    expected = [4 / 6, 2 / 4, 4 / 5, 0.0]
    cm = confusion_matrix(np.array(Y_TRUE), np.array(Y_PRED), 4)
    np.testing.assert_allclose(f1_per_class(cm), expected)
    report = classification_report(Y_TRUE, Y_PRED, 4)
    assert report["n"] == 8
    assert report["accuracy"] == pytest.approx(5 / 8)
    assert report["macro_f1"] == pytest.approx(sum(expected) / 4)
    assert report["f1_per_class"] == pytest.approx(expected)


def test_class_absent_everywhere_is_left_out_of_macro_f1():
    report = classification_report(Y_TRUE, Y_PRED, 5)
    assert report["f1_per_class"][4] is None
    assert report["macro_f1"] == pytest.approx((4 / 6 + 2 / 4 + 4 / 5 + 0.0) / 4)
    assert np.array(report["confusion_matrix"]).shape == (5, 5)


# --- runtime ------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt tuning is for Linux/glibc",
)
def test_tune_malloc_for_tensors_succeeds_on_glibc():
    assert tune_malloc_for_tensors() is True
