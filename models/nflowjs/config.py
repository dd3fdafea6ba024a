"""Training configuration: one YAML file per experiment, paper hyper-parameters as defaults.

Sections mirror the pipeline: ``data``, ``model``, ``stage1`` (segmenter on inliers), ``flow``
(flow pre-training on inlier crops), ``stage2`` (joint NFlowJS fine-tuning) and ``runtime``.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class DataConfig:
    dataset: str = "camvid-ood"
    root: str = "data/camvid"
    train_split: str = "train"
    val_split: str = "val"  # validated after every stage-1/2 epoch; "" turns validation off
    base_size: int = 1024  # shorter side before the random scale
    crop_size: int = 768
    scale: tuple[float, float] = (0.5, 2.0)
    workers: int = 4


@dataclass
class ModelConfig:
    preset: str = "ldn121"
    imagenet_weights: bool = True
    flow_preset: str = "denseflow-25-6"


@dataclass
class Stage1Config:
    epochs: int = 25
    batch_size: int = 16
    lr: float = 4e-4  # upsampling path; the backbone gets lr * backbone_lr_factor
    backbone_lr_factor: float = 0.25
    min_lr: float = 1e-7
    # The paper anneals as if training lasted twice as long (cosine "reached in the 50th epoch").
    cosine_epochs: int = 50


@dataclass
class FlowConfig:
    epochs: int = 10
    batch_size: int = 64
    crop_size: int = 64  # random inlier crops (32 for aerial images)
    lr: float = 1e-3
    warmup_steps: int = 5000


@dataclass
class Stage2Config:
    epochs: int = 15
    batch_size: int = 12
    lr: float = 1e-5
    backbone_lr_factor: float = 0.25
    min_lr: float = 1e-7
    # The paper's lambda (sec. 4.3), for L_neg a per-pixel mean and L_nll in bits per dimension
    # (nflowjs.losses.NFlowJSLoss says why that unit).
    lam: float = 0.03
    flow_lr: float = 1e-6
    patch_range: tuple[int, int] = (16, 216)


@dataclass
class RuntimeConfig:
    out_dir: str = "runs/experiment"
    seed: int = 0
    amp: bool = True  # float16 autocast on CUDA; ignored on CPU
    gradient_checkpointing: bool = True
    temperature: float = 2.0  # inference temperature of the JSD score
    log_images_every: int = 1  # epochs between TensorBoard image panels


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    flow: FlowConfig = field(default_factory=FlowConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_from_dict(raw: dict, source: str = "config") -> TrainConfig:
    """Build a TrainConfig, rejecting unknown sections and keys with their names."""
    sections = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    unknown = set(raw) - set(sections)
    if unknown:
        raise ValueError(
            f"{source}: unknown section(s) {sorted(unknown)}; known: {sorted(sections)}"
        )
    config = TrainConfig()
    for name, values in raw.items():
        section = getattr(config, name)
        if not isinstance(values, dict):
            raise ValueError(f"{source}: section '{name}' must be a mapping, got {values!r}")
        known = {f.name: f for f in dataclasses.fields(section)}
        bad = set(values) - set(known)
        if bad:
            raise ValueError(
                f"{source}: unknown key(s) {sorted(bad)} in '{name}'; known: {sorted(known)}"
            )
        for key, value in values.items():
            default = getattr(section, key)
            if isinstance(default, tuple):
                value = tuple(value)
            elif isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"{source}: {name}.{key} must be true or false, got {value!r}")
            elif isinstance(default, int | float) and not isinstance(default, bool):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise ValueError(f"{source}: {name}.{key} must be a number, got {value!r}")
                if isinstance(default, int) and value != int(value):
                    raise ValueError(
                        f"{source}: {name}.{key} must be a whole number, got {value!r}"
                    )
                value = type(default)(value)
            setattr(section, key, value)
    return config


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} not found; see configs/ for examples")
    raw = yaml.safe_load(path.read_text()) or {}
    return config_from_dict(raw, source=str(path))
