"""evaluate_bag on recorded-like bags the test writes: OOD metrics against scikit-learn, latency
and drops against the numbers the bag was written with."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from nflowjs_perception.bag_tools import evaluate
from nflowjs_perception.bag_tools.bagio import open_writer, staged_bag
from nflowjs_perception.bag_tools.messages import (
    IMAGE,
    IMAGE_TOPIC,
    OOD_MASK_TOPIC,
    TYPESTORE,
    image_msg,
)

HEATMAP = evaluate.DEFAULT_HEATMAP_TOPIC
SIZE = (16, 24)
T0 = 1_704_067_200_000_000_000
MS = 1_000_000
DROPPED = {2, 5}


def sklearn_reference(scores: list[np.ndarray], gts: list[np.ndarray]):
    s = np.concatenate([x.ravel() for x in scores])
    y = np.concatenate([g.ravel() for g in gts])
    valid = y != 255
    s, y = s[valid], y[valid]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return average_precision_score(y, s), fpr[np.searchsorted(tpr, 0.95)], roc_auc_score(y, s)


def write_recorded_bag(out: Path, heat_size=SIZE, frames=8, seed=0):
    """Like a recording of a converted bag played into the node: image, gt and heatmap topics.

    Frames in DROPPED get no heatmap; one heatmap has no ground truth; the last frame's mask is
    logged after its heatmap. Returns (heatmaps scored, their masks, latencies in ms).
    """
    rng = np.random.default_rng(seed)
    messages, scored, masks, latencies = [], [], [], []
    for i in range(frames):
        stamp = T0 + i * 100 * MS
        gt = (rng.random(SIZE) < 0.15).astype(np.uint8)
        gt[rng.random(SIZE) < 0.05] = 255
        image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        image_log = stamp + 2 * MS
        messages.append((IMAGE_TOPIC, image_log, image_msg(image, stamp, "cam", "rgb8")))
        if i in DROPPED:
            messages.append((OOD_MASK_TOPIC, stamp + MS, image_msg(gt, stamp, "cam", "mono8")))
            continue
        latency = 20 + 3 * i
        heat_log = image_log + latency * MS
        signal = torch.from_numpy((gt == 1).astype(np.float32))
        if heat_size != SIZE:
            signal = torch.nn.functional.interpolate(signal[None, None], size=heat_size)[0, 0]
        heat = (rng.normal(size=heat_size) + 1.5 * signal.numpy()).astype(np.float32)
        messages.append((HEATMAP, heat_log, image_msg(heat, stamp, "cam", "32FC1")))
        gt_log = heat_log + MS if i == frames - 1 else stamp + MS
        messages.append((OOD_MASK_TOPIC, gt_log, image_msg(gt, stamp, "cam", "mono8")))
        scored.append(heat)
        masks.append(gt)
        latencies.append(latency)
    orphan = np.zeros(heat_size, np.float32)  # a heatmap of a frame the bag has no gt for
    messages.append(
        (HEATMAP, T0 + 5 * 1000 * MS, image_msg(orphan, T0 + 4000 * MS, "cam", "32FC1"))
    )
    with staged_bag(out) as staged:
        writer = open_writer(staged, compress=False)
        conns = {
            topic: writer.add_connection(topic, IMAGE, typestore=TYPESTORE)
            for topic in (IMAGE_TOPIC, OOD_MASK_TOPIC, HEATMAP)
        }
        for topic, log_ns, data in sorted(messages, key=lambda m: m[1]):
            writer.write(conns[topic], log_ns, data)
        writer.close()
    return scored, masks, latencies


def test_metrics_latency_and_drops_match_references(tmp_path):
    scored, masks, latencies = write_recorded_bag(tmp_path / "rec")
    metrics = evaluate.evaluate_bag(tmp_path / "rec", progress=False)
    ap, fpr95, auroc = sklearn_reference(scored, masks)
    ood = metrics["ood"]
    assert ood["AP"] == pytest.approx(ap, abs=0.002)
    assert ood["FPR95"] == pytest.approx(fpr95, abs=0.002)
    assert ood["AUROC"] == pytest.approx(auroc, abs=0.002)
    assert ood["inlier_pixels"] + ood["anomaly_pixels"] == sum(int((m != 255).sum()) for m in masks)
    assert metrics["frames"] == {
        "ground_truth": 8,
        "evaluated": 6,
        "dropped": 2,
        "drop_rate": 0.25,
        "heatmaps_without_ground_truth": 1,
    }
    latency = metrics["latency_ms"]
    assert latency["frames"] == 6
    assert latency["p50"] == pytest.approx(np.percentile(latencies, 50))
    assert latency["p99"] == pytest.approx(np.percentile(latencies, 99))
    assert metrics["resized_heatmaps"] == {} and metrics["notes"] == []


def test_heatmaps_of_another_size_are_resized_bilinearly(tmp_path):
    scored, masks, _ = write_recorded_bag(tmp_path / "rec", heat_size=(8, 12), seed=1)
    metrics = evaluate.evaluate_bag(tmp_path / "rec", progress=False)
    upsampled = [
        torch.nn.functional.interpolate(
            torch.from_numpy(h)[None, None], size=SIZE, mode="bilinear", align_corners=False
        )[0, 0].numpy()
        for h in scored
    ]
    ap, fpr95, auroc = sklearn_reference(upsampled, masks)
    assert metrics["ood"]["AP"] == pytest.approx(ap, abs=0.002)
    assert metrics["ood"]["AUROC"] == pytest.approx(auroc, abs=0.002)
    assert metrics["ood"]["FPR95"] == pytest.approx(fpr95, abs=0.002)
    assert metrics["resized_heatmaps"] == {"8x12 -> 16x24": 6}
    assert "resized to the ground-truth size (bilinear)" in metrics["notes"][0]


def test_cli_writes_metrics_json_and_prints_a_table(tmp_path, capsys):
    write_recorded_bag(tmp_path / "rec")
    out = tmp_path / "eval" / "metrics.json"
    assert evaluate.main([str(tmp_path / "rec"), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written == json.loads(
        json.dumps(evaluate.evaluate_bag(tmp_path / "rec", progress=False))
    )
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in printed.splitlines()[:8])
    assert rows["AP (%)"] == f"{100 * written['ood']['AP']:.2f}"
    assert rows["dropped frames"] == "2 (25.00 %)"
    assert rows["latency p99 (ms)"] == f"{written['latency_ms']['p99']:.1f}"


def test_missing_topics_are_named_with_what_the_bag_has(tmp_path, capsys):
    write_recorded_bag(tmp_path / "rec")
    code = evaluate.main([str(tmp_path / "rec"), "--heatmap-topic", "/other/ood_heatmap"])
    err = capsys.readouterr().err
    assert code == 2
    assert "has no /other/ood_heatmap (--heatmap-topic)" in err and HEATMAP in err
    assert evaluate.main([str(tmp_path / "nothing")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert evaluate.main([str(tmp_path / "empty")]) == 2
    assert "not a rosbag2 folder" in capsys.readouterr().err
