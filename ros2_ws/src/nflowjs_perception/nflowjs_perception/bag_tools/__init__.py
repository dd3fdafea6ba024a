"""Bag tools: datasets -> rosbag2 (MCAP), replay/record without the ROS CLI, bag evaluation,
repair of bags a killed recorder left.

``convert`` and ``replay`` need numpy, Pillow, rosbags (and rclpy for replay), never torch, so
they run in the runtime image; ``evaluate`` scores with the repository's ``nflowjs.metrics`` and
so needs the repository's Python package (torch included); ``repair`` needs rosbags and mcap.

Run them as ``python -m nflowjs_perception.bag_tools.{convert,replay,evaluate,repair} --help``.
"""
