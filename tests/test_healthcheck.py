"""The Docker HEALTHCHECK probe against real DDS: this process publishes, the probe subscribes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context

from nflowjs_perception import dds


@pytest.fixture
def domain_env(monkeypatch) -> dict[str, str]:
    """A random ROS_DOMAIN_ID for this test, here and in the probe, so parallel runs stay apart."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    monkeypatch.setenv(dds.ENVIRONMENT_VARIABLE, dds.SINGLE_HOST)
    return dict(os.environ)


def run_probe(env: dict[str, str], *args: str, publish: list[str] | None = None):
    """Run the probe as a subprocess; publish statuses named ``publish`` every 0.1 s meanwhile."""
    context = Context()
    rclpy.init(args=[], context=context)  # after domain_env: rcl reads ROS_DOMAIN_ID here
    try:
        node = rclpy.create_node("fake_perception_node", context=context)
        pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        message = DiagnosticArray(
            status=[
                DiagnosticStatus(level=DiagnosticStatus.OK, name=name, message="12.5 fps")
                for name in publish or []
            ]
        )
        probe = subprocess.Popen(
            [sys.executable, "-m", "nflowjs_perception.healthcheck", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        start = time.monotonic()
        while probe.poll() is None and time.monotonic() - start < 60:
            if publish:
                message.header.stamp = node.get_clock().now().to_msg()
                pub.publish(message)
            time.sleep(0.1)
        out, err = probe.communicate(timeout=10)
        return probe.returncode, out, err, time.monotonic() - start
    finally:
        context.try_shutdown()


def test_healthy_when_the_node_publishes_its_status(domain_env):
    code, out, err, _ = run_probe(
        domain_env, "--timeout", "30", publish=["perception_node: inference"]
    )
    assert code == 0, err
    assert "healthy: 'perception_node: inference' OK: 12.5 fps" in out


def test_name_prefix_ignores_other_nodes(domain_env):
    code, _, err, _ = run_probe(
        domain_env,
        "--timeout",
        "2",
        "--name-prefix",
        "front_camera",
        publish=["perception_node: inference", "other: front_camera"],
    )
    assert code == 1
    assert "no DiagnosticStatus named 'front_camera*' on /diagnostics within 2 s" in err


def test_unhealthy_after_timeout_when_nothing_is_published(domain_env):
    code, out, err, elapsed = run_probe(domain_env, "--timeout", "1.5")
    assert code == 1
    assert out == ""
    assert "unhealthy: no DiagnosticStatus named 'perception_node*'" in err
    assert elapsed < 15, f"the probe took {elapsed:.1f} s for a 1.5 s timeout"


def test_rejects_a_non_positive_timeout(domain_env):
    probe = subprocess.run(
        [sys.executable, "-m", "nflowjs_perception.healthcheck", "--timeout", "0"],
        env=domain_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 2
    assert "--timeout must be > 0 seconds, got 0.0" in probe.stderr
