"""ForestNet model: a segmentation_models_pytorch network, region pooling and late fusion.

The network predicts per-pixel driver logits; an event's logits are the mean over its
loss region (Irvin et al. 2020). With ``ModelSpec.fusion`` an MLP over those region-mean
logits, region statistics of every input band and aux scalars gives the event's logits.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from forestnet_model.specs import ModelSpec

__all__ = ["ARCHITECTURES", "FlooredBatchNorm1d", "ForestNetModel", "FusionHead", "ModelSpec",
           "as_forestnet", "build_model", "check_input_size", "load_encoder_weights",
           "region_band_stats", "region_mean_logits", "segmentation_net"]

ARCHITECTURES = {"fpn": "FPN", "unet": "Unet", "deeplabv3plus": "DeepLabV3Plus"}


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the network; unknown names list the valid ones.

    Without fusion this is the plain smp segmentation model (``model(x)`` -> pixel
    logits), whose state dict is the one bundles have always held; with fusion it is a
    :class:`ForestNetModel` holding that network and the fusion head.
    """
    net = _segmentation_model(spec)
    if not spec.fusion:
        return net
    n_inputs = spec.n_classes + 2 * spec.in_channels + len(spec.fusion_features)
    head = FusionHead(n_inputs, spec.fusion_hidden, spec.fusion_dropout, spec.n_classes)
    return ForestNetModel(net, head)


def _segmentation_model(spec: ModelSpec) -> nn.Module:
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
        load_encoder_weights(model, spec.encoder_weights, n_rgb=3, encoder=spec.encoder)
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


def load_encoder_weights(model: nn.Module, source: Path | str, n_rgb: int = 3,
                         encoder: str | None = None) -> None:
    """Load encoder weights; extra input channels start from the mean RGB filter.

    ``source`` is a local file, ``imagenet`` or ``timm:<model>.<tag>`` (``encoder``, the smp
    encoder name, says which weights ``imagenet`` means): see
    :mod:`forestnet_model.pretrained_weights`. smp re-initialises the first convolution at
    random when in_channels > 3, which users report ruins training on RGB + IR; instead the
    first ``n_rgb`` channels take the pretrained RGB filters and each extra channel (bands
    and aux channels alike) their mean, all scaled by 3/in_channels to keep the activation
    scale.
    """
    from forestnet_model.pretrained_weights import encoder_state

    net = segmentation_net(model).encoder
    state, origin = encoder_state(source, net, encoder, n_rgb)
    own = net.state_dict()
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
                f"{origin}: {name} has shape {tuple(tensor.shape)}, "
                f"model expects {tuple(target.shape)}"
            )
    matched = [name for name in state if name in own]
    if not matched:
        raise ValueError(f"{origin}: no tensor name matches the {type(net).__name__} encoder; "
                         "is it a state dict of this encoder (not of the whole model)?")
    net.load_state_dict(own)


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


def region_band_stats(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation of each channel over the loss region: ``(B, 2C)``.

    Like :func:`region_mean_logits`, an empty region falls back to the whole chip.
    """
    x = x.float()
    m = mask.to(x.dtype).unsqueeze(1)
    area = m.sum(dim=(2, 3))
    has = area > 0
    m = torch.where(has[:, :, None, None], m, torch.ones_like(m))
    area = m.sum(dim=(2, 3))
    mean = (x * m).sum(dim=(2, 3)) / area
    var = (((x - mean[:, :, None, None]) ** 2) * m).sum(dim=(2, 3)) / area
    return torch.cat([mean, var.clamp(min=0).add(1e-6).sqrt()], dim=1)


class FlooredBatchNorm1d(nn.BatchNorm1d):
    """A BatchNorm whose standard deviation never falls below ``std_floor``.

    A plain BatchNorm divides by ``sqrt(var + eps)``: an input that was (nearly) constant
    in training gets a running variance near 0, and any other value of it at map time is
    multiplied by up to ``1/sqrt(eps)`` (316). Here no input is scaled by more than
    ``1/std_floor``, in training (batch statistics) and after it (the fixed running
    statistics). The parameters and buffers are BatchNorm1d's, so older bundles load.
    """

    def __init__(self, n_inputs: int, std_floor: float) -> None:
        super().__init__(n_inputs)
        self.std_floor = std_floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        floor = self.std_floor ** 2
        # One sample has no batch statistics: it is standardised with the running ones.
        if not self.training or x.shape[0] < 2:
            # BatchNorm's own kernel: where the floor does not bind, the numbers are a plain
            # BatchNorm's to the last bit (maps stay bit-identical across schedulings).
            return F.batch_norm(x, self.running_mean, self.running_var.clamp(min=floor),
                                self.weight, self.bias, False, 0.0, self.eps)
        mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
        with torch.no_grad():
            n = x.shape[0]
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
            self.num_batches_tracked += 1
        return (x - mean) * (self.weight * var.clamp(min=floor).add(self.eps).rsqrt()) + self.bias


class FusionHead(nn.Module):
    """ForestNet's late-fusion MLP: (Linear, ReLU, Dropout) per hidden layer, then Linear.

    Its inputs are first standardised (:class:`FlooredBatchNorm1d`): region-mean logits,
    band statistics and aux scalars live on different scales, and the logits' scale drifts
    while the network trains (to tens early on), which otherwise swamps the other inputs.
    The aux scalars arrive already standardised with their training mean and std
    (``scalar_stats``), the band statistics are of normalised channels: their spread over
    events is of order 1, so the floor of 0.1 bounds any input's gain at 10.
    """

    STD_FLOOR = 0.1

    def __init__(self, n_inputs: int, hidden: tuple[int, ...], dropout: float,
                 n_classes: int) -> None:
        super().__init__()
        self.norm = FlooredBatchNorm1d(n_inputs, self.STD_FLOOR)
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.mlp = nn.Sequential(*layers)
        self.n_inputs = n_inputs

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(features))


class ForestNetModel(nn.Module):
    """Segmentation network plus optional fusion head, with one calling convention.

    ``model(x)`` gives pixel logits, as the plain network does; ``model(x, mask,
    scalars)`` gives ``(pixel_logits, event_logits)``: the fusion head's logits when there
    is one, else the region-mean logits.
    """

    def __init__(self, net: nn.Module, head: FusionHead | None = None) -> None:
        super().__init__()
        self.net = net
        self.head = head

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None,
        scalars: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        if mask is None:
            return logits
        pooled = region_mean_logits(logits.float(), mask)
        if self.head is None:
            return logits, pooled
        return logits, self.event_logits(pooled, region_band_stats(x, mask), scalars)

    def event_logits(self, pooled: torch.Tensor, band_stats: torch.Tensor,
                     scalars: torch.Tensor | None = None) -> torch.Tensor:
        """An event's logits from its region statistics: the fusion head's when there is
        one, else the region-mean logits themselves. Mapping calls this on events merged
        across tiles, training and evaluation through :meth:`forward`."""
        if self.head is None:
            return pooled
        parts = [pooled, band_stats.to(pooled.dtype)]
        if scalars is not None and scalars.shape[1]:
            parts.append(scalars.to(pooled.dtype))
        features = torch.cat(parts, dim=1)
        if features.shape[1] != self.head.n_inputs:
            raise ValueError(f"fusion head expects {self.head.n_inputs} inputs, got "
                             f"{features.shape[1]}: pass one scalar per fusion feature")
        return self.head(features).float()


def as_forestnet(model: nn.Module) -> ForestNetModel:
    """The model under ForestNet's calling convention (a plain network is wrapped)."""
    return model if isinstance(model, ForestNetModel) else ForestNetModel(model)


def segmentation_net(model: nn.Module) -> nn.Module:
    """The smp network inside ``model`` (itself when it is one)."""
    return model.net if isinstance(model, ForestNetModel) else model
