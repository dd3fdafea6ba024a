"""Fast DDS transport settings for moving 2 MP images between processes.

Fast DDS's default transports drop best-effort 2 MP frames between processes (UDP fragments
and 512 KB shared-memory segments overflow; DESIGN.md). Two settings deliver them:

- ``LARGE_DATA`` (UDP discovery, shared memory on one host, TCP between hosts): what the launch
  file and the Docker image use, because a camera, the node and RViz may sit on different hosts.
- ``SINGLE_HOST``: shared memory only, with segments large enough for a whole 2 MP float32
  heatmap. The demo, the node benchmark and the tests use it: they run on one host by
  construction, and Fast DDS 3.2.3 (the PyPI ROS 2 wheels) can hang for ever while a process
  deletes a participant whose TCP channel is mid-read (eProsima/Fast-DDS#6066, fixed after
  3.2.3); our test runs met that hang under load. Both sides must use the same setting.
"""

from __future__ import annotations

import os

ENVIRONMENT_VARIABLE = "FASTDDS_BUILTIN_TRANSPORTS"
# 2048x1024 32FC1 is 8.4 MB; 64 MB of segment holds a few frames of every output in flight.
SINGLE_HOST = "SHM?max_msg_size=16MB&sockets_size=64MB"


def use_single_host_transport() -> str:
    """Shared memory only for this process and the processes it starts, unless the user chose."""
    return os.environ.setdefault(ENVIRONMENT_VARIABLE, SINGLE_HOST)


def transport_warning(environ=None, rmw: str | None = None) -> str | None:
    """What to tell a user whose Fast DDS would drop large camera frames, or None.

    Defaults: this process's environment and middleware.
    """
    if environ is None:
        environ = os.environ
    if rmw is None:
        import rclpy  # here, so the constants above stay importable without ROS

        rmw = rclpy.get_rmw_implementation_identifier()
    configured = (
        ENVIRONMENT_VARIABLE,
        "FASTDDS_DEFAULT_PROFILES_FILE",  # an XML profile may set the transports instead
        "FASTRTPS_DEFAULT_PROFILES_FILE",
    )
    if rmw != "rmw_fastrtps_cpp" or any(environ.get(name) for name in configured):
        return None
    return (
        f"{ENVIRONMENT_VARIABLE} is not set: between processes, Fast DDS's default transports "
        "drop best-effort camera frames from about 1 MB up (half of 640x480 rgb8, all of 2 MP). "
        f"Set {ENVIRONMENT_VARIABLE}=LARGE_DATA (as road.launch.py does), or, with every process "
        f"on this host, {ENVIRONMENT_VARIABLE}='{SINGLE_HOST}', in every process that sends or "
        "receives camera images"
    )
