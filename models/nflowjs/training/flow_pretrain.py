"""Flow pre-training: maximum likelihood on random inlier crops (64x64 road, 32x32 aerial)."""

from __future__ import annotations

import torch
from torchvision.utils import make_grid

from nflowjs.checkpoint import config_dict
from nflowjs.config import TrainConfig
from nflowjs.data.transforms import IGNORE_ID, to_model_input
from nflowjs.flow import DENSEFLOW_PRESETS, DenseFlow
from nflowjs.training.common import (
    FlowObjective,
    Runtime,
    StageFiles,
    epoch_progress,
    seed_everything,
    summary_writer,
    training_loader,
    unwrap,
)

CROPS_PER_IMAGE = 8


def random_inlier_crops(
    images: torch.Tensor, labels: torch.Tensor, size: int, per_image: int, max_ignored: float = 0.1
) -> torch.Tensor:
    """Up to ``per_image`` random size x size crops of each image that are mostly inliers.

    Ignored pixels (void and, in held-out-class setups, the anomalies) must not teach the flow
    what an inlier looks like: of 4 candidates per crop, those with at most ``max_ignored``
    ignored pixels are kept, fewest first. At least two crops always come back (the least
    ignored ones): BatchNorm in the coupling networks needs a batch.
    """
    n, _, h, w = images.shape
    tops = torch.randint(h - size + 1, (n, 4 * per_image))
    lefts = torch.randint(w - size + 1, (n, 4 * per_image))
    windows = [
        (i, t, left)
        for i in range(n)
        for t, left in zip(tops[i].tolist(), lefts[i].tolist(), strict=True)
    ]
    ignored = torch.stack(
        [
            (labels[i, t : t + size, left : left + size] == IGNORE_ID).float().mean()
            for i, t, left in windows
        ]
    ).view(n, -1)
    chosen = []
    for i in range(n):
        order = ignored[i].argsort()[:per_image]
        keep = order[ignored[i, order] <= max_ignored].tolist()
        chosen += [windows[i * ignored.shape[1] + j] for j in keep]
    if len(chosen) < 2:
        chosen = [windows[j] for j in ignored.flatten().argsort()[:2].tolist()]
    return torch.stack([images[i, :, t : t + size, left : left + size] for i, t, left in chosen])


def train_flow(config: TrainConfig, runtime: Runtime) -> dict:
    seed_everything(config.runtime.seed + 1 + runtime.rank)  # own crops and noise per process
    cfg = config.flow
    files = StageFiles(config, "flow")
    loader, _ = training_loader(config, runtime, max(1, cfg.batch_size // CROPS_PER_IMAGE))

    flow = DenseFlow(DENSEFLOW_PRESETS[config.model.flow_preset]).to(runtime.device)
    optimizer = torch.optim.Adamax(flow.parameters(), lr=cfg.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    )
    start_epoch = 0
    if (state := files.resume(runtime)) is not None:
        flow.load_state_dict(state["flow"])
        optimizer.load_state_dict(state["optimizer"])
        warmup.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
    else:
        # ActNorm's data-dependent init must happen before DDP broadcasts rank 0's weights.
        images, labels = next(iter(loader))
        crops = random_inlier_crops(images, labels, cfg.crop_size, CROPS_PER_IMAGE)
        with torch.no_grad():
            flow.log_prob(to_model_input(crops.to(runtime.device)))
    objective = runtime.wrap(FlowObjective(flow))
    writer = summary_writer(runtime, files.tensorboard)

    step = start_epoch * len(loader)
    for epoch in range(start_epoch, cfg.epochs):
        objective.train()
        bar = epoch_progress(loader, epoch, cfg.epochs, "flow", runtime)
        for images, labels in bar:
            crops = random_inlier_crops(images, labels, cfg.crop_size, CROPS_PER_IMAGE)
            _, bits_per_dim = objective(to_model_input(crops.to(runtime.device)))
            optimizer.zero_grad(set_to_none=True)
            bits_per_dim.backward()
            optimizer.step()
            warmup.step()
            step += 1
            bar.set_postfix(bpd=f"{bits_per_dim.item():.3f}")
            if writer:
                writer.add_scalar("flow/bits_per_dim", bits_per_dim.item(), step)
        if writer and (epoch + 1) % config.runtime.log_images_every == 0:
            with torch.no_grad():
                samples = flow.sample(16, cfg.crop_size, cfg.crop_size).clamp(0, 1)
            writer.add_image("flow/samples", make_grid(samples, nrow=8), step)
        files.save(
            runtime,
            {
                "stage": "flow",
                "epoch": epoch + 1,
                "flow": unwrap(objective).flow.state_dict(),
                "flow_config": config_dict(flow.config),
                "optimizer": optimizer.state_dict(),
                "scheduler": warmup.state_dict(),
                "train_config": config.to_dict(),
            },
        )
    if writer:
        writer.close()
    return {"checkpoint": str(files.last), "flow": flow}
