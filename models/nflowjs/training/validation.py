"""Per-epoch validation: how epochs, crops and learning rates get chosen without the test split.

After each stage-1 and stage-2 epoch the segmenter is scored on ``data.val_split`` (whole
images): closed-set mIoU and, where that split has anomalies, the JSD score's AP and FPR95. Each
result goes to the console, TensorBoard and ``<stage>/val.jsonl`` (one JSON line an epoch).
Under DDP every process scores its share of the images and the counts are summed, so no
process waits on another for a whole validation pass.
"""

from __future__ import annotations

import json

import torch
import torch.distributed as dist
from tqdm import tqdm

from nflowjs.config import TrainConfig
from nflowjs.data.registry import build_dataset
from nflowjs.data.transforms import to_model_input
from nflowjs.metrics import ConfusionMatrix, OODMetricAccumulator
from nflowjs.scores import jsd_ood_key
from nflowjs.training.common import Runtime, StageFiles, unwrap


class Validator:
    """Built at the start of a stage, so a wrong ``val_split`` fails before any training."""

    def __init__(self, config: TrainConfig, runtime: Runtime, files: StageFiles):
        self.config, self.runtime, self.files = config, runtime, files
        split = config.data.val_split
        self.data = (
            build_dataset(config.data.dataset, config.data.root, split, None, True)
            if split
            else None
        )

    def __call__(self, model: torch.nn.Module, epoch: int, writer, step: int) -> dict | None:
        """Validate after ``epoch`` (1-based); every process must call it."""
        if self.data is None:
            return None
        result = self.validate(unwrap(model))
        if not self.runtime.is_main:
            return result
        stage = self.files.dir.name
        tqdm.write(
            f"{stage} epoch {epoch} val: "
            + ", ".join(f"{name} {100 * value:.2f}" for name, value in result.items())
        )
        if writer:
            for name, value in result.items():
                writer.add_scalar(f"{stage}/val_{name}", value, step)
        self.files.dir.mkdir(parents=True, exist_ok=True)
        with (self.files.dir / "val.jsonl").open("a") as log:
            log.write(json.dumps({"epoch": epoch, **result}) + "\n")
        return result

    @torch.no_grad()
    def validate(self, model: torch.nn.Module) -> dict:
        """mIoU (and JSD AP / FPR95 where the split marks anomalies) of ``model``."""
        device, rank, world = self.runtime.device, self.runtime.rank, self.runtime.world_size
        was_training = model.training
        model.eval()
        confusion = ConfusionMatrix(model.config.num_classes, device)
        ood = OODMetricAccumulator(device)
        shard = range(rank, len(self.data), world)
        for index in tqdm(shard, desc="validate", disable=not self.runtime.is_main):
            image, label, *ood_gt = self.data[index]
            logits = model(to_model_input(image.to(device))[None]).float()
            prediction, label = logits.argmax(1)[0], label.to(device)
            if ood_gt:  # anomalies are not a class of the closed-set mIoU
                inlier = ood_gt[0].to(device) == 0
                prediction, label = prediction[inlier], label[inlier]
                ood.update(jsd_ood_key(logits, self.config.runtime.temperature)[0], ood_gt[0])
            confusion.update(prediction, label)
        model.train(was_training)
        if self.runtime.distributed:
            for counts in (confusion.matrix, ood.inlier_counts, ood.anomaly_counts):
                dist.all_reduce(counts)
        result = {"mIoU": confusion.miou()}
        metrics = ood.compute()
        if metrics.anomalies and metrics.inliers:
            result |= {"jsd_AP": metrics.ap, "jsd_FPR95": metrics.fpr95}
        return result
