"""Fast DDS transport settings for moving 2 MP images between processes.

Fast DDS's default transports drop best-effort 2 MP frames between processes (UDP fragments
and 512 KB shared-memory segments overflow; docs/ros-node.md, DDS transport). The package ships
one XML profile, ``config/fastdds.xml`` (shared memory with segments for 2 MP frames, plus UDP
for discovery and other hosts), which every process selects with
``FASTDDS_DEFAULT_PROFILES_FILE``: the launch file, the Docker image, the demo and the bag tools
set it unless the user chose a transport.
It has no TCP: Fast DDS 3.2.3 (the PyPI ROS 2 wheels) can hang for ever while a process deletes
a participant whose TCP channel is mid-read (eProsima/Fast-DDS#6066, fixed after 3.2.3), which
``LARGE_DATA`` (shared memory + TCP) meets. ``SINGLE_HOST`` (shared memory only) is kept for the
tests and the comparison in docs/ros-node.md. All processes of one graph must use the same setting.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "FASTDDS_BUILTIN_TRANSPORTS"
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
# Any of these set means the user (or a parent process) chose the transports.
TRANSPORT_VARIABLES = (
    ENVIRONMENT_VARIABLE,
    PROFILE_VARIABLE,
    "FASTRTPS_DEFAULT_PROFILES_FILE",  # the name before Fast DDS 3
)
# 2048x1024 32FC1 is 8.4 MB; 64 MB of segment holds a few frames of every output in flight.
SINGLE_HOST = "SHM?max_msg_size=16MB&sockets_size=64MB"
PACKAGE = "nflowjs_perception"
PROFILE = Path("config") / "fastdds.xml"


def profile_path() -> Path:
    """The shipped profile: beside this source (a checkout), else in the installed share."""
    source = Path(__file__).resolve().parents[1] / PROFILE
    if source.is_file():
        return source
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        installed = Path(get_package_share_directory(PACKAGE)) / PROFILE
    except PackageNotFoundError:
        installed = None
    if installed is None or not installed.is_file():
        raise FileNotFoundError(
            f"{PACKAGE}'s Fast DDS profile ({PROFILE}) is neither beside {__file__} nor in an "
            "installed share directory: source the workspace's install/setup.bash, or set "
            f"{PROFILE_VARIABLE} to a profile of your own"
        )
    return installed


def use_single_host_transport() -> str:
    """Shared memory only for this process and its children, unless the user chose (bench)."""
    return os.environ.setdefault(ENVIRONMENT_VARIABLE, SINGLE_HOST)


def use_shipped_profile(environ=None) -> str | None:
    """Select the shipped profile for this process and its children, unless the user chose.

    Returns the profile's path, or None when a transport variable was already set. Must run
    before rclpy.init: Fast DDS reads the variable when it creates the first participant.
    ``environ``: this process's environment unless given.
    """
    if environ is None:
        environ = os.environ
    if any(environ.get(name) for name in TRANSPORT_VARIABLES):
        return None
    environ[PROFILE_VARIABLE] = str(profile_path())
    return environ[PROFILE_VARIABLE]


def transport_warning(environ=None, rmw: str | None = None) -> str | None:
    """What to tell a user whose Fast DDS would drop large camera frames, or None.

    Defaults: this process's environment and middleware.
    """
    if environ is None:
        environ = os.environ
    if rmw is None:
        import rclpy  # here, so the constants above stay importable without ROS

        rmw = rclpy.get_rmw_implementation_identifier()
    if rmw != "rmw_fastrtps_cpp":
        return None
    for name in TRANSPORT_VARIABLES[1:]:
        if environ.get(name) and not Path(environ[name]).expanduser().is_file():
            return (
                f"{name}={environ[name]} is not a file: Fast DDS ignores it and uses its "
                "default transports, which drop large camera frames between processes. Set it "
                f"to the package's profile, <share>/{PACKAGE}/{PROFILE.as_posix()} "
                f"(`ros2 pkg prefix {PACKAGE}` gives <prefix>; <share> is <prefix>/share)"
            )
    if any(environ.get(name) for name in TRANSPORT_VARIABLES):
        return None
    return (
        f"neither {PROFILE_VARIABLE} nor {ENVIRONMENT_VARIABLE} is set: between processes, Fast "
        "DDS's default transports drop best-effort camera frames from about 1 MB up (half of "
        f"640x480 rgb8, all of 2 MP). Set {PROFILE_VARIABLE} to the package's profile, "
        f"<share>/{PACKAGE}/{PROFILE.as_posix()} (as road.launch.py does), in every process "
        "that sends or receives camera images"
    )
