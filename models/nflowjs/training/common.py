"""What every training stage shares: distributed setup, seeding, loaders, schedules, logging."""

from __future__ import annotations

import math
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from nflowjs.checkpoint import load_checkpoint, save_checkpoint
from nflowjs.config import TrainConfig
from nflowjs.data.registry import build_dataset
from nflowjs.data.transforms import training_transform
from nflowjs.networks.ldn import IMAGENET_MEAN
from nflowjs.pasting import clamp_to_image_range


@dataclass
class Runtime:
    """Where this process trains: device, rank and world size (torchrun sets the env vars)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP-wrap ``module`` when running under torchrun with several processes."""
        if not self.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)


class FlowObjective(torch.nn.Module):
    """The flow's work in one ``forward`` (what DDP synchronises): L_nll of the inlier crops, in
    bits per dimension (see ``nflowjs.losses.NFlowJSLoss``), and, given a ``size``, one synthetic
    negative per crop, clamped to the image range with a straight-through gradient."""

    def __init__(self, flow: torch.nn.Module):
        super().__init__()
        self.flow = flow

    def forward(self, inlier_crops: torch.Tensor, size: tuple[int, int] | None = None):
        negatives = None
        if size is not None:
            negatives = clamp_to_image_range(self.flow.sample(len(inlier_crops), *size))
        return negatives, self.flow.nll_bits_per_dim(inlier_crops)


def setup_runtime() -> Runtime:
    """One process per GPU under torchrun (NCCL), or gloo on CPU; plain single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size)


def teardown_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy's legacy global RNG (used by some augmentations) and torch."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002


def training_loader(
    config: TrainConfig, runtime: Runtime, batch_size: int, crop_size: int | None = None
) -> tuple[DataLoader, Dataset]:
    """Augmented training images of the configured dataset, sharded across processes."""
    data = config.data
    transform = training_transform(
        crop_size or data.crop_size, data.base_size, IMAGENET_MEAN, data.scale
    )
    dataset = build_dataset(data.dataset, data.root, data.train_split, transform)
    sampler = (
        DistributedSampler(dataset, runtime.world_size, runtime.rank, seed=config.runtime.seed)
        if runtime.distributed
        else None
    )
    per_process = max(1, batch_size // runtime.world_size)
    loader = DataLoader(
        dataset,
        batch_size=per_process,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=data.workers,
        drop_last=len(dataset) >= per_process * runtime.world_size,
        worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(config.runtime.seed + runtime.rank),
        persistent_workers=data.workers > 0,
        pin_memory=runtime.device.type == "cuda",
    )
    return loader, dataset


def epoch_progress(loader: DataLoader, epoch: int, epochs: int, stage: str, runtime: Runtime):
    """The loader's batches for ``epoch`` (reshuffled per epoch under DDP) with a progress bar."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    return tqdm(loader, desc=f"{stage} epoch {epoch + 1}/{epochs}", disable=not runtime.is_main)


def cosine_factor(epoch: float, cosine_epochs: int, lr: float, min_lr: float) -> float:
    """Multiplier of ``lr`` so that it anneals to ``min_lr`` at ``cosine_epochs`` (per epoch)."""
    progress = min(epoch / max(cosine_epochs, 1), 1.0)
    target = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
    return target / lr


def segmenter_optimizer(model, lr: float, backbone_factor: float) -> torch.optim.Adam:
    """Adam with the paper's split: the backbone at ``lr * backbone_factor``."""
    return torch.optim.Adam(
        [
            {"params": model.backbone_parameters(), "lr": lr * backbone_factor},
            {"params": model.decoder_parameters(), "lr": lr},
        ]
    )


@contextmanager
def autocast(runtime: Runtime, enabled: bool):
    """float16 autocast on CUDA when enabled; a no-op on CPU (fp32 there)."""
    with torch.autocast("cuda", torch.float16, enabled=enabled and runtime.device.type == "cuda"):
        yield


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


class StageFiles:
    """``<out_dir>/<stage>/last.pt`` (every epoch) and the TensorBoard folder of a stage."""

    def __init__(self, config: TrainConfig, stage: str):
        self.dir = Path(config.runtime.out_dir) / stage
        self.last = self.dir / "last.pt"
        self.tensorboard = Path(config.runtime.out_dir) / "tensorboard" / stage

    def resume(self, runtime: Runtime) -> dict | None:
        return load_checkpoint(self.last, runtime.device) if self.last.exists() else None

    def save(self, runtime: Runtime, payload: dict) -> None:
        if runtime.is_main:
            save_checkpoint(self.last, payload)
        if runtime.distributed:
            dist.barrier()


def summary_writer(runtime: Runtime, folder: Path):
    """TensorBoard writer on the main process; None elsewhere."""
    if not runtime.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(folder))


def require_checkpoint(path: Path, what: str, command: str) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{what} checkpoint {path} not found; run `{command}` first")
    return load_checkpoint(path)
