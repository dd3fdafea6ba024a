"""Per-epoch validation: how epochs, crops and learning rates get chosen without the test split.

After each stage-1 and stage-2 epoch the segmenter is scored on ``data.val_split`` (whole
images): closed-set mIoU and, where that split has anomalies, the JSD score's AP and FPR95. Each
result goes to the console, TensorBoard and ``<stage>/val.jsonl`` (one JSON line an epoch).
"""

from __future__ import annotations

import json

import torch
from tqdm import tqdm

from nflowjs.config import TrainConfig
from nflowjs.data.registry import build_dataset
from nflowjs.data.transforms import to_model_input
from nflowjs.metrics import ConfusionMatrix, OODMetricAccumulator
from nflowjs.scores import jsd_ood_key
from nflowjs.training.common import Runtime, StageFiles, unwrap


@torch.no_grad()
def validate(model: torch.nn.Module, config: TrainConfig, runtime: Runtime) -> dict:
    """mIoU (and JSD AP / FPR95 where the split marks anomalies) of ``model`` on the val split."""
    data = build_dataset(config.data.dataset, config.data.root, config.data.val_split, None, True)
    model = unwrap(model)
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(model.config.num_classes)
    ood = OODMetricAccumulator()
    for image, label, *ood_gt in tqdm(data, desc=f"validate ({config.data.val_split})"):
        logits = model(to_model_input(image.to(runtime.device))[None]).float().cpu()
        prediction = logits.argmax(1)[0]
        if ood_gt:  # anomalies are not a class of the closed-set mIoU
            prediction, label = prediction[ood_gt[0] == 0], label[ood_gt[0] == 0]
        confusion.update(prediction, label)
        if ood_gt:
            ood.update(jsd_ood_key(logits, config.runtime.temperature)[0], ood_gt[0])
    model.train(was_training)
    result = {"mIoU": confusion.miou()}
    metrics = ood.compute()
    if metrics.anomalies and metrics.inliers:
        result |= {"jsd_AP": metrics.ap, "jsd_FPR95": metrics.fpr95}
    return result


def validate_epoch(
    model, config: TrainConfig, runtime: Runtime, files: StageFiles, epoch: int, writer, step: int
) -> None:
    """Validate after ``epoch`` (1-based) on the main process and record the result."""
    if not config.data.val_split or not runtime.is_main:
        return
    result = validate(model, config, runtime)
    tqdm.write(
        f"{files.dir.name} epoch {epoch} val: "
        + ", ".join(f"{name} {100 * value:.2f}" for name, value in result.items())
    )
    if writer:
        for name, value in result.items():
            writer.add_scalar(f"{files.dir.name}/val_{name}", value, step)
    files.dir.mkdir(parents=True, exist_ok=True)
    with (files.dir / "val.jsonl").open("a") as log:
        log.write(json.dumps({"epoch": epoch, **result}) + "\n")
