"""The CamVid road-obstacle generator, on real CamVid test frames from ../shared."""

import json

import numpy as np
import pytest
from PIL import Image
from test_bag_convert import read_rosbags

from nflowjs.data.ood_sets import SegmentMeIfYouCan
from nflowjs_perception.bag_tools import convert, frames
from nflowjs_perception.bag_tools.messages import OOD_MASK_TOPIC, image_array
from nflowjs_perception.bag_tools.road_obstacles import HELD_OUT, ROAD, generate, main
from ros_support import SHARED_CAMVID

pytestmark = pytest.mark.skipif(
    not (SHARED_CAMVID / "test").is_dir(), reason="needs ../shared/data/camvid"
)
FRAMES = 6


@pytest.fixture(scope="module")
def obstacles(tmp_path_factory):
    out = tmp_path_factory.mktemp("obstacles") / "camvid-obstacles"
    return out, generate(SHARED_CAMVID, out, max_frames=FRAMES, seed=3)


def test_obstacles_are_people_from_other_frames_standing_on_road(obstacles):
    out, summary = obstacles
    assert summary["frames"] == FRAMES and summary["obstacles"] >= FRAMES
    source = {f.name: f for f in frames.camvid_frames(SHARED_CAMVID, "test").frames}
    for name, placements in summary["placements"].items():
        mask = np.asarray(Image.open(out / "labels_masks" / f"{name}_labels_semantic.png"))
        image = np.asarray(Image.open(out / "images" / f"{name}.png"))
        original = np.asarray(Image.open(source[name].image).convert("RGB"))
        label = np.asarray(Image.open(source[name].label))
        assert set(np.unique(mask)) <= {0, 1, 255}
        assert ((mask == 0) == ((label == ROAD) & (mask != 1))).all()  # road, unless covered
        assert (mask[np.isin(label, HELD_OUT) & (mask != 1)] == 255).all()  # real people: void
        assert (image[mask != 1] == original[mask != 1]).all()  # only obstacle pixels change
        assert sum(p["pixels"] for p in placements) >= (mask == 1).sum() > 0
        for p in placements:
            assert p["source"] != name
            x, y, w, h = p["box"]
            donor_label = np.asarray(Image.open(source[p["source"]].label))
            assert np.isin(donor_label, HELD_OUT).any()
            under = label[y + h - 1, x : x + w] == ROAD  # the row it stands on
            assert under.mean() >= 0.6


def test_the_same_seed_writes_the_same_set(obstacles, tmp_path):
    out, summary = obstacles
    again = generate(SHARED_CAMVID, tmp_path / "again", max_frames=FRAMES, seed=3)
    assert again["placements"] == summary["placements"]
    other = generate(SHARED_CAMVID, tmp_path / "other", max_frames=FRAMES, seed=4)
    assert other["placements"] != summary["placements"]
    assert json.loads((out / "obstacles.json").read_text())["seed"] == 3


def test_the_set_reads_as_smiyc_obstacle_track_and_converts_to_a_bag(obstacles, tmp_path):
    out, _ = obstacles
    loader = SegmentMeIfYouCan(out)
    assert len(loader) == FRAMES
    convert.write_bag(frames.smiyc_frames(out), tmp_path / "bag", progress=False)
    masks = [image_array(m) for _, m in read_rosbags(tmp_path / "bag")[OOD_MASK_TOPIC]]
    assert len(masks) == FRAMES
    for (_, ood), mask in zip(loader, masks, strict=True):
        np.testing.assert_array_equal(mask, ood)


def test_cli_names_a_missing_dataset(tmp_path, capsys):
    assert main(["--camvid", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 1
    assert "road_obstacles: error:" in capsys.readouterr().err


def test_the_shipped_demo_bag_is_the_generated_set(tmp_path):
    """ros2_ws/.../demo/camvid-obstacles-bag stays what `make demo-obstacle-bag` writes."""
    from ros_support import REPO

    shipped = REPO / "ros2_ws/src/nflowjs_perception/demo/camvid-obstacles-bag"
    masks = [image_array(m) for _, m in read_rosbags(shipped)[OOD_MASK_TOPIC]]
    assert len(masks) == 12
    generate(SHARED_CAMVID, tmp_path, max_frames=16)  # a frame where nothing fits is left out
    written = sorted((tmp_path / "labels_masks").glob("*.png"))[:12]
    for path, mask in zip(written, masks, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), mask)
