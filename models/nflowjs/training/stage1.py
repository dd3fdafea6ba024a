"""Stage 1: the segmenter learns the inlier classes with cross-entropy (paper section 4.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nflowjs.checkpoint import config_dict, segmenter_state
from nflowjs.config import TrainConfig
from nflowjs.data.transforms import IGNORE_ID, to_model_input
from nflowjs.networks import LadderDenseNet, ldn_config
from nflowjs.networks.layers import batchnorm_statistics_kept
from nflowjs.training.common import (
    Runtime,
    StageFiles,
    autocast,
    cosine_factor,
    epoch_progress,
    seed_everything,
    segmenter_optimizer,
    summary_writer,
    training_loader,
    unwrap,
)
from nflowjs.training.validation import Validator


def train_stage1(config: TrainConfig, runtime: Runtime) -> dict:
    seed_everything(config.runtime.seed)
    cfg = config.stage1
    files = StageFiles(config, "stage1")
    loader, dataset = training_loader(config, runtime, cfg.batch_size)
    validator = Validator(config, runtime, files)

    model = LadderDenseNet(
        ldn_config(config.model.preset, num_classes=len(dataset.classes)),
        imagenet_weights=config.model.imagenet_weights,
    ).to(runtime.device)
    model.set_gradient_checkpointing(config.runtime.gradient_checkpointing)
    optimizer = segmenter_optimizer(model, cfg.lr, cfg.backbone_lr_factor)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: cosine_factor(e, cfg.cosine_epochs, cfg.lr, cfg.min_lr)
    )
    scaler = torch.amp.GradScaler(enabled=config.runtime.amp and runtime.device.type == "cuda")
    start_epoch = 0
    if (state := files.resume(runtime)) is not None:
        model.load_state_dict(segmenter_state(state))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):  # empty when AMP is off (CPU)
            scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
    trained = runtime.wrap(model)
    writer = summary_writer(runtime, files.tensorboard)

    step = start_epoch * len(loader)
    for epoch in range(start_epoch, cfg.epochs):
        trained.train()
        bar = epoch_progress(loader, epoch, cfg.epochs, "stage 1", runtime)
        for images, labels in bar:
            images = to_model_input(images.to(runtime.device, non_blocking=True))
            labels = labels.to(runtime.device, non_blocking=True)
            with autocast(runtime, config.runtime.amp):
                loss = F.cross_entropy(trained(images), labels, ignore_index=IGNORE_ID)
            optimizer.zero_grad(set_to_none=True)
            with batchnorm_statistics_kept(trained):  # checkpointing's recomputation
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            bar.set_postfix(ce=f"{loss.item():.3f}")
            if writer:
                writer.add_scalar("stage1/cross_entropy", loss.item(), step)
        scheduler.step()
        if writer:
            writer.add_scalar("stage1/lr_decoder", optimizer.param_groups[1]["lr"], step)
        files.save(
            runtime,
            {
                "stage": "stage1",
                "epoch": epoch + 1,
                "model": unwrap(trained).state_dict(),
                "model_config": config_dict(model.config),
                "classes": list(dataset.classes),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "scheduler": scheduler.state_dict(),
                "train_config": config.to_dict(),
            },
        )
        validator(trained, epoch + 1, writer, step)
    if writer:
        writer.close()
    return {"checkpoint": str(files.last), "model": model}
