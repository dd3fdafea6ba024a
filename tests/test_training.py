"""Training CLI end to end on a tiny CamVid tree: three stages, resume, DDP, evaluation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import write_fake_camvid
from nflowjs.checkpoint import load_checkpoint, save_checkpoint
from nflowjs.cli import main
from nflowjs.config import config_from_dict, load_config
from nflowjs.training.flow_pretrain import random_inlier_crops

TESTS = Path(__file__).parent


def tiny_config(tmp_path: Path, root: Path, **sections) -> Path:
    raw = {
        "data": {
            "dataset": "camvid-ood",
            "root": str(root),
            "base_size": 48,
            "crop_size": 48,
            "workers": 0,
        },
        "model": {"preset": "ldn-lite", "imagenet_weights": False, "flow_preset": "denseflow-tiny"},
        "stage1": {"epochs": 2, "batch_size": 2, "lr": 1e-3},
        "flow": {"epochs": 1, "batch_size": 16, "crop_size": 16, "warmup_steps": 2},
        "stage2": {
            "epochs": 1,
            "batch_size": 2,
            "lr": 1e-4,
            "flow_lr": 1e-4,
            "patch_range": [16, 24],
        },
        "runtime": {"out_dir": str(tmp_path / "run"), "gradient_checkpointing": True},
    }
    for name, values in sections.items():
        raw[name].update(values)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def camvid(tmp_path) -> Path:
    return write_fake_camvid(tmp_path / "camvid", frames=4, size=(48, 64))


def test_config_rejects_unknown_keys_and_bad_types():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\] in 'stage1'"):
        config_from_dict({"stage1": {"epoch": 3}})
    with pytest.raises(ValueError, match="unknown section"):
        config_from_dict({"stage3": {}})
    with pytest.raises(ValueError, match=r"stage2\.lam must be a number"):
        config_from_dict({"stage2": {"lam": "high"}})
    with pytest.raises(ValueError, match="whole number"):
        config_from_dict({"stage1": {"epochs": 2.5}})
    config = config_from_dict({"stage2": {"patch_range": [16, 64]}})
    assert config.stage2.patch_range == (16, 64) and config.stage2.lam == 0.03  # paper default


def test_paper_defaults():
    config = config_from_dict({})
    assert (config.stage1.lr, config.stage1.batch_size, config.data.crop_size) == (4e-4, 16, 768)
    assert (config.stage2.epochs, config.stage2.batch_size, config.stage2.lam) == (15, 12, 0.03)
    assert config.stage2.patch_range == (16, 216) and config.model.flow_preset == "denseflow-25-6"


def test_shipped_configs_load():
    for path in (TESTS.parent / "configs").glob("*.yaml"):
        load_config(path)


def test_checkpoints_are_atomic_and_truncation_is_reported(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary left behind

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"model": Boom(), "epoch": 2})
    assert load_checkpoint(path)["epoch"] == 1  # the old file survived the failed write
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]

    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="unreadable"):
        load_checkpoint(path)


def test_inlier_crops_avoid_ignored_pixels():
    images = torch.rand(2, 3, 32, 32)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, :, :16] = 255  # the left half is void / held out
    crops = random_inlier_crops(images, labels, size=8, per_image=4)
    assert crops.shape[1:] == (3, 8, 8) and len(crops) >= 2
    for crop in crops:  # each crop is a window of the right half
        hits = [
            torch.equal(crop, images[i, :, t : t + 8, left : left + 8])
            for i in range(2)
            for t in range(25)
            for left in range(14, 25)
        ]
        assert any(hits)


def test_three_stages_resume_and_evaluate(tmp_path, camvid, capsys):
    config = tiny_config(tmp_path, camvid)
    main(["train", "all", "--config", str(config)])
    run = tmp_path / "run"
    stage1 = load_checkpoint(run / "stage1" / "last.pt")
    stage2 = load_checkpoint(run / "stage2" / "last.pt")
    assert stage1["epoch"] == 2 and stage2["epoch"] == 1
    assert stage1["classes"] == stage2["classes"] and len(stage1["classes"]) == 9
    # stage 2 changed both networks
    flow = load_checkpoint(run / "flow" / "last.pt")
    assert not torch.equal(
        stage1["model"]["classifier.conv.bias"], stage2["model"]["classifier.conv.bias"]
    )
    assert not torch.equal(flow["flow"]["base_mean"], stage2["flow"]["base_mean"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard" / "stage2"))
    events.Reload()
    assert {"stage2/cross_entropy", "stage2/negative", "stage2/nll"} <= set(
        events.Tags()["scalars"]
    )
    assert "stage2/mixed_inputs_and_ood_maps" in events.Tags()["images"]
    assert {"stage2/val_mIoU", "stage2/val_jsd_AP"} <= set(events.Tags()["scalars"])
    # every stage-1/2 epoch was validated on the val split
    for stage, epochs in (("stage1", [1, 2]), ("stage2", [1])):
        lines = (run / stage / "val.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert [r["epoch"] for r in records] == epochs
        assert all(0 <= r["mIoU"] <= 1 and 0 <= r["jsd_FPR95"] <= 1 for r in records)

    # An inference copy keeps what the runtime needs and loads back into the same network.
    slim = tmp_path / "slim.pt"
    main(["strip", str(run / "stage2" / "last.pt"), str(slim)])
    payload = load_checkpoint(slim)
    assert "optimizer" not in payload and "flow" not in payload
    assert slim.stat().st_size < (run / "stage2" / "last.pt").stat().st_size / 2

    # Resuming a finished stage trains nothing more; raising its epochs continues from epoch 2.
    main(["train", "stage1", "--config", str(config)])
    again = load_checkpoint(run / "stage1" / "last.pt")
    assert again["epoch"] == 2
    assert all(torch.equal(again["model"][k], v) for k, v in stage1["model"].items())
    main(["train", "stage1", "--config", str(config), "--set", "stage1.epochs=3"])
    assert load_checkpoint(run / "stage1" / "last.pt")["epoch"] == 3

    out = tmp_path / "eval"
    main(
        [
            "evaluate",
            "--checkpoint",
            str(run / "stage2" / "last.pt"),
            "--dataset",
            "camvid-ood",
            "--root",
            str(camvid),
            "--out",
            str(out),
            "--heatmaps",
            "1",
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"jsd", "msp", "max_logit", "entropy", "energy"}
    for metrics in results["scores"].values():
        assert 0 <= metrics["AUROC"] <= 1 and 0 <= metrics["AP"] <= 1
    assert results["anomaly_pixels"] > 0 and 0 <= results["mIoU"] <= 1
    assert "| jsd |" in (out / "results.md").read_text()
    assert (out / "heatmap_00.png").stat().st_size > 1000

    # operating points chosen on val, measured on test
    evaluate = ["evaluate", "--checkpoint", str(run / "stage2" / "last.pt")]
    evaluate += ["--dataset", "camvid-ood", "--root", str(camvid), "--heatmaps", "0"]
    main([*evaluate, "--split", "val", "--out", str(tmp_path / "val")])
    val = json.loads((tmp_path / "val" / "results.json").read_text())
    points = val["scores"]["jsd"]["operating_points"]
    assert set(points) == {"tpr95", "fpr1", "fpr5"}
    assert points["tpr95"]["TPR"] >= 0.95 and points["fpr5"]["FPR"] <= 0.05
    assert points["tpr95"]["threshold"] == val["scores"]["jsd"]["threshold_tpr95"]
    main(
        [
            *evaluate,
            "--out",
            str(out),
            "--operating-points-from",
            str(tmp_path / "val/results.json"),
        ]
    )
    measured = json.loads((out / "results.json").read_text())["operating_points_from"]
    assert measured["split"] == "val"
    assert set(measured["scores"]["jsd"]) == {"tpr95", "fpr1", "fpr5"}
    assert "Operating points chosen on val" in (out / "results.md").read_text()


def test_stage2_without_stage1_names_the_missing_step(tmp_path, camvid, capsys):
    with pytest.raises(SystemExit):
        main(["train", "stage2", "--config", str(tiny_config(tmp_path, camvid))])
    assert "run `nflowjs train stage1` first" in capsys.readouterr().err


def test_evaluate_refuses_a_model_of_other_classes(tmp_path, camvid, capsys):
    config = tiny_config(tmp_path, camvid, stage1={"epochs": 1})
    main(["train", "stage1", "--config", str(config)])
    with pytest.raises(SystemExit):
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "run/stage1/last.pt"),
                "--dataset",
                "camvid",
                "--root",
                str(camvid),
                "--out",
                str(tmp_path / "e"),
            ]
        )
    assert "trained on classes" in capsys.readouterr().err


def test_ddp_replicas_hold_identical_weights(tmp_path, camvid):
    config = tiny_config(
        tmp_path, camvid, stage1={"epochs": 1, "batch_size": 4}, stage2={"batch_size": 4}
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--master_port=29533",
            str(TESTS / "ddp_replica_worker.py"),
            str(config),
            str(tmp_path / "rank"),
        ],
        check=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # DDP averages gradients, so parameters stay identical in every stage, the flow's included
    # (its ActNorm data init happens before DDP broadcasts rank 0's weights). BatchNorm running
    # statistics are per process: each replica normalises its own shard of the batch.
    for network in ("stage1", "flow", "stage2", "stage2_flow"):
        for name, value in rank0[network]["parameters"].items():
            torch.testing.assert_close(
                rank1[network]["parameters"][name], value, rtol=0, atol=0, msg=f"{network}.{name}"
            )
    assert not torch.equal(
        rank0["stage1"]["buffers"]["classifier.norm.running_mean"],
        rank1["stage1"]["buffers"]["classifier.norm.running_mean"],
    ), "each process should have seen its own half of the batch"


def test_evaluate_on_an_ood_only_test_set(tmp_path, camvid):
    config = tiny_config(tmp_path, camvid, stage1={"epochs": 1})
    main(["train", "stage1", "--config", str(config)])
    smiyc = tmp_path / "smiyc"  # SMIYC layout, at a size the network can take
    (smiyc / "images").mkdir(parents=True)
    (smiyc / "labels_masks").mkdir()
    label = np.zeros((48, 64), np.uint8)
    label[10:20, 10:30], label[40:] = 1, 255
    for frame in ("validation0000", "validation0001"):
        Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(smiyc / "images" / f"{frame}.jpg")
        Image.fromarray(label).save(smiyc / "labels_masks" / f"{frame}_labels_semantic.png")
    out = tmp_path / "eval"
    main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "run/stage1/last.pt"),
            "--dataset",
            "smiyc-anomaly",
            "--root",
            str(smiyc),
            "--out",
            str(out),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert results["mIoU"] is None and results["images"] == 2
    assert results["anomaly_pixels"] > 0
    assert all(m["open_mIoU"] is None for m in results["scores"].values())


def test_unknown_dataset_lists_the_known_ones():
    from nflowjs.data import build_dataset, is_ood_only

    with pytest.raises(ValueError, match="camvid-ood"):
        build_dataset("kitti", "x", "train")
    assert is_ood_only("lostandfound") and not is_ood_only("road")


def test_same_seed_same_weights(tmp_path, camvid):
    finals = []
    for name in ("a", "b"):
        config = tiny_config(tmp_path / name, camvid, stage1={"epochs": 1})
        main(["train", "stage1", "--config", str(config)])
        finals.append(load_checkpoint(tmp_path / name / "run" / "stage1" / "last.pt")["model"])
    for key, value in finals[0].items():
        torch.testing.assert_close(finals[1][key], value, rtol=0, atol=0, msg=key)


def test_kill_9_mid_run_loses_at_most_the_running_epoch(tmp_path, camvid):
    import signal
    import time

    config = tiny_config(tmp_path, camvid, stage1={"epochs": 200})
    command = [sys.executable, "-m", "nflowjs.cli", "train", "stage1", "--config", str(config)]
    last = tmp_path / "run" / "stage1" / "last.pt"
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well into later epochs, possibly mid-write of a checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    survived = load_checkpoint(last)["epoch"]  # readable: writes are atomic
    assert survived >= 1
    main(["train", "stage1", "--config", str(config), "--set", f"stage1.epochs={survived + 1}"])
    assert load_checkpoint(last)["epoch"] == survived + 1  # resumed, one more epoch


def test_a_missing_val_split_fails_before_training(tmp_path, camvid, capsys):
    config = str(tiny_config(tmp_path, camvid, stage1={"epochs": 1}))
    with pytest.raises(SystemExit):
        main(["train", "stage1", "--config", config, "--set", "data.val_split=valid"])
    assert "valid" in capsys.readouterr().err
    assert not (tmp_path / "run" / "stage1" / "last.pt").exists()
    main(["train", "stage1", "--config", config, "--set", "data.val_split=''"])  # no validation
    assert not (tmp_path / "run" / "stage1" / "val.jsonl").exists()
