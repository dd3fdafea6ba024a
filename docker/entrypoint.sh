#!/usr/bin/env bash
# Entry point of the runtime image: ROS 2 and the workspace sourced, then the command.
# Sourced here, not in ~/.bashrc, so `docker run IMAGE ros2 ...` and the HEALTHCHECK (exec form,
# no shell) see the same environment as the default command.
set -e
# shellcheck source=/dev/null
source "/opt/ros/${ROS_DISTRO:-jazzy}/setup.bash"
# shellcheck source=/dev/null
source /opt/nflowjs/install/setup.bash
exec "$@"
