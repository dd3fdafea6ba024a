"""nflowjs_perception: the ROS 2 node and its runtime (model bundles, backends, bag tools)."""
