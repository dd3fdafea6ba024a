"""``nflowjs evaluate``: pooled OOD metrics for the JSD score and the baselines, mIoU, open-mIoU.

Each score also gets operating points: its thresholds at TPR 95 % and at 1 % and 5 % inlier
false-positive rate, with the TPR/FPR they give on this split. Thresholds for deployment come
from the val split; ``operating_points_from`` (a val ``results.json``) reports what those
thresholds give on the split evaluated here. The JSD score is accumulated as ``jsd_ood_key``
(same order, resolution where anomalies live); thresholds are stored as scores.

Two passes over the test set keep memory bounded on 2 MP data: the first accumulates score
histograms and the closed-set confusion; the second, with each score's TPR-95 % threshold known,
fills the (K+1)-class confusions behind open-mIoU. Writes ``results.json``, ``results.md`` and
heatmap PNGs of the first images that contain anomalies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from nflowjs.checkpoint import build_segmenter, load_checkpoint
from nflowjs.data.registry import build_dataset, is_ood_only
from nflowjs.data.transforms import to_model_input
from nflowjs.metrics import ConfusionMatrix, OODMetricAccumulator, open_miou, open_set_labels
from nflowjs.scores import SCORES, jsd_ood_key

# Inlier false-positive rates of the low-false-alarm operating points (besides TPR 95 %).
FALSE_ALARM_RATES = {"fpr1": 0.01, "fpr5": 0.05}


def score_maps(logits: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """Every OOD score of (1, K, H, W) logits as (H, W) maps, in the form metrics accumulate
    (``jsd_ood_key`` for the JSD score); T applies to the JSD score only."""
    maps = {name: fn(logits)[0] for name, fn in SCORES.items() if name != "jsd"}
    return {"jsd": jsd_ood_key(logits, temperature)[0], **maps}


def as_score(name: str, value):
    """A value (threshold or map) of ``score_maps``'s form on the exported score's scale:
    ``jsd_ood_score`` = 1 + ``jsd_ood_key``; the other scores are exported as they are."""
    return 1.0 + value if name == "jsd" else value


def as_metric_key(name: str, threshold: float) -> float:
    """The inverse of ``as_score``."""
    return threshold - 1.0 if name == "jsd" else threshold


def operating_points(accumulator: OODMetricAccumulator, name: str) -> dict:
    """Thresholds at TPR 95 % and at each false-alarm rate, with their TPR and FPR here."""
    keys = {"tpr95": accumulator.threshold_at_tpr(0.95)}
    keys |= {point: accumulator.threshold_at_fpr(rate) for point, rate in FALSE_ALARM_RATES.items()}
    return {point: _rates(accumulator, name, key) for point, key in keys.items()}


def _rates(accumulator: OODMetricAccumulator, name: str, key: float) -> dict:
    tpr, fpr = accumulator.rates_at(key)
    threshold = None if math.isinf(key) else as_score(name, key)
    return {"threshold": threshold, "TPR": tpr, "FPR": fpr}


def evaluate(
    checkpoint: str,
    dataset: str,
    root: str,
    split: str = "test",
    out_dir: str = "out/evaluation",
    temperature: float = 2.0,
    heatmaps: int = 8,
    device: str | None = None,
    operating_points_from: str | None = None,
) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if operating_points_from:
        chosen = _chosen_thresholds(operating_points_from, temperature)
    payload = load_checkpoint(checkpoint)
    model = build_segmenter(payload).to(device).eval()
    data = build_dataset(dataset, root, split, with_ood_mask=True)
    labelled = not is_ood_only(dataset)  # OOD-only test sets have no class labels: no mIoU
    if labelled and list(payload["classes"]) != list(data.classes):
        raise ValueError(
            f"{checkpoint} was trained on classes {payload['classes']}, but {dataset} has "
            f"{list(data.classes)}; evaluate on the dataset the model was trained for"
        )
    k = len(payload["classes"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    ood = {name: OODMetricAccumulator() for name in SCORES}
    closed = ConfusionMatrix(k)
    pictures = 0
    for image, *label, ood_gt in tqdm(data, desc="evaluate (pass 1/2)"):
        logits = _logits(model, image, device)
        if labelled:
            inlier = ood_gt == 0
            closed.update(logits.argmax(1)[0].cpu()[inlier], label[0][inlier])
        maps = score_maps(logits, temperature)
        for name, score in maps.items():
            ood[name].update(score.cpu(), ood_gt)
        if pictures < heatmaps and (ood_gt == 1).any():
            jsd = as_score("jsd", maps["jsd"].cpu())
            _save_heatmap(out / f"heatmap_{pictures:02d}.png", image, jsd, ood_gt)
            pictures += 1

    metrics = {name: acc.compute() for name, acc in ood.items()}
    points = {
        name: operating_points(acc, name)
        for name, acc in ood.items()
        if metrics[name].anomalies and metrics[name].inliers
    }
    thresholds = {name: ood[name].threshold_at_tpr(0.95) for name in points}
    open_confusions = {name: ConfusionMatrix(k + 1) for name in thresholds if labelled}
    if open_confusions:
        for image, label, ood_gt in tqdm(data, desc="evaluate (pass 2/2)"):
            logits = _logits(model, image, device)
            prediction = logits.argmax(1)[0].cpu()
            target = torch.where(ood_gt == 1, torch.full_like(label, k), label)
            for name, score in score_maps(logits, temperature).items():
                flagged = score.cpu() >= thresholds[name]
                open_confusions[name].update(open_set_labels(prediction, flagged, k), target)

    results = {
        "checkpoint": str(checkpoint),
        "dataset": dataset,
        "split": split,
        "images": len(data),
        "classes": list(payload["classes"]),
        "temperature": temperature,
        "mIoU": closed.miou() if labelled else None,
        "class_IoU": dict(zip(payload["classes"], closed.iou().tolist(), strict=True))
        if labelled
        else None,
        "anomaly_pixels": next(iter(metrics.values())).anomalies,
        "inlier_pixels": next(iter(metrics.values())).inliers,
        "scores": {
            name: {
                **m.as_dict(),
                "open_mIoU": open_miou(open_confusions[name]) if name in open_confusions else None,
                "threshold_tpr95": points[name]["tpr95"]["threshold"] if name in points else None,
                "operating_points": points.get(name, {}),
            }
            for name, m in metrics.items()
        },
    }
    if operating_points_from:
        results["operating_points_from"] = _operating_points_from(
            operating_points_from, chosen, ood
        )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(results))
    print(markdown_table(results))
    return results


def _chosen_thresholds(path: str, temperature: float) -> dict:
    """Another (val) evaluation's results, checked before any image is scored."""
    chosen = json.loads(Path(path).read_text())
    if chosen.get("temperature", temperature) != temperature:
        raise ValueError(
            f"{path} chose its thresholds at T = {chosen['temperature']}, not at this "
            f"evaluation's T = {temperature}; pass --temperature {chosen['temperature']}"
        )
    return chosen


def _operating_points_from(path: str, chosen: dict, ood: dict[str, OODMetricAccumulator]) -> dict:
    """The TPR/FPR here of the thresholds another (val) evaluation chose."""
    found = {}
    for name, score in chosen["scores"].items():
        found[name] = {
            point: _rates(
                ood[name],
                name,
                math.inf if p["threshold"] is None else as_metric_key(name, p["threshold"]),
            )
            for point, p in score.get("operating_points", {}).items()
        }
    return {"source": str(path), "split": chosen.get("split"), "scores": found}


def markdown_table(results: dict) -> str:
    miou = "n/a" if results["mIoU"] is None else f"{100 * results['mIoU']:.1f} %"
    lines = [
        f"{results['dataset']} ({results['split']}, {results['images']} images): "
        f"closed-set mIoU {miou}",
        "",
        "| score | AP % | FPR95 % | AUROC % | open-mIoU % |",
        "|---|---|---|---|---|",
    ]
    for name, m in results["scores"].items():
        open_m = "n/a" if m["open_mIoU"] is None else f"{100 * m['open_mIoU']:.1f}"
        lines.append(
            f"| {name} | {100 * m['AP']:.1f} | {100 * m['FPR95']:.1f} | "
            f"{100 * m['AUROC']:.1f} | {open_m} |"
        )
    source = results.get("operating_points_from")
    if source:
        lines += [
            "",
            f"Operating points chosen on {source['split']} ({source['source']}), here:",
            "",
            "| score | point | threshold | TPR % | FPR % |",
            "|---|---|---|---|---|",
        ]
        for name, points in source["scores"].items():
            for point, p in points.items():
                threshold = "none" if p["threshold"] is None else f"{p['threshold']:.6g}"
                lines.append(
                    f"| {name} | {point} | {threshold} | {100 * p['TPR']:.1f} | "
                    f"{100 * p['FPR']:.2f} |"
                )
    return "\n".join(lines) + "\n"


@torch.no_grad()
def _logits(model, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    return model(to_model_input(image.to(device))[None]).float()


def _save_heatmap(path: Path, image: torch.Tensor, score: torch.Tensor, ood_gt: torch.Tensor):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), constrained_layout=True)
    axes[0].imshow(image.permute(1, 2, 0).numpy())
    axes[0].set_title("input")
    shown = axes[1].imshow(score.numpy(), cmap="inferno", vmin=0, vmax=1)
    axes[1].set_title("NFlowJS OOD score")
    fig.colorbar(shown, ax=axes[1], shrink=0.8)
    gt = ood_gt.float().numpy()
    gt[gt == 255] = 0.5
    axes[2].imshow(gt, cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("ground truth (white = anomaly, grey = void)")
    for ax in axes:
        ax.axis("off")
    fig.savefig(path, dpi=80)
    plt.close(fig)
