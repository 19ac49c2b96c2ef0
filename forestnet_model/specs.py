"""Model and training specifications: validated pydantic, no torch import.

They sit apart from the model and the training loop so that loading a pipeline config (and
``forestnet --help``) does not pay for importing torch and segmentation_models_pytorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forestnet_model.pretrained_weights import (
    check_hub_source,
    is_hub_source,
    parse_weights_source,
)
from pipeline.core.drivers import DRIVER_CLASSES


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
    encoder_weights: Path | str | None = Field(
        None, description="initial encoder weights: a local file (safetensors or torch state "
        "dict of the encoder), 'imagenet' (timm's ImageNet weights for the encoder, from the "
        "Hugging Face cache; `forestnet fetch-weights` fills it) or 'timm:<model>.<tag>'; "
        "null: random"
    )
    fusion: bool = Field(
        False, description="late fusion: an MLP over region-mean logits, region band "
        "statistics and aux scalars gives the event's class"
    )
    fusion_features: tuple[str, ...] = Field(
        (), description="aux scalars fed to the fusion head (names of the chip store's "
        "aux_scalar 'feature' coordinate)"
    )
    fusion_hidden: tuple[int, ...] = Field((128, 128), description="fusion MLP hidden sizes")
    fusion_dropout: float = Field(0.2, ge=0, lt=1, description="fusion MLP dropout")
    event_context: int | None = Field(
        64, ge=0, description="pixels of context each side of the loss region's bounding box "
        "that evaluation and prediction see (the event window, grown to a multiple of 32); "
        "null: the whole chip"
    )

    @property
    def in_channels(self) -> int:
        return len(self.in_bands) + len(self.aux_bands)

    @field_validator("encoder_weights", mode="plain")
    @classmethod
    def _weights_source(cls, v: object) -> str | Path | None:
        return parse_weights_source(v)

    @model_validator(mode="after")
    def _hub_weights_fit(self) -> ModelSpec:
        if is_hub_source(self.encoder_weights):
            check_hub_source(self.encoder_weights, self.encoder, self.in_bands)
        return self

    @model_validator(mode="after")
    def _features_need_fusion(self) -> ModelSpec:
        if self.fusion_features and not self.fusion:
            raise ValueError("fusion_features are set but fusion is false; set fusion: true")
        if len(set(self.fusion_features)) != len(self.fusion_features):
            raise ValueError(f"repeated fusion_features in {self.fusion_features}")
        return self


class TrainSpec(BaseModel):
    """Training hyper-parameters (ForestNet defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(30, ge=1, description="maximum epochs")
    batch_size: int = Field(8, ge=1, description="events per batch")
    crop: int = Field(224, ge=32, description="random crop size (multiple of 32)")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="constant, or cosine decay to 0 over the planned epochs "
        "(settles short runs)"
    )
    grad_clip: float = Field(0.5, gt=0, description="gradient norm clip")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="judge and keep an exponential moving average of the "
        "weights with this decay per step (e.g. 0.98); None: the raw weights"
    )
    patience: int = Field(5, ge=1, description="early stopping patience, in epochs")
    seed: int = Field(0, description="seed for torch, numpy, python and the data order")
    sda: bool = Field(True, description="scene data augmentation: a random view per sample")
    device: str = Field("auto", description="auto, cpu or cuda")
    num_threads: int | None = Field(None, description="torch CPU threads (None: torch default)")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    cache_mb: float = Field(
        1024, ge=0, description="decoded training chips kept in memory per loader process "
        "(MiB, least recently used out first); a small training set is read from disk once"
    )
    max_batches_per_epoch: int | None = Field(None, description="cap for quick runs")
    samples_per_epoch: int | None = Field(
        None, ge=1, description="random crops drawn per epoch (None: one per training event)"
    )
    loss: Literal["ce", "focal", "focal_dice"] = Field(
        "ce", description="pixel loss over the loss region: cross-entropy, focal, or "
        "focal + soft Dice"
    )
    class_weights: Literal["balanced", "none"] | tuple[float, ...] = Field(
        "balanced", description="balanced: inverse class frequency of the training events; "
        "none; or one weight per class"
    )
    focal_gamma: float = Field(2.0, ge=0, description="focusing exponent of the focal loss")
    fusion_loss_weight: float = Field(
        1.0, ge=0, description="weight of the event-level cross-entropy on the fusion logits"
    )
    worker_resources: dict[str, float] = Field(
        default_factory=lambda: {"GPU": 1.0},
        description="Dask resources the training task asks for when some worker holds them; "
        "otherwise it runs on any (CPU) worker",
    )
    progress: Literal["auto", "on", "off"] = Field(
        "auto", description="per-epoch progress bar; auto: only on a terminal, never in Dask"
    )
    metrics_csv: bool = Field(False, description="also write metrics.csv next to metrics.jsonl")
    tensorboard: bool = Field(
        False, description="write TensorBoard scalars to <out>/tensorboard (if installed)"
    )

    @field_validator("crop")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"crop {v} is not a multiple of 32 (encoders downsample by 32)")
        return v

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(
        cls, v: Literal["balanced", "none"] | tuple[float, ...]
    ) -> Literal["balanced", "none"] | tuple[float, ...]:
        if isinstance(v, tuple) and (not v or min(v) < 0 or max(v) <= 0):
            raise ValueError(f"class_weights {v} must be non-negative with one above 0")
        return v
