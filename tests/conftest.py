from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nflowjs.flow import DENSEFLOW_PRESETS, DenseFlow, DenseFlowConfig
from nflowjs.flow.denseflow import CrossUnitAugmentation


def initialised_flow(config: DenseFlowConfig, size=(16, 16)) -> DenseFlow:
    """A flow as after some training: ActNorms initialised on data, last layers no longer zero.

    Fresh couplings are the identity (zero-initialised last layers), so gradients would not
    reach their inner layers yet; tests of invertibility and gradient flow need a generic flow.
    """
    torch.manual_seed(0)
    flow = DenseFlow(config)
    flow.log_prob(torch.rand(8, 3, *size))  # data-dependent ActNorm init (train mode)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith(("exit.weight", "net.2.weight")):
                p.normal_(0.0, 0.05)
    return flow


def variational_parameter_names(flow: DenseFlow) -> set[str]:
    """Parameters of the q(e|x) networks: they enter the likelihood, not generation."""
    return {
        f"{module_name}.{name}"
        for module_name, module in flow.named_modules()
        if isinstance(module, CrossUnitAugmentation)
        for name, _ in module.named_parameters()
    }


@pytest.fixture
def tiny_flow() -> DenseFlow:
    return initialised_flow(DENSEFLOW_PRESETS["denseflow-tiny"])


def write_fake_camvid(root: Path, frames: int = 3, size=(36, 48)) -> Path:
    """SegNet layout: {split}/images/<seq>_<frame>.jpg + {split}/labels/<same>.png (ids 0-11)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(frames):
            stem = f"0001TP_{6690 + 30 * i:06d}"
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            label = (np.arange(size[0] * size[1]) % 12).reshape(size).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{stem}.jpg", quality=92)
            Image.fromarray(label).save(root / split / "labels" / f"{stem}.png")
    return root


@pytest.fixture(scope="session")
def ros_install(tmp_path_factory) -> Path:
    """The ROS 2 packages built with colcon, as a user builds them.

    Each package is copied alone into a workspace outside the repository first (what vcs import
    or a bloom release gives a user), so a package that reads files beyond its own folder fails
    to build here.
    """
    from ros_support import REPO, colcon_build_paths, lone_copy

    out = tmp_path_factory.mktemp("colcon")
    copies = [lone_copy(p, out / "ws") for p in sorted((REPO / "ros2_ws" / "src").iterdir())]
    return colcon_build_paths(*copies, out=out)


@pytest.fixture(scope="session")
def camvid_bundle(tmp_path_factory) -> Path:
    """The shipped CamVid-OOD model exported at 180x240 (fast on a CPU; frames are resized)."""
    from nflowjs_export.onnx_export import export_onnx
    from ros_support import CAMVID_CHECKPOINT

    out = tmp_path_factory.mktemp("bundles") / "camvid-ood-180x240"
    points = {"fpr1": {"threshold": 0.7}, "tpr95": {"threshold": 0.5}}  # round numbers for tests
    return export_onnx(
        CAMVID_CHECKPOINT, out, 180, 240, 0.7, operating_points=points, threshold_point="fpr1"
    )


@pytest.fixture(scope="module")
def ros():
    """rclpy for one test module, on a ROS domain of its own (ros_support.use_private_domain)."""
    import rclpy

    from ros_support import use_private_domain

    use_private_domain()
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def context(monkeypatch):
    """An rclpy context on a fresh domain; subprocesses inherit the domain from os.environ."""
    import random

    import rclpy
    from rclpy.context import Context

    from nflowjs_perception import dds

    # <= 101: on Linux, higher ids put DDS ports into the ephemeral range (ROS 2 docs).
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    monkeypatch.setenv(dds.ENVIRONMENT_VARIABLE, dds.SINGLE_HOST)
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    ctx.try_shutdown()
