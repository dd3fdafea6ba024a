"""`make demo`'s program over the shipped bundle and bag: metrics, pictures, the recorded bag."""

import json

import pytest
from PIL import Image

from nflowjs_perception import demo
from ros_support import use_private_domain


@pytest.fixture
def private_domain(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(use_private_domain()))


@pytest.mark.parametrize(
    ("bag", "min_auroc"),
    # offline AUROC of the shipped model: 0.930 on the test split, 0.988 on the road obstacles
    [("camvid-test-bag", 0.9), ("camvid-obstacles-bag", 0.95)],
)
def test_demo_scores_every_frame_and_draws_them(
    ros_install, tmp_path, private_domain, bag, min_auroc
):
    out = tmp_path / "demo"
    metrics = demo.run(ros_install, demo.SHARE / "camvid-ood-360x480", demo.SHARE / bag, out)
    assert metrics["frames"]["evaluated"] == metrics["frames"]["ground_truth"] == 12
    assert metrics["frames"]["dropped"] == 0
    assert metrics["ood"]["AUROC"] > min_auroc
    assert metrics["latency_ms"]["p50"] > 0 and metrics["fps"] > 0
    assert json.loads((out / "metrics.json").read_text())["ood"] == metrics["ood"]
    assert len(list(out.glob("overlay_*.png"))) == 12
    with Image.open(out / "demo.gif") as gif:
        assert gif.n_frames == 12 and gif.size == (3 * 480, 360)
    assert "12 of 12 frames scored, 0 dropped" in demo.summary(metrics, out)
