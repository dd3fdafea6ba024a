"""The node overhead benchmark runs end to end (tiny frames; docs/ros-node.md's table is 2 MP)."""

from nflowjs_perception import node_bench
from ros_support import use_private_domain


def test_node_bench_measures_every_stage_and_the_copy_baseline():
    use_private_domain()
    row = node_bench.run(8, 64, 128, 20.0, "bgr8", ("obstacle_mask", "overlay"))
    assert 4 <= row["processed"] <= 8, row  # the warm-up frames are not counted
    for stage in ("preprocess", "postprocess", "publish", "end_to_end", "copy"):
        assert 0 < row[f"{stage}_p50"] <= row[f"{stage}_p99"], stage
    # every frame's total contains its postprocess and publish time, so the medians keep the order
    assert row["end_to_end_p50"] >= max(row["postprocess_p50"], row["publish_p50"])
    table = node_bench.format_table([row], 64, 128, "bgr8")
    assert "| obstacle_mask, overlay |" in table and "node / copy" in table
