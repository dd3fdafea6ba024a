"""Stage 2: joint NFlowJS fine-tuning of segmenter and flow on mixed-content images (sec. 3.1)."""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import torch
from torch import nn
from torchvision.utils import make_grid

from nflowjs.checkpoint import build_flow, build_segmenter, config_dict, segmenter_state
from nflowjs.config import TrainConfig
from nflowjs.data.transforms import IGNORE_ID, to_model_input
from nflowjs.losses import nflowjs_loss
from nflowjs.networks.layers import batchnorm_statistics_kept
from nflowjs.pasting import crop_windows, draw_patch_size, inlier_locations, paste_patches
from nflowjs.scores import jsd_ood_score
from nflowjs.training.common import (
    FlowObjective,
    Runtime,
    StageFiles,
    autocast,
    cosine_factor,
    epoch_progress,
    require_checkpoint,
    seed_everything,
    segmenter_optimizer,
    summary_writer,
    training_loader,
    unwrap,
)
from nflowjs.training.validation import Validator


def nflowjs_step(
    segmenter: nn.Module,
    flow_objective: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    size: tuple[int, int],
    locations: tuple[torch.Tensor, torch.Tensor],
    lam: float,
    loss_scale: float = 1.0,
    segmenter_context=nullcontext,
):
    """One joint step's objective: its gradient is dL_disc/dtheta for the segmenter and
    dL_gen/dgamma for the flow (paper eqs. 3-5), from a single backward pass.

    Cross-entropy at inlier pixels also depends on the pasted pixels (receptive field), so a
    plain ``loss.total`` would hand the flow a CE gradient that eq. 4 does not contain. The
    segmenter therefore reads the mixed image as a leaf, and the flow receives exactly
    lambda * dL_neg/dx' through a linear surrogate ``<x', g>``, g computed beforehand.
    ``loss_scale`` is the AMP scale: g is taken on the scaled loss, so fp16 cannot underflow;
    ``segmenter_context`` (autocast) applies to the segmenter only, the flow stays in fp32.
    """
    negatives, nll = flow_objective(crop_windows(images, locations, size), size)
    batch = paste_patches(images, labels, negatives, IGNORE_ID, locations=locations)
    leaf = batch.images.detach().requires_grad_()
    with segmenter_context():
        logits = segmenter(leaf).float()
    loss = nflowjs_loss(logits, batch.labels, batch.ood_mask, nll, lam, IGNORE_ID)
    with batchnorm_statistics_kept(segmenter):  # checkpointing's recomputation
        (grad,) = torch.autograd.grad(loss_scale * lam * loss.negative, leaf, retain_graph=True)
    surrogate = (batch.images * (grad / loss_scale)).sum()
    objective = loss.cross_entropy + lam * loss.negative + loss.nll + surrogate
    return objective, loss, batch, logits


def train_stage2(config: TrainConfig, runtime: Runtime) -> dict:
    # Each process draws its own negatives and locations (DDP broadcasts the weights anyway).
    seed_everything(config.runtime.seed + 2 + runtime.rank)
    cfg = config.stage2
    stage1 = require_checkpoint(
        StageFiles(config, "stage1").last, "stage 1", "nflowjs train stage1"
    )
    flow_state = require_checkpoint(StageFiles(config, "flow").last, "flow", "nflowjs train flow")
    files = StageFiles(config, "stage2")
    loader, dataset = training_loader(config, runtime, cfg.batch_size)
    validator = Validator(config, runtime, files)

    model = build_segmenter(stage1).to(runtime.device)
    flow = build_flow(flow_state).to(runtime.device)
    model.set_gradient_checkpointing(config.runtime.gradient_checkpointing)
    optimizer = segmenter_optimizer(model, cfg.lr, cfg.backbone_lr_factor)
    flow_optimizer = torch.optim.Adamax(flow.parameters(), lr=cfg.flow_lr)
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda e, lr=lr: cosine_factor(e, cfg.epochs, lr, cfg.min_lr)
        )
        for opt, lr in ((optimizer, cfg.lr), (flow_optimizer, cfg.flow_lr))
    ]
    scaler = torch.amp.GradScaler(enabled=config.runtime.amp and runtime.device.type == "cuda")
    start_epoch = 0
    if (state := files.resume(runtime)) is not None:
        model.load_state_dict(segmenter_state(state))
        flow.load_state_dict(state["flow"])
        optimizer.load_state_dict(state["optimizer"])
        flow_optimizer.load_state_dict(state["flow_optimizer"])
        for scheduler, saved in zip(schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        if state.get("scaler"):  # empty when AMP is off (CPU)
            scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"]
    segmenter, flow_objective = runtime.wrap(model), runtime.wrap(FlowObjective(flow))
    writer = summary_writer(runtime, files.tensorboard)
    size_generator = torch.Generator().manual_seed(config.runtime.seed + 2 + start_epoch)

    step = start_epoch * len(loader)
    for epoch in range(start_epoch, cfg.epochs):
        segmenter.train()
        flow_objective.train()  # nothing frozen, BatchNorm in train mode (paper 4.3)
        bar = epoch_progress(loader, epoch, cfg.epochs, "stage 2", runtime)
        for images, labels in bar:
            images = to_model_input(images.to(runtime.device, non_blocking=True))
            labels = labels.to(runtime.device, non_blocking=True)
            # One size per step for all processes (same generator seed), one patch per image.
            size = draw_patch_size(
                cfg.patch_range, flow.size_multiple, images.shape[-2:], size_generator
            )
            locations = inlier_locations(labels, size, IGNORE_ID)
            scale = scaler.get_scale() if scaler.is_enabled() else 1.0
            objective, loss, batch, logits = nflowjs_step(
                segmenter,
                flow_objective,
                images,
                labels,
                size,
                locations,
                cfg.lam,
                scale,
                partial(autocast, runtime, config.runtime.amp),
            )
            optimizer.zero_grad(set_to_none=True)
            flow_optimizer.zero_grad(set_to_none=True)
            with batchnorm_statistics_kept(segmenter):
                scaler.scale(objective).backward()
            scaler.step(optimizer)
            scaler.step(flow_optimizer)
            scaler.update()
            step += 1
            bar.set_postfix(
                ce=f"{loss.cross_entropy.item():.3f}",
                neg=f"{loss.negative.item():.3f}",
                bpd=f"{loss.nll.item():.2f}",
            )
            if writer:
                for name in ("cross_entropy", "negative", "nll"):
                    writer.add_scalar(f"stage2/{name}", getattr(loss, name).item(), step)
        for scheduler in schedulers:
            scheduler.step()
        if writer and (epoch + 1) % config.runtime.log_images_every == 0:
            _log_images(writer, batch.images, logits, config.runtime.temperature, step)
        files.save(
            runtime,
            {
                "stage": "stage2",
                "epoch": epoch + 1,
                "model": unwrap(segmenter).state_dict(),
                "model_config": config_dict(model.config),
                "flow": flow.state_dict(),
                "flow_config": config_dict(flow.config),
                "classes": list(dataset.classes),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "flow_optimizer": flow_optimizer.state_dict(),
                "schedulers": [s.state_dict() for s in schedulers],
                "train_config": config.to_dict(),
            },
        )
        validator(segmenter, epoch + 1, writer, step)
    if writer:
        writer.close()
    return {"checkpoint": str(files.last), "model": model, "flow": flow}


def _log_images(writer, images: torch.Tensor, logits: torch.Tensor, temperature: float, step: int):
    """Mixed-content inputs above their OOD maps (red = high score) in TensorBoard."""
    with torch.no_grad():
        score = jsd_ood_score(logits.detach().float()[:4], temperature)[:, None]
    heat = torch.cat([score, torch.zeros_like(score), 1 - score], 1)
    writer.add_image(
        "stage2/mixed_inputs_and_ood_maps", make_grid(torch.cat([images[:4], heat]), nrow=4), step
    )
