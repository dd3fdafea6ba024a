"""``ros2 launch nflowjs_perception road.launch.py [model:=/path/to/bundle]``

Starts perception_node (a lifecycle node, brought to active by itself unless autostart:=false)
with config/road.yaml, the camera topic remapped to ``image``, and (with
use_rviz:=true) RViz2 showing the camera, overlay, OOD heatmap and obstacle mask. The RViz config
is in the package nflowjs_perception_viz, which depends on rviz2: headless robots leave it out.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "nflowjs_perception"
VIZ_PACKAGE = "nflowjs_perception_viz"
SHARE = FindPackageShare(PACKAGE)
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
FASTDDS_PROFILE = PathJoinSubstitution([SHARE, "config", "fastdds.xml"])
# set by the user: their choice of transports stands (nflowjs_perception.dds has the same list)
TRANSPORT_VARIABLES = (
    PROFILE_VARIABLE,
    "FASTDDS_BUILTIN_TRANSPORTS",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
)

# name -> (default, description); "" leaves the parameter to config/road.yaml
ARGUMENTS = {
    "model": (
        PathJoinSubstitution([SHARE, "demo", "camvid-ood-360x480"]),
        "model bundle folder (bundle.json + model files); default: the CamVid-OOD demo bundle",
    ),
    "image_topic": ("/camera/image_raw", "camera image topic (sensor_msgs/Image)"),
    "backend": ("", "auto | tensorrt | onnxruntime | torch (default: the params file's)"),
    "operating_point": ("", "fpr1 | fpr5 | tpr95 from the bundle (default: the bundle's, fpr1)"),
    "ood_threshold": ("", "OOD score threshold in [0, 1], overrides operating_point"),
    "use_rviz": ("false", "start RViz2 with the overlay, heatmap and obstacle displays"),
    "rviz_config": ("", f"RViz2 config file (default: {VIZ_PACKAGE}'s rviz/road.rviz)"),
    "use_sim_time": ("false", "use /clock (bag playback with --clock)"),
    "namespace": ("", "namespace of the node (outputs: <namespace>/perception_node/...)"),
    "params_file": (PathJoinSubstitution([SHARE, "config", "road.yaml"]), "parameter file"),
    "engine_cache_dir": ("", "TensorRT: folder for engines built on this machine"),
    "build_engine_if_missing": ("", "TensorRT: build an engine on first start (true/false)"),
    "autostart": ("", "true: configure and activate at once; false: wait for a lifecycle manager"),
}
# launch argument -> parameter type, for the arguments that override a parameter when given
OVERRIDES = {
    "model": str,
    "backend": str,
    "operating_point": str,
    "ood_threshold": float,
    "engine_cache_dir": str,
    "build_engine_if_missing": lambda text: text.lower() == "true",
    "autostart": lambda text: text.lower() == "true",
}


def _rviz_config(given: str) -> str:
    """The RViz config to open: the one given, else the viz package's (if it is installed)."""
    if given:
        return given
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return os.path.join(get_package_share_directory(VIZ_PACKAGE), "rviz", "road.rviz")
    except PackageNotFoundError:
        raise RuntimeError(
            f"use_rviz:=true needs the package {VIZ_PACKAGE} (the RViz config; it depends on "
            f"rviz2), which is not installed: build it with this package (it is beside it in "
            f"ros2_ws/src) and run `rosdep install --from-paths src --ignore-src -y` for rviz2, "
            "or give rviz_config:=/path/to/file.rviz"
        ) from None


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {name: cast(value[name]) for name, cast in OVERRIDES.items() if value[name]}
    sim_time = {"use_sim_time": value["use_sim_time"].lower() == "true"}
    nodes = [
        Node(
            package=PACKAGE,
            executable="perception_node",
            name="perception_node",
            namespace=value["namespace"],
            parameters=[value["params_file"], overrides, sim_time],
            remappings=[("image", value["image_topic"])],
            output="screen",
            emulate_tty=True,
        ),
    ]
    if value["use_rviz"].lower() == "true":  # only then: headless robots have no viz package
        nodes.append(
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", _rviz_config(value["rviz_config"])],
                parameters=[sim_time],
            )
        )
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()
            ),
            # The package's Fast DDS profile (shared memory for 2 MP frames + UDP): with Fast
            # DDS's defaults best-effort 2 MP frames between processes are lost (docs/ros-node.md).
            # Transports the user chose are kept.
            *(
                ()
                if any(os.environ.get(name) for name in TRANSPORT_VARIABLES)
                else (SetEnvironmentVariable(PROFILE_VARIABLE, FASTDDS_PROFILE),)
            ),
            OpaqueFunction(function=_node),
        ]
    )
