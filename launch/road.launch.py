"""``ros2 launch nflowjs_perception road.launch.py [model:=/path/to/bundle]``

Starts perception_node (a lifecycle node, brought to active by itself unless autostart:=false)
with config/road.yaml, the camera topic remapped to ``image``, and (with
use_rviz:=true) RViz2 showing the camera, overlay, OOD heatmap and obstacle mask.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "nflowjs_perception"
SHARE = FindPackageShare(PACKAGE)

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
    "rviz_config": (PathJoinSubstitution([SHARE, "rviz", "road.rviz"]), "RViz2 config file"),
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


def _node(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {name: cast(value[name]) for name, cast in OVERRIDES.items() if value[name]}
    sim_time = {"use_sim_time": value["use_sim_time"].lower() == "true"}
    return [
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
        Node(
            package="rviz2",
            executable="rviz2",
            arguments=["-d", value["rviz_config"]],
            parameters=[sim_time],
            condition=IfCondition(value["use_rviz"]),
        ),
    ]


def generate_launch_description():
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, description) in ARGUMENTS.items()
            ),
            # Shared memory + TCP for large samples: without it Fast DDS drops best-effort 2 MP
            # frames between processes (DESIGN.md). A value set by the user is kept.
            SetEnvironmentVariable(
                "FASTDDS_BUILTIN_TRANSPORTS",
                os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"),
            ),
            OpaqueFunction(function=_node),
        ]
    )
