"""The nflowjs_perception package as colcon builds it, and the launch file checked against it.

The launch file runs only where ROS 2's ``launch`` package exists (a ROS install or our Docker
image; PyPI has none): everywhere else it is checked statically, argument by argument.
"""

from __future__ import annotations

import ast
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from nflowjs_perception.bundle import load_bundle
from nflowjs_perception.parameters import SPECS
from ros_support import REPO

PACKAGE = REPO / "ros2_ws" / "src" / "nflowjs_perception"
VIZ_PACKAGE = REPO / "ros2_ws" / "src" / "nflowjs_perception_viz"
LAUNCH_FILE = PACKAGE / "launch" / "road.launch.py"
LAUNCH_ARGUMENTS = {  # the list, plus the TensorRT engine cache and the params file
    "model",
    "image_topic",
    "backend",
    "operating_point",
    "ood_threshold",
    "use_rviz",
    "rviz_config",
    "use_sim_time",
    "namespace",
    "params_file",
    "engine_cache_dir",
    "build_engine_if_missing",
    "autostart",
}
# top-level import -> the rosdep key package.xml must list for it
ROSDEP_KEYS = {
    "rclpy": "rclpy",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "rcl_interfaces": "rcl_interfaces",
    "rosgraph_msgs": "rosgraph_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "builtin_interfaces": "builtin_interfaces",
    "numpy": "python3-numpy",
    "PIL": "python3-pil",
    "cv2": "python3-opencv",
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
    "tqdm": "python3-tqdm",
    "yaml": "python3-yaml",
}
OPTIONAL_IMPORTS = {"torch", "tensorrt", "nflowjs", "nflowjs_export", "mcap", "mcap_ros2"}


def launch_literal(name: str):
    """A module-level dict of the launch file (ARGUMENTS, OVERRIDES), read without running it."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:
            return node.value
    raise AssertionError(f"{LAUNCH_FILE} has no {name}")


def test_lone_copies_of_the_packages_build_with_colcon(ros_install):
    """``ros_install`` is built from copies of each package without the repository around them."""
    share = ros_install / "nflowjs_perception" / "share" / "nflowjs_perception"
    for path in ("launch/road.launch.py", "config/road.yaml", "package.xml", "LICENSE", "NOTICE"):
        assert (share / path).is_file(), path
    viz_share = ros_install / "nflowjs_perception_viz" / "share" / "nflowjs_perception_viz"
    assert (viz_share / "rviz" / "road.rviz").is_file()
    executable = ros_install / "nflowjs_perception" / "lib" / "nflowjs_perception"
    assert os.access(executable / "perception_node", os.X_OK)
    index = ros_install / "nflowjs_perception" / "share" / "ament_index" / "resource_index"
    assert (index / "packages" / "nflowjs_perception").is_file()
    load_bundle(share / "demo" / "camvid-ood-360x480")  # launch's default model, hashes checked
    for package in (PACKAGE, VIZ_PACKAGE):  # a link out of the package breaks vcs/bloom copies
        for path in package.rglob("*"):
            if path.is_symlink():
                assert path.resolve().is_relative_to(package.resolve()), f"{path} leaves {package}"


def test_top_level_launch_file_is_the_package_one():
    """Users look in launch/ at the top; the package holds the file (one file, not two)."""
    top = REPO / "launch" / "road.launch.py"
    assert top.is_symlink() and top.resolve() == LAUNCH_FILE.resolve()


def test_rviz_is_optional_for_the_node_package():
    """Headless robots: rviz2 is a dependency of nflowjs_perception_viz only."""
    depends = {
        p.name: {e.text for e in ET.parse(p / "package.xml").getroot() if e.tag.endswith("depend")}
        for p in (PACKAGE, VIZ_PACKAGE)
    }
    assert "rviz2" not in depends["nflowjs_perception"]
    assert {"rviz2", "nflowjs_perception"} <= depends["nflowjs_perception_viz"]


def test_package_xml_declares_what_the_code_imports():
    root = ET.parse(PACKAGE / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("export/build_type") == "ament_python"
    declared = {e.text for e in root if e.tag.endswith("depend")}
    imported = set()
    for source in (PACKAGE / "nflowjs_perception").rglob("*.py"):
        for node in ast.parse(source.read_text()).body:  # module level: always imported
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = {
        name
        for name in imported
        if name not in ("nflowjs_perception", "__future__")
        and name not in __import__("sys").stdlib_module_names
    }
    unknown = third_party - set(ROSDEP_KEYS) - OPTIONAL_IMPORTS
    assert not unknown, f"imports without a rosdep key in this test: {unknown}"
    missing = {ROSDEP_KEYS[n] for n in third_party & set(ROSDEP_KEYS)} - declared
    assert not missing, f"package.xml lacks {missing}"


def test_config_matches_the_declared_parameters():
    config = yaml.safe_load((PACKAGE / "config" / "road.yaml").read_text())
    (params,) = [v["ros__parameters"] for k, v in config.items() if k.endswith("perception_node")]
    assert params == {spec.name: spec.default for spec in SPECS}


def test_launch_arguments_and_overrides_match_the_node(ros_install):
    arguments = {k.value for k in launch_literal("ARGUMENTS").keys}
    assert arguments == LAUNCH_ARGUMENTS
    overrides = {k.value for k in launch_literal("OVERRIDES").keys}
    assert overrides <= {spec.name for spec in SPECS}
    source = LAUNCH_FILE.read_text()
    assert 'executable="perception_node"' in source
    assert (ros_install / "nflowjs_perception/lib/nflowjs_perception/perception_node").is_file()
    assert '"rviz", "road.rviz"' in source and '"config", "road.yaml"' in source
    assert 'VIZ_PACKAGE = "nflowjs_perception_viz"' in source


def test_rviz_shows_the_camera_and_every_image_output():
    config = yaml.safe_load((VIZ_PACKAGE / "rviz" / "road.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    arguments = launch_literal("ARGUMENTS")
    camera_default = next(
        v.elts[0].value
        for k, v in zip(arguments.keys, arguments.values, strict=True)
        if k.value == "image_topic"
    )
    assert topics == {
        camera_default,
        "/perception_node/overlay",
        "/perception_node/ood_heatmap",
        "/perception_node/obstacle_mask",
    }


def test_the_launch_file_runs_where_ros2_launch_exists(ros_install, camvid_bundle, monkeypatch):
    pytest.importorskip(
        "launch_ros",
        reason="ROS 2's launch/launch_ros are not on PyPI; this runs on a ROS install or in "
        "the Docker image (the launch file is checked statically above)",
    )
    from launch import LaunchDescription, LaunchService
    from launch.actions import (
        IncludeLaunchDescription,
        OpaqueFunction,
        RegisterEventHandler,
        Shutdown,
        TimerAction,
    )
    from launch.event_handlers import OnProcessExit, OnProcessIO
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    prefix = Path(ros_install) / "nflowjs_perception"
    for variable, path in (
        ("AMENT_PREFIX_PATH", prefix),
        ("PYTHONPATH", next(prefix.glob("lib/python3*/site-packages"))),
    ):  # what sourcing install/setup.bash does
        monkeypatch.setenv(variable, f"{path}{os.pathsep}{os.environ.get(variable, '')}")
    share = prefix / "share" / "nflowjs_perception"
    # LaunchService.run() returns 0 even when a node dies at start-up: watch the processes.
    output: list[str] = []
    exited_early: list[tuple[str, int]] = []
    stopping: list[bool] = []

    def keep_output(event) -> None:
        output.append(event.text.decode())

    def note_exit(event, _context) -> None:
        if not stopping:
            exited_early.append((event.action.name, event.returncode))

    service = LaunchService()
    service.include_launch_description(
        LaunchDescription(
            [
                RegisterEventHandler(OnProcessIO(on_stdout=keep_output, on_stderr=keep_output)),
                RegisterEventHandler(OnProcessExit(on_exit=note_exit)),
                IncludeLaunchDescription(
                    PythonLaunchDescriptionSource(str(share / "launch" / "road.launch.py")),
                    launch_arguments={
                        "model": str(camvid_bundle),
                        "backend": "onnxruntime",
                    }.items(),
                ),
                TimerAction(
                    period=10.0,
                    actions=[OpaqueFunction(function=lambda _: stopping.append(True)), Shutdown()],
                ),
            ]
        )
    )
    assert service.run() == 0
    log = "".join(output)
    assert not exited_early, f"exited before the launch was shut down: {exited_early}\n{log}"
    assert f"bundle '{camvid_bundle.name}'" in log and "on onnxruntime" in log, log


def test_docs_document_every_parameter_and_launch_argument():
    reference = (REPO / "docs" / "ros-node.md").read_text()  # the node reference the README links
    for name in [spec.name for spec in SPECS] + sorted(LAUNCH_ARGUMENTS):
        assert f"| `{name}` |" in reference, name


def test_one_licence_everywhere():
    """Apache-2.0 in package.xml, setup.py and pyproject; each package carries the same text."""
    assert "Apache License" in (REPO / "LICENSE").read_text()
    pyproject = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]
    assert pyproject["license"] == "Apache-2.0"
    for package in (PACKAGE, VIZ_PACKAGE):
        license_tag = ET.parse(package / "package.xml").getroot().find("license")
        assert (license_tag.text, license_tag.get("file")) == ("Apache-2.0", "LICENSE")
        assert 'license="Apache-2.0"' in (package / "setup.py").read_text()
        assert (package / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes(), package
    # the CamVid demo data's terms travel with the package that ships it
    assert (PACKAGE / "NOTICE").read_bytes() == (REPO / "NOTICE").read_bytes()


def test_walk_through_commands_run_the_package_tools_the_ros_way():
    """On a ROS install the console scripts are not on PATH: `ros2 run` (or the .venv's copy)."""
    page = (REPO / "docs" / "walkthrough.md").read_text()
    section = page.split("# LostAndFound walk-through")[1]  # the whole page is the walk-through
    scripts = set(__import__("test_docker").console_scripts(PACKAGE / "setup.py"))
    commands = [
        line.strip()
        for block in section.split("```bash")[1:]
        for line in block.split("```")[0].splitlines()
        if line.strip()
    ]
    assert any(c.startswith("ros2 run nflowjs_perception convert_to_bag") for c in commands)
    for command in commands:
        first = command.split()[0]
        assert first.split("/")[-1] not in scripts or first.startswith(".venv/bin/"), command
    # every terminal loads the package's Fast DDS profile
    assert "export FASTDDS_DEFAULT_PROFILES_FILE=$(ros2 pkg prefix nflowjs_perception)" in section
