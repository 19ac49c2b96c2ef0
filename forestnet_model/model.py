"""ForestNet model: a segmentation_models_pytorch network plus region pooling.

The network predicts per-pixel driver logits; an event's logits are the mean over its
loss region (Irvin et al. 2020).
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from pipeline.drivers import DRIVER_CLASSES

ARCHITECTURES = {"fpn": "FPN", "unet": "Unet", "deeplabv3plus": "DeepLabV3Plus"}


class ModelSpec(BaseModel):
    """Architecture of the driver model; stored in every bundle."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field("fpn", description="one of fpn, unet, deeplabv3plus")
    encoder: str = Field("efficientnet-b2", description="segmentation_models_pytorch encoder")
    in_bands: tuple[str, ...] = Field(
        ("red", "green", "blue", "nir", "swir1", "swir2"), description="chip bands, in order"
    )
    aux_bands: tuple[str, ...] = Field((), description="per-pixel aux channels appended")
    n_classes: int = Field(len(DRIVER_CLASSES), description="driver classes")
    encoder_weights: Path | None = Field(
        None, description="local encoder weights (safetensors or torch state dict); never fetched"
    )

    @property
    def in_channels(self) -> int:
        return len(self.in_bands) + len(self.aux_bands)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the segmentation network; unknown names list the valid ones."""
    arch = spec.architecture.lower()
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {spec.architecture!r}; valid: {sorted(ARCHITECTURES)}"
        )
    valid_encoders = smp.encoders.get_encoder_names()
    if spec.encoder not in valid_encoders:
        raise ValueError(
            f"unknown encoder {spec.encoder!r}; valid: {', '.join(sorted(valid_encoders))}"
        )
    model = smp.create_model(
        ARCHITECTURES[arch],
        encoder_name=spec.encoder,
        encoder_weights=None,
        in_channels=spec.in_channels,
        classes=spec.n_classes,
    )
    if spec.encoder_weights is not None:
        load_encoder_weights(model, spec.encoder_weights, n_rgb=3)
    set_batchnorm_momentum(model, BATCHNORM_MOMENTUM)
    return model


#: smp's efficientnet encoders keep TensorFlow's BatchNorm momentum (0.01 in PyTorch terms):
#: the running statistics then need thousands of steps to leave their initial values, and a
#: model trained for a few hundred steps predicts one class in eval mode. 0.1 (PyTorch's
#: default) settles within an epoch and is harmless for long runs.
BATCHNORM_MOMENTUM = 0.1


def set_batchnorm_momentum(model: nn.Module, momentum: float) -> None:
    """Set the running-statistics momentum of every BatchNorm layer."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def load_encoder_weights(model: nn.Module, path: Path, n_rgb: int = 3) -> None:
    """Load local encoder weights; extra input channels start from the mean RGB filter.

    smp re-initialises the first convolution at random when in_channels > 3, which users
    report ruins training on RGB + IR; instead the first ``n_rgb`` channels take the
    pretrained RGB filters and each extra channel their mean, all scaled by 3/in_channels
    to keep the activation scale.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    encoder = model.encoder
    own = encoder.state_dict()
    for name, tensor in state.items():
        if name not in own:
            continue
        target = own[name]
        if tensor.shape == target.shape:
            own[name] = tensor
        elif tensor.ndim == 4 and tensor.shape[1] == n_rgb and target.shape[1] > n_rgb:
            extra = tensor.mean(dim=1, keepdim=True).expand(-1, target.shape[1] - n_rgb, -1, -1)
            own[name] = torch.cat([tensor, extra], dim=1) * (n_rgb / target.shape[1])
        else:
            raise ValueError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, "
                f"model expects {tuple(target.shape)}"
            )
    matched = [name for name in state if name in own]
    if not matched:
        raise ValueError(f"{path}: no tensor name matches the {type(encoder).__name__} encoder; "
                         "is it a state dict of this encoder (not of the whole model)?")
    encoder.load_state_dict(own)


def region_mean_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel logits over each sample's loss region: ``(B, C, H, W) -> (B, C)``.

    Samples with an empty region fall back to the mean over the whole chip.
    """
    m = mask.to(logits.dtype).unsqueeze(1)
    area = m.sum(dim=(2, 3))
    pooled = (logits * m).sum(dim=(2, 3)) / area.clamp(min=1.0)
    whole = logits.mean(dim=(2, 3))
    return torch.where(area > 0, pooled, whole)


def check_input_size(height: int, width: int, stride: int = 32) -> None:
    """Encoders downsample by 32: say how to pad when the size does not divide."""
    if height % stride or width % stride:
        ph = -(-height // stride) * stride
        pw = -(-width // stride) * stride
        raise ValueError(f"input {height}x{width} is not divisible by {stride}; pad to {ph}x{pw}")
