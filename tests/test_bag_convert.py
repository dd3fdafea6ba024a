"""Dataset -> rosbag2 (MCAP) converters on fake trees in the release layouts, read back with
rosbags and mcap_ros2, and checked against the repository's torch loaders."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from PIL import Image
from rosbags.rosbag2 import Reader

from conftest import write_fake_camvid
from nflowjs.data import camvid as torch_camvid
from nflowjs.data import ood_sets as torch_ood
from nflowjs_perception.bag_tools import convert, frames
from nflowjs_perception.bag_tools.camera import (
    quaternion_from_matrix,
    read_camera_json,
    rotation_ypr,
)
from nflowjs_perception.bag_tools.messages import (
    CAMERA_INFO_TOPIC,
    IMAGE_TOPIC,
    LABELS_TOPIC,
    OOD_MASK_TOPIC,
    TF_STATIC_TOPIC,
    deserialize,
    image_array,
    stamp_ns,
)

SIZE = (6, 8)
LAF_COLUMNS = [0, 1, 2, 23, 43, 200, 201, 255]  # void, road, obstacles..., then two void ids
# Two clips of one folder (their clocks do not continue), a bicycle clip, an all-zero label.
LAF_TEST = {
    "01_Hanns_Klemm_Str_45_000000_000080": 5_000_000_000,
    "01_Hanns_Klemm_Str_45_000000_000100": 6_176_470_588,
    "01_Hanns_Klemm_Str_45_000000_000110": 6_764_705_882,
    "01_Hanns_Klemm_Str_45_000006_000100": 1_000_000_000,  # bicycles: not in noKnown
    "04_Maurener_Weg_8_000002_000140": 9_000_000_000,  # all-zero label
    "04_Maurener_Weg_8_000003_000030": 7_000_000_000,
}
CAMERA = {
    "extrinsic": {
        "baseline": 0.21,
        "pitch": 0.05,
        "roll": 0.0,
        "x": 1.7,
        "y": 0.1,
        "yaw": 0.0,
        "z": 1.18,
    },
    "intrinsic": {"fx": 2268.4, "fy": 2225.5, "u0": 1048.6, "v0": 519.3},
}


def _folder(frame: str) -> str:
    return "_".join(frame.split("_")[:-2])


def write_fake_laf(root: Path, split="test", names=LAF_TEST, bits16=False, extras=True) -> Path:
    """leftImg8bit (or leftImg16bit), gtCoarse, camera and timestamp folders, as released."""
    labels = np.tile(np.array(LAF_COLUMNS, dtype=np.uint8), (SIZE[0], 1))
    rng = np.random.default_rng(0)
    for name, stamp in names.items():

        def path(kind: str, ending: str, name: str = name) -> Path:
            folder = root / kind / split / _folder(name)
            folder.mkdir(parents=True, exist_ok=True)
            return folder / f"{name}{ending}"

        if bits16:  # 12-bit sensor data in 16-bit PNGs (written BGR by OpenCV)
            image = rng.integers(0, 4096, (*SIZE, 3), dtype=np.uint16)
            cv2.imwrite(str(path("leftImg16bit", "_leftImg16bit.png")), image[:, :, ::-1])
        else:
            image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(path("leftImg8bit", "_leftImg8bit.png"))
        empty = name == "04_Maurener_Weg_8_000002_000140"
        label = np.zeros_like(labels) if empty else labels
        Image.fromarray(label).save(path("gtCoarse", "_gtCoarse_labelIds.png"))
        if extras:
            path("camera", "_camera.json").write_text(json.dumps(CAMERA))
            path("timestamp", "_timestamp.txt").write_text(f"{stamp}\n")
    return root


def read_rosbags(bag: Path) -> dict[str, list]:
    """topic -> [(log time, deserialized message)] in log-time order."""
    out: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, deserialize(raw, conn.msgtype)))
    return out


def read_mcap(bag: Path) -> dict[str, list]:
    """The same with the mcap library's own reader and ROS 2 decoder (mcap-ros2-support)."""
    out: dict[str, list] = {}
    with next(bag.glob("*.mcap")).open("rb") as file:
        reader = make_reader(file, decoder_factories=[DecoderFactory()])
        for _, channel, message, ros_msg in reader.iter_decoded_messages(log_time_order=True):
            out.setdefault(channel.topic, []).append((message.log_time, ros_msg))
    return out


def custom_data(bag: Path) -> dict[str, str]:
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())
    return metadata["rosbag2_bagfile_information"]["custom_data"]


def assert_frames_consistent(topics: dict[str, list], n: int) -> list[int]:
    """Every per-frame topic has n messages, stamped like the image, stamps = log times, rising."""
    stamps = [stamp_ns(msg.header.stamp) for _, msg in topics[IMAGE_TOPIC]]
    assert len(stamps) == n
    assert all(b > a for a, b in itertools.pairwise(stamps))
    for topic in (IMAGE_TOPIC, CAMERA_INFO_TOPIC, OOD_MASK_TOPIC):
        assert [stamp_ns(m.header.stamp) for _, m in topics[topic]] == stamps
        assert [log for log, _ in topics[topic]] == stamps
        assert {m.header.frame_id for _, m in topics[topic]} == {"camera_optical_frame"}
    return stamps


def test_lostandfound_bag_round_trips_through_rosbags_and_mcap(tmp_path):
    root = write_fake_laf(tmp_path / "laf")
    summary = convert.write_bag(frames.lostandfound_frames(root), tmp_path / "bag")
    assert summary.frames == 6
    loader = torch_ood.LostAndFound(root, "test")
    for topics in (read_rosbags(tmp_path / "bag"), read_mcap(tmp_path / "bag")):
        assert set(topics) == {IMAGE_TOPIC, CAMERA_INFO_TOPIC, OOD_MASK_TOPIC, TF_STATIC_TOPIC}
        assert_frames_consistent(topics, 6)
        assert len(topics[TF_STATIC_TOPIC]) == 1  # one camera pose for the whole bag
        for i, ((_, image), (_, ood)) in enumerate(
            zip(topics[IMAGE_TOPIC], topics[OOD_MASK_TOPIC], strict=True)
        ):
            expected_image, expected_ood = loader[i]
            assert image.encoding == "rgb8" and ood.encoding == "mono8"
            np.testing.assert_array_equal(image_array(image), expected_image.permute(1, 2, 0))
            np.testing.assert_array_equal(image_array(ood), expected_ood.numpy())
        info = topics[CAMERA_INFO_TOPIC][0][1]
        assert (info.width, info.height) == (SIZE[1], SIZE[0])
        k = CAMERA["intrinsic"]
        np.testing.assert_allclose(
            list(info.k), [k["fx"], 0, k["u0"], 0, k["fy"], k["v0"], 0, 0, 1]
        )
        assert list(info.p)[:4] == [k["fx"], 0, k["u0"], 0]
    ood = image_array(read_rosbags(tmp_path / "bag")[OOD_MASK_TOPIC][0][1])
    assert ood[0].tolist() == [255, 0, 1, 1, 1, 1, 255, 255]


def test_recorded_timestamps_keep_spacing_within_a_clip_and_lay_clips_end_to_end(tmp_path):
    root = write_fake_laf(tmp_path / "laf")
    convert.write_bag(frames.lostandfound_frames(root), tmp_path / "bag", progress=False)
    stamps = assert_frames_consistent(read_rosbags(tmp_path / "bag"), 6)
    steps = np.diff(stamps).tolist()
    clip = [1_176_470_588, 588_235_294]  # frames 80 -> 100 -> 110 of clip 000000
    assert stamps[0] == convert.DEFAULT_START_NS
    assert steps[:2] == clip
    assert steps[2:] == [int(np.median(clip))] * 3  # every other frame starts a new clip


def test_no_known_fps_and_max_frames(tmp_path):
    root = write_fake_laf(tmp_path / "laf")
    dataset = frames.lostandfound_frames(root, no_known=True)
    assert [f.name for f in dataset.frames] == [
        "01_Hanns_Klemm_Str_45_000000_000080",
        "01_Hanns_Klemm_Str_45_000000_000100",
        "01_Hanns_Klemm_Str_45_000000_000110",
        "04_Maurener_Weg_8_000003_000030",
    ]
    torch_frames = torch_ood.LostAndFound(root, "test", no_known=True).images
    assert [f.image for f in dataset.frames] == torch_frames
    convert.write_bag(dataset, tmp_path / "bag", fps=5, max_frames=3, progress=False)
    stamps = assert_frames_consistent(read_rosbags(tmp_path / "bag"), 3)
    assert np.diff(stamps).tolist() == [200_000_000, 200_000_000]
    with pytest.raises(ValueError, match="max_frames must be >= 1"):
        frames.limit_frames(dataset.frames, 0)


def test_camera_axes_iso8855_to_optical_frame(tmp_path):
    path = tmp_path / "camera.json"
    level = {**CAMERA, "extrinsic": {**CAMERA["extrinsic"], "pitch": 0.0}}
    path.write_text(json.dumps(level))
    r = read_camera_json(path).rotation  # columns: optical x, y, z in vehicle coordinates
    np.testing.assert_allclose(r[:, 2], [1, 0, 0], atol=1e-12)  # optical z: forward (+x)
    np.testing.assert_allclose(r[:, 0], [0, -1, 0], atol=1e-12)  # optical x: right (-y)
    np.testing.assert_allclose(r[:, 1], [0, 0, -1], atol=1e-12)  # optical y: down (-z)
    path.write_text(json.dumps(CAMERA))
    calibration = read_camera_json(path)
    pitch = CAMERA["extrinsic"]["pitch"]  # positive pitch about y (left): the camera looks down
    np.testing.assert_allclose(
        calibration.rotation[:, 2], [np.cos(pitch), 0, -np.sin(pitch)], atol=1e-12
    )
    np.testing.assert_allclose(calibration.translation, [1.7, 0.1, 1.18])
    for angles in [(0.3, -0.2, 0.1), (3.0, 0.1, -2.9), (np.pi, 0, 0)]:
        q = quaternion_from_matrix(rotation_ypr(*angles))
        x, y, z, w = q
        back = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        np.testing.assert_allclose(back, rotation_ypr(*angles), atol=1e-12)
    (tmp_path / "bad.json").write_text('{"intrinsic": {}}')
    with pytest.raises(ValueError, match="not a Cityscapes-style camera file"):
        read_camera_json(tmp_path / "bad.json")


def test_tf_static_carries_the_extrinsic(tmp_path):
    root = write_fake_laf(tmp_path / "laf")
    convert.write_bag(frames.lostandfound_frames(root), tmp_path / "bag", progress=False)
    with Reader(tmp_path / "bag") as reader:
        (conn,) = [c for c in reader.connections if c.topic == TF_STATIC_TOPIC]
        assert conn.ext.offered_qos_profiles[0].durability.name == "TRANSIENT_LOCAL"
    ((_, tf),) = read_rosbags(tmp_path / "bag")[TF_STATIC_TOPIC]
    (transform,) = tf.transforms
    assert transform.header.frame_id == "base_link"
    assert transform.child_frame_id == "camera_optical_frame"
    t, q = transform.transform.translation, transform.transform.rotation
    assert (t.x, t.y, t.z) == (1.7, 0.1, 1.18)
    expected = quaternion_from_matrix(
        read_camera_json(next(root.glob("camera/test/*/*_camera.json"))).rotation
    )
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], expected)


def test_lostandfound_16bit_images_scale_linearly_to_8bit(tmp_path):
    root = write_fake_laf(tmp_path / "laf", bits16=True, extras=False)
    dataset = frames.lostandfound_frames(root)  # auto: no leftImg8bit, so leftImg16bit
    assert dataset.image_bits == 16 and dataset.info["images"] == "leftImg16bit"
    convert.write_bag(dataset, tmp_path / "bag", progress=False)
    topics = read_rosbags(tmp_path / "bag")
    assert_frames_consistent(topics, 6)
    for frame, (_, msg) in zip(dataset.frames, topics[IMAGE_TOPIC], strict=True):
        raw = cv2.imread(str(frame.image), cv2.IMREAD_UNCHANGED)[:, :, ::-1].astype(np.int64)
        expected = np.floor(raw * 255 / 4095 + 0.5)  # auto-detected: 12-bit data
        np.testing.assert_array_equal(image_array(msg), expected)
    assert "12-bit" in custom_data(tmp_path / "bag")["nflowjs.image_scaling"]


def write_fake_fishyscapes(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True)
    label = np.tile(np.array([0, 1, 255, 7, 0, 1, 1, 0], dtype=np.uint8), (SIZE[0], 1))
    for index, name in enumerate(names):
        Image.fromarray(label).save(root / f"{index:04d}_{name}_labels.png")
    return root


def test_fishyscapes_bag_agrees_with_the_loader(tmp_path):
    laf = write_fake_laf(tmp_path / "laf")
    write_fake_laf(laf, "train", {"13_Elly_Beinhorn_Str_000000_000050": 1}, extras=False)
    names = ["04_Maurener_Weg_8_000003_000030", "13_Elly_Beinhorn_Str_000000_000050"]
    fs = write_fake_fishyscapes(tmp_path / "fs", names)
    assert (
        convert.main(
            [
                "fishyscapes-laf",
                "--root",
                str(fs),
                "--laf-root",
                str(laf),
                "--out",
                str(tmp_path / "bag"),
                "--quiet",
            ]
        )
        == 0
    )
    loader = torch_ood.FishyscapesLostAndFound(fs, laf)
    for topics in (read_rosbags(tmp_path / "bag"), read_mcap(tmp_path / "bag")):
        assert_frames_consistent(topics, 2)
        assert_images_and_masks_match(topics, loader, 2)
        # The test-split frame has a camera JSON, the train one not: its CameraInfo is zero.
        assert topics[CAMERA_INFO_TOPIC][0][1].k[0] == CAMERA["intrinsic"]["fx"]
        assert list(topics[CAMERA_INFO_TOPIC][1][1].k) == [0.0] * 9


def assert_images_and_masks_match(topics: dict, loader, n: int) -> None:
    """The bag's first ``n`` images and OOD masks equal the torch loader's, pixel for pixel."""
    for i in range(n):
        image, ood = loader[i]
        np.testing.assert_array_equal(
            image_array(topics[IMAGE_TOPIC][i][1]), image.permute(1, 2, 0)
        )
        np.testing.assert_array_equal(image_array(topics[OOD_MASK_TOPIC][i][1]), ood)


def write_fake_smiyc(root: Path, ext: str, labelled: list[str], unlabelled: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir(parents=True)
    label = np.tile(np.array([255, 255, 0, 0, 1, 1, 0, 255], dtype=np.uint8), (SIZE[0], 1))
    rng = np.random.default_rng(1)
    for frame in labelled + unlabelled:
        image = rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{frame}.{ext}")
        if frame in labelled:
            Image.fromarray(label).save(root / "labels_masks" / f"{frame}_labels_semantic.png")
    return root


@pytest.mark.parametrize("ext", ["jpg", "webp"])
def test_smiyc_bag_agrees_with_the_loader(tmp_path, ext):
    root = write_fake_smiyc(
        tmp_path / "dataset_AnomalyTrack", ext, ["validation0000", "validation0001"], ["cat0"]
    )
    dataset = frames.smiyc_frames(root)
    assert dataset.info["unlabeled_images_skipped"] == "1"
    convert.write_bag(dataset, tmp_path / "bag", progress=False)
    loader = torch_ood.SegmentMeIfYouCan(root)
    for topics in (read_rosbags(tmp_path / "bag"), read_mcap(tmp_path / "bag")):
        assert set(topics) == {IMAGE_TOPIC, CAMERA_INFO_TOPIC, OOD_MASK_TOPIC}
        assert_frames_consistent(topics, 2)
        assert_images_and_masks_match(topics, loader, 2)
        assert list(topics[CAMERA_INFO_TOPIC][0][1].k) == [0.0] * 9  # uncalibrated


@pytest.mark.parametrize("held_out", [frames.CAMVID_OOD_HELD_OUT, ()])
def test_camvid_bag_labels_and_ood_mask_agree_with_the_loader(tmp_path, held_out):
    root = write_fake_camvid(tmp_path / "camvid", frames=3, size=SIZE)
    dataset = frames.camvid_frames(root, "test", held_out)
    convert.write_bag(dataset, tmp_path / "bag", progress=False)
    loader = torch_camvid.CamVid(root, "test", held_out, with_ood_mask=True)
    for topics in (read_rosbags(tmp_path / "bag"), read_mcap(tmp_path / "bag")):
        assert set(topics) == {IMAGE_TOPIC, CAMERA_INFO_TOPIC, OOD_MASK_TOPIC, LABELS_TOPIC}
        assert_frames_consistent(topics, 3)
        assert [stamp_ns(m.header.stamp) for _, m in topics[LABELS_TOPIC]] == [
            stamp_ns(m.header.stamp) for _, m in topics[IMAGE_TOPIC]
        ]
        for i in range(3):
            image, labels, ood = loader[i]
            np.testing.assert_array_equal(
                image_array(topics[IMAGE_TOPIC][i][1]), image.permute(1, 2, 0)
            )
            np.testing.assert_array_equal(image_array(topics[LABELS_TOPIC][i][1]), labels)
            np.testing.assert_array_equal(image_array(topics[OOD_MASK_TOPIC][i][1]), ood)
    custom = custom_data(tmp_path / "bag")
    assert json.loads(custom["nflowjs.classes"]) == list(loader.classes)
    assert custom["nflowjs.timing"] == "fixed 10 Hz"


def test_cli_converts_camvid_without_importing_torch(tmp_path):
    root = write_fake_camvid(tmp_path / "camvid", frames=3, size=SIZE)
    out = tmp_path / "demo"
    script = (
        "import sys\n"
        "from nflowjs_perception.bag_tools import convert\n"
        f"code = convert.main(['camvid', '--root', {str(root)!r}, '--out', {str(out)!r},"
        " '--max-frames', '2', '--fps', '4', '--quiet'])\n"
        "assert 'torch' not in sys.modules, 'the converter imported torch'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "2 frames (fixed 4 Hz)" in done.stdout
    stamps = assert_frames_consistent(read_mcap(out), 2)
    assert stamps[1] - stamps[0] == 250_000_000


def test_errors_name_the_problem_and_the_fix(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/test not found.*give --root"):
        frames.lostandfound_frames(tmp_path / "nothing")
    (tmp_path / "empty" / "leftImg8bit" / "test" / "seq").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no \*_leftImg8bit.png under"):
        frames.lostandfound_frames(tmp_path / "empty")
    root = write_fake_laf(tmp_path / "laf")
    next(root.glob("timestamp/test/*/*.txt")).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 timestamp files missing.*--fps"):
        frames.lostandfound_frames(root)
    with pytest.raises(FileNotFoundError, match="give --laf-root"):
        frames.fishyscapes_frames(write_fake_fishyscapes(tmp_path / "fs", ["a_b_1_2"]), root)
    camvid = write_fake_camvid(tmp_path / "camvid", frames=2, size=SIZE)
    label = next((camvid / "test" / "labels").glob("*.png"))
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(label)
    code = convert.main(
        ["camvid", "--root", str(camvid), "--out", str(tmp_path / "bag"), "--quiet"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "mismatched ground truth" in err and label.name in err and "3x3" in err
    assert not (tmp_path / "bag").exists()
    (tmp_path / "bag").mkdir()
    code = convert.main(["camvid", "--root", str(camvid), "--out", str(tmp_path / "bag")])
    assert code == 2 and "exists: choose another output folder or pass --overwrite" in (
        capsys.readouterr().err
    )


def test_a_crash_leaves_no_half_bag_and_overwrite_replaces_whole(tmp_path, monkeypatch):
    root = write_fake_camvid(tmp_path / "camvid", frames=3, size=SIZE)
    out = tmp_path / "bags" / "camvid"
    convert.write_bag(frames.camvid_frames(root), out, max_frames=1, progress=False)
    calls = []

    def failing_read(path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk went away")
        return frames_read_label(path)

    frames_read_label = convert.read_label
    monkeypatch.setattr(convert, "read_label", failing_read)
    with pytest.raises(OSError, match="disk went away"):
        convert.write_bag(frames.camvid_frames(root), out, overwrite=True, progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["camvid"]  # no staging left over
    assert len(read_rosbags(out)[IMAGE_TOPIC]) == 1  # the earlier bag is untouched
    monkeypatch.setattr(convert, "read_label", frames_read_label)
    convert.write_bag(frames.camvid_frames(root), out, overwrite=True, progress=False)
    assert len(read_rosbags(out)[IMAGE_TOPIC]) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["camvid"]


def test_torch_free_tables_match_the_repository_loaders():
    assert frames.CAMVID_CLASSES == torch_camvid.CAMVID_CLASSES
    assert frames.CAMVID_OOD_HELD_OUT == torch_camvid.CAMVID_OOD_HELD_OUT
    assert frames.SMIYC_NO_KNOWN_EXCLUDED == torch_ood.SMIYC_NO_KNOWN_EXCLUDED
    assert (frames.LAF_FREE, frames.LAF_OBSTACLES) == (torch_ood.LAF_FREE, torch_ood.LAF_OBSTACLES)
    ids = np.arange(256)
    laf = torch_ood.lookup_table(
        {torch_ood.LAF_FREE: 0, **dict.fromkeys(torch_ood.LAF_OBSTACLES, 1)}
    )
    np.testing.assert_array_equal(frames.LAF_OOD[ids], laf.numpy())
    np.testing.assert_array_equal(frames.BINARY_OOD[ids], torch_ood._binary_lookup().numpy())
