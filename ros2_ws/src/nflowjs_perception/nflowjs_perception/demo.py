"""``make demo``: perception_node over the shipped CamVid bag, its outputs recorded and scored.

Starts the colcon-installed node (ONNX Runtime, the shipped CamVid-OOD bundle) as a process,
records the camera, the ground truth and the node's outputs, plays the demo bag paced by the
node (each frame waits for the previous frame's heatmap, so none is dropped for being early),
then writes to ``--out``: ``run/`` (the recorded bag), ``metrics.json`` (AP, FPR95, AUROC
against the ground truth, latency, fps, drops), ``overlay_NN.png`` (the node's ``~/overlay``),
``demo.gif`` (overlay, OOD heatmap, obstacle mask side by side), ``node.log``; and prints a
summary.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from PIL import Image
from rclpy.context import Context
from rosbags.rosbag2 import Reader

from nflowjs_perception.bag_tools.evaluate import evaluate_bag, format_table, write_json
from nflowjs_perception.bag_tools.messages import deserialize, header_stamp_ns, image_array
from nflowjs_perception.bag_tools.replay import play, record
from nflowjs_perception.dds import use_shipped_profile

NODE = "/perception_node"
IMAGE, GROUND_TRUTH = "/camera/image_raw", "/ground_truth/ood_mask"
RECORDED = [IMAGE, GROUND_TRUTH, f"{NODE}/ood_heatmap", f"{NODE}/overlay", f"{NODE}/obstacle_mask"]
# Subscribers each of the bag's topics needs before it plays: node and recorder, recorder.
PLAYED_TO = {IMAGE: 2, GROUND_TRUTH: 1}


def demo_folder() -> Path:
    """The shipped demo bundle and bag: beside the sources, or in the installed share folder."""
    source = Path(__file__).resolve().parents[1] / "demo"
    if source.is_dir():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("nflowjs_perception")) / "demo"


SHARE = demo_folder()


def start_node(install: Path, bundle: Path, log: Path) -> subprocess.Popen:
    """The installed executable, as `ros2 run nflowjs_perception perception_node` starts it."""
    executable = install / "nflowjs_perception" / "lib" / "nflowjs_perception" / "perception_node"
    if not executable.is_file():
        raise FileNotFoundError(f"{executable} not found: build the workspace with colcon first")
    command = (
        f"source {install}/setup.bash && exec {executable} --ros-args -p model:={bundle} "
        "-p backend:=onnxruntime -r image:=/camera/image_raw"
    )
    return subprocess.Popen(["bash", "-c", command], stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"perception_node did not start; its log ({log}):\n{log.read_text()}")


def wait_until_recording(timeout: float = 30.0) -> None:
    """Hold until the recorder subscribes to the node's outputs (it subscribes to a topic once
    it sees a publisher). The bag's own topics are the player's to wait for (PLAYED_TO)."""
    context = Context()
    rclpy.init(context=context)
    try:
        probe = rclpy.create_node("demo_graph_probe", context=context)
        outputs = [topic for topic in RECORDED if topic not in PLAYED_TO]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(probe.count_subscribers(topic) for topic in outputs):
                return
            time.sleep(0.1)
        counts = {topic: probe.count_subscribers(topic) for topic in outputs}
        raise RuntimeError(f"the recorder did not subscribe within {timeout} s: {counts}")
    finally:
        context.try_shutdown()


def run(install: Path, bundle: Path, bag: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # A domain of its own, unless the user chose one: the demo must not meet other ROS graphs.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    use_shipped_profile()  # the package's Fast DDS profile, as road.launch.py gives the node
    node = start_node(install, bundle, out / "node.log")
    stop = threading.Event()
    recorder = threading.Thread(
        target=record,
        args=(out / "run", RECORDED),
        kwargs={
            "types": dict.fromkeys(RECORDED, "sensor_msgs/msg/Image"),
            "stop": stop,
            "overwrite": True,
            "log": lambda _: None,
        },
    )
    try:
        wait_for_line(out / "node.log", "on onnxruntime", node, timeout=120)
        recorder.start()
        wait_until_recording()
        stats = play(
            bag,
            as_fast_as_possible=True,
            wait_for=f"{NODE}/ood_heatmap",
            wait_timeout=10.0,
            wait_for_subscribers=20.0,
            # The recorder subscribes once it sees the player's publishers, and may match them
            # after the node does: the first frames wait for both.
            min_subscribers=PLAYED_TO,
        )
        time.sleep(1.0)  # the last outputs reach the recorder
    finally:
        stop.set()
        if recorder.is_alive():
            recorder.join()
        node.send_signal(signal.SIGINT)
        node.wait(timeout=20)
    metrics = evaluate_bag(out / "run", heatmap_topic=f"{NODE}/ood_heatmap", progress=False)
    if not metrics["frames"]["evaluated"]:
        raise RuntimeError(f"no frame came back from the node; see {out / 'node.log'}")
    metrics["fps"] = write_pictures(out / "run", out)
    metrics["player"] = {"published": stats.published, "wait_timeouts": stats.wait_timeouts}
    write_json(out / "metrics.json", metrics)
    return metrics


def write_pictures(bag: Path, out: Path) -> float | None:
    """overlay_NN.png per frame, demo.gif (overlay | OOD heatmap, inferno 0..1 | obstacle mask);
    returns the node's throughput in frames/s from the heatmaps' log times."""
    panels = ("overlay", "ood_heatmap", "obstacle_mask")
    frames: dict[str, dict[int, np.ndarray]] = {name: {} for name in panels}
    heatmap_log_ns = []
    with Reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic.rsplit("/", 1)[-1] in frames]
        for connection, log_ns, raw in reader.messages(connections=wanted):
            name = connection.topic.rsplit("/", 1)[-1]
            frames[name][header_stamp_ns(raw)] = image_array(deserialize(raw, connection.msgtype))
            if name == "ood_heatmap":
                heatmap_log_ns.append(log_ns)
    stamps = sorted(set.intersection(*(set(frames[name]) for name in panels)))
    images = []
    for i, stamp in enumerate(stamps):
        overlay = frames["overlay"][stamp]
        Image.fromarray(overlay).save(out / f"overlay_{i:02d}.png")
        heat = np.clip(frames["ood_heatmap"][stamp] * 255, 0, 255).astype(np.uint8)
        heat = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
        obstacles = cv2.cvtColor(frames["obstacle_mask"][stamp], cv2.COLOR_GRAY2RGB)
        images.append(Image.fromarray(np.hstack([overlay, heat, obstacles])))
    if images:
        images[0].save(
            out / "demo.gif", save_all=True, append_images=images[1:], duration=500, loop=0
        )
    if len(heatmap_log_ns) < 2:
        return None
    return (len(heatmap_log_ns) - 1) / ((max(heatmap_log_ns) - min(heatmap_log_ns)) / 1e9)


def summary(metrics: dict, out: Path) -> str:
    frames = metrics["frames"]
    lines = [
        format_table(metrics),
        "",
        f"{frames['evaluated']} of {frames['ground_truth']} frames scored, {frames['dropped']} "
        f"dropped; {metrics['fps'] or 0:.1f} fps through the node (ONNX Runtime on the CPU; "
        "the player sends each frame once the previous heatmap is out)",
        f"written to {out}/: metrics.json, overlay_NN.png, demo.gif, run/ (the recorded bag)",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", type=Path, required=True, help="colcon install folder")
    parser.add_argument("--bundle", type=Path, default=SHARE / "camvid-ood-360x480")
    parser.add_argument("--bag", type=Path, default=SHARE / "camvid-test-bag")
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args(argv)
    try:
        metrics = run(args.install.resolve(), args.bundle.resolve(), args.bag, args.out)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 1
    print(summary(metrics, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
