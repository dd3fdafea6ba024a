"""record_bag as a real process: killed with SIGKILL and repaired, stopped with SIGTERM after a
burst of large frames, frozen with SIGSTOP so that its queue overflows and it counts the drops;
then its parts in-process: the rosbags internals it relies on, fsync, drop counts, stored QoS.

Each test runs on its own random ROS_DOMAIN_ID (the ``context`` fixture of conftest).
"""

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from mcap.exceptions import McapError
from mcap.records import Message
from mcap.stream_reader import StreamReader
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.storage_mcap import McapWriter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from nflowjs_perception.bag_tools import bagio, repair
from nflowjs_perception.bag_tools.messages import (
    TYPESTORE,
    deserialize,
    header_stamp_ns,
    image_array,
    serialize,
    stamp_ns,
)
from nflowjs_perception.bag_tools.recorder import RecordStats, _SequenceGaps, _Subscriber, record
from nflowjs_perception.bag_tools.replay import _record_report
from nflowjs_perception.bag_tools.ros_node import RosNode
from ros_support import read_back, run_module, run_tool, wait_until

STRING = "std_msgs/msg/String"


def live_stamps(mcap: Path) -> list[int]:
    """Header stamps (s) in the complete chunks of an MCAP file that may still be written."""
    stamps = []
    try:
        with mcap.open("rb") as file:
            for record in StreamReader(file).records:
                if isinstance(record, Message):
                    stamps.append(header_stamp_ns(record.data) // 1_000_000_000)
    except Exception:  # a poll of a file being written: a half-written record raises anything
        pass
    return stamps


def live_messages(mcap: Path) -> int:
    return len(live_stamps(mcap))


def frame(i: int, height: int, width: int) -> Image:
    pixels = np.full((height, width, 3), i % 256, np.uint8)
    pixels[0, :3, 0] = (i // 256, i % 256, 7)
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
    msg.data = pixels.tobytes()
    msg.header.stamp.sec, msg.header.frame_id = 1000 + i, "cam"
    return msg


def test_a_sigkilled_recording_loses_at_most_its_last_chunk_and_repairs(tmp_path, context):
    out = tmp_path / "killed"
    recorder = run_module("record", "--out", str(out), "/cam")
    node = Node("camera", context=context)
    cam = node.create_publisher(Image, "/cam", QoSProfile(depth=50))  # reliable
    wait_until(lambda: cam.get_subscription_count(), 30, "the recorder to subscribe")
    for i in range(12):
        cam.publish(frame(i, 120, 160))
    assert cam.wait_for_all_acked(Duration(seconds=30))
    # The bag is at --out from the start, and its chunks reach the file within a second.
    wait_until(lambda: live_messages(out / "killed.mcap") == 12, 30, "12 messages on disk")
    for i in range(12, 15):  # in the recorder's pending chunk, or not even received: may be lost
        cam.publish(frame(i, 120, 160))
    recorder.send_signal(signal.SIGKILL)
    recorder.communicate(timeout=30)
    node.destroy_node()
    assert sorted(p.name for p in out.iterdir()) == ["killed.mcap"]  # no metadata.yaml

    for tool in (("replay", "play", str(out)), ("evaluate", str(out))):
        refused = run_tool(*tool)
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert f"{out} has killed.mcap but no metadata.yaml" in line
        assert f"run `repair_bag {out}`" in line

    repaired = run_tool("repair", str(out))
    assert repaired.returncode == 0, repaired.stderr
    topics = read_back(out)  # rosbags and the mcap reader agree
    stamps = [stamp_ns(m.header.stamp) // 1_000_000_000 - 1000 for _, m in topics["/cam"]]
    assert 12 <= len(stamps) <= 15
    assert stamps == list(range(len(stamps)))
    assert f"{len(stamps)} messages recovered (/cam x{len(stamps)})" in repaired.stdout
    assert "killed.mcap.damaged" in repaired.stdout
    assert (out / "killed.mcap.damaged").is_file()  # the original is kept
    np.testing.assert_array_equal(image_array(topics["/cam"][5][1])[1:, :, :], 5)
    again = run_tool("repair", str(out))
    assert again.returncode == 0 and "nothing to repair" in again.stderr


def test_a_burst_of_large_frames_from_a_reliable_publisher_is_recorded_whole(tmp_path, context):
    n, height, width = 60, 720, 1280  # 2.8 MB frames, 166 MB published at once
    out = tmp_path / "burst"
    recorder = run_module("record", "--out", str(out), "/cam")
    node = Node("camera", context=context)
    # The publisher keeps the whole burst until acknowledged; the recorder must not drop any.
    cam = node.create_publisher(Image, "/cam", QoSProfile(depth=n))
    wait_until(lambda: cam.get_subscription_count(), 30, "the recorder to subscribe")
    for i in range(n):
        cam.publish(frame(i, height, width))
    assert cam.wait_for_all_acked(Duration(seconds=120))
    recorder.send_signal(signal.SIGTERM)
    _, err = recorder.communicate(timeout=60)
    node.destroy_node()
    assert recorder.returncode == 0, err
    assert f"/cam x{n}; dropped 0" in err
    with Reader(out) as reader:  # closed cleanly: summary and metadata.yaml
        (conn,) = reader.connections
        assert conn.msgcount == n
        assert conn.ext.offered_qos_profiles[0].reliability.name == "RELIABLE"
        got = [raw for _, _, raw in reader.messages()]
    assert len(got) == n
    topics = read_back(out)
    assert [stamp_ns(m.header.stamp) - 1000 * 10**9 for _, m in topics["/cam"]] == [
        i * 10**9 for i in range(n)
    ]
    last = image_array(topics["/cam"][-1][1])
    assert last.shape == (height, width, 3) and tuple(last[0, :3, 0]) == (0, n - 1, 7)


def test_a_recorder_whose_queue_overflows_says_how_many_it_dropped(tmp_path, context):
    out = tmp_path / "frozen"
    recorder = run_module("record", "--out", str(out), "--queue-depth", "1", "/cam")
    node = Node("camera", context=context)
    n = 30
    cam = node.create_publisher(Image, "/cam", QoSProfile(depth=n))  # reliable, keeps them all
    wait_until(lambda: cam.get_subscription_count(), 30, "the recorder to subscribe")
    cam.publish(frame(0, 4, 4))
    wait_until(lambda: live_messages(out / "frozen.mcap") == 1, 30, "the first message on disk")
    recorder.send_signal(signal.SIGSTOP)  # a recorder stalled (disk, CPU) while frames arrive
    try:
        for i in range(1, n):
            cam.publish(frame(i, 4, 4))
    finally:
        recorder.send_signal(signal.SIGCONT)
    # Delivered into a queue of one: most are overwritten before the recorder takes them.
    assert cam.wait_for_all_acked(Duration(seconds=60))
    # The newest frame always stays in the queue: once it is on disk, the recorder is done.
    wait_until(lambda: 1000 + n - 1 in live_stamps(out / "frozen.mcap"), 30, "the last frame")
    recorder.send_signal(signal.SIGINT)
    _, err = recorder.communicate(timeout=60)
    node.destroy_node()
    assert recorder.returncode == 0, err
    with Reader(out) as reader:
        recorded = [stamp_ns(m.header.stamp) for _, m in read_back(out)["/cam"]]
        assert reader.message_count == len(recorded)
    dropped = n - len(recorded)
    assert dropped > 0  # else the test did not overflow the queue
    assert f"/cam x{len(recorded)}; dropped {dropped} (/cam {dropped}: sent by" in err
    assert recorded[0] == 1000 * 10**9 and recorded[-1] == (1000 + n - 1) * 10**9


def test_a_duration_run_reports_its_drops_too(tmp_path, context):
    out = tmp_path / "short"
    done = run_tool("replay", "record", "--out", str(out), "--duration", "1", "/nobody")
    assert done.returncode == 0, done.stderr
    assert f"recorded {out} in " in done.stderr and "nothing; dropped 0" in done.stderr
    with Reader(out) as reader:
        assert reader.message_count == 0


# The recorder's own parts, in-process: what the processes above cannot show deterministically.


def test_the_rosbags_internals_the_bag_tools_rely_on_are_there():
    # A rosbags release that renames these must fail here, not as a traceback on a robot.
    assert bagio.missing_rosbags_internals() == []
    assert callable(repair.parse_qos)


def test_a_rosbags_without_those_internals_still_records(tmp_path, monkeypatch):
    monkeypatch.setattr(bagio, "missing_rosbags_internals", lambda: ["McapWriter.bio"])
    lines = []
    writer = bagio.open_writer(tmp_path / "plain", compress=False, recording=True, log=lines.append)
    ((line,),) = (lines,)
    assert line.startswith("record: warning: rosbags ") and "lacks McapWriter.bio" in line
    assert type(writer.storage) is McapWriter  # rosbags' own storage
    conn = writer.add_connection("/chatter", STRING, typestore=TYPESTORE)
    writer.write(conn, 1, serialize(TYPESTORE.types[STRING](data="kept")))
    writer.close_chunk_if_due()
    writer.close()
    with Reader(tmp_path / "plain") as reader:
        assert reader.message_count == 1


def test_the_recorder_fsyncs_once_due_while_idle_and_when_it_closes(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def spy(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    monkeypatch.setattr(bagio, "CHUNK_SECONDS", 0.0)  # every write closes its chunk
    monkeypatch.setattr(bagio, "FSYNC_SECONDS", 3600.0)  # not due yet
    bag = tmp_path / "rec"
    writer = bagio.open_writer(bag, compress=False, recording=True)
    conn = writer.add_connection("/chatter", STRING, typestore=TYPESTORE)
    writer.write(conn, 1, serialize(TYPESTORE.types[STRING](data="last of a burst")))
    assert live_chatter(bag / "rec.mcap") == ["last of a burst"]  # handed to the OS
    assert synced == []
    monkeypatch.setattr(bagio, "FSYNC_SECONDS", 0.0)  # due now, and no chunk will come
    writer.close_chunk_if_due()
    assert synced == ["rec.mcap"]
    writer.close_chunk_if_due()
    assert synced == ["rec.mcap"]  # nothing new to sync
    writer.close()
    assert sorted(synced[1:]) == ["metadata.yaml", "rec", "rec.mcap"]  # the folder: the names


def live_chatter(mcap: Path) -> list[str]:
    """The strings in the complete chunks of an MCAP file still being written."""
    found = []
    with mcap.open("rb") as file:
        try:
            for record in StreamReader(file).records:
                if isinstance(record, Message):
                    found.append(deserialize(record.data, STRING).data)
        except McapError:  # the end of what was written: no summary yet
            pass
    return found


def info(sequence=None, gid=None) -> dict:
    return {"publication_sequence_number": sequence, "publisher_gid": gid}


def test_drops_are_counted_without_publisher_ids_only_where_one_publisher_sent():
    alone = _SequenceGaps(lambda: 1)  # an rclpy whose MessageInfo lacks publisher_gid
    for sequence in (1, 2, 5, 6):
        alone.see(info(sequence))
    assert alone.count == 2
    shared = _SequenceGaps(lambda: 2)
    shared.see(info(1))
    assert shared.count is None  # two publishers' numbers cannot be told apart
    mute = _SequenceGaps(lambda: 1)
    mute.see(info())
    assert mute.count is None  # an rmw without sequence numbers
    ids = _SequenceGaps(lambda: 2)
    for sequence, gid in ((1, b"a"), (1, b"b"), (3, b"a"), (2, b"b")):
        ids.see(info(sequence, {"data": gid}))
    assert ids.count == 1

    stats = RecordStats(Path("bag"), messages={"/a": 4, "/b": 1}, dropped={"/a": 2, "/b": None})
    report = _record_report(stats)
    assert "/a x4, /b x1; dropped 2 (/a 2: sent by" in report
    assert report.endswith(
        "; dropped: unknown for /b (the middleware reports no publisher sequence numbers, or "
        "several publishers share the topic without their ids)"
    )
    stats.dropped = {"/b": None}
    assert "/b x1; dropped: unknown for /b (" in _record_report(stats)


def test_the_bag_stores_the_qos_the_recorder_subscribed_with(tmp_path, context):
    strict = QoSProfile(
        depth=5,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    loose = QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT)
    node = Node("recorder_under_test", context=context)
    writer = bagio.open_writer(tmp_path / "qos", compress=False, recording=True)
    stats = RecordStats(tmp_path / "qos")
    subscriber = _Subscriber(node, writer, {}, stats, 200, print)
    subscriber._subscribe("/mixed", STRING, String, [strict, loose])  # the first is the strict one
    writer.close()
    node.destroy_node()
    with Reader(tmp_path / "qos") as reader:
        ((profile,),) = [c.ext.offered_qos_profiles for c in reader.connections]
    assert profile.reliability.name == "BEST_EFFORT"  # a reliable reader would miss `loose`
    assert profile.durability.name == "VOLATILE"
    assert profile.depth == 20


def test_the_bag_is_closed_even_when_rclpy_fails_to_shut_down(tmp_path, context, monkeypatch):
    real_close = RosNode.close

    def failing_close(self):
        real_close(self)
        raise RuntimeError("rclpy failed")

    monkeypatch.setattr(RosNode, "close", failing_close)
    with pytest.raises(RuntimeError, match="rclpy failed"):
        record(tmp_path / "closed", ["/nobody"], duration=0.2, context=context, log=print)
    with Reader(tmp_path / "closed") as reader:  # summary and metadata.yaml written
        assert reader.message_count == 0


def test_recorded_chunks_carry_a_crc_so_repair_finds_damage_that_still_decodes(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(bagio, "CHUNK_SECONDS", 0.0)  # a chunk per message
    bag = tmp_path / "rec"
    writer = bagio.open_writer(bag, compress=False, recording=True)
    conn = writer.add_connection("/chatter", STRING, typestore=TYPESTORE)
    for text in ("a" * 1000, "b" * 1000):
        writer.write(conn, 1, serialize(TYPESTORE.types[STRING](data=text)))
    writer.close()
    with Reader(bag) as reader:  # rosbags checks the CRCs it reads
        assert [deserialize(raw, STRING).data[0] for _, _, raw in reader.messages()] == ["a", "b"]
    mcap = bag / "rec.mcap"
    data = mcap.read_bytes()
    at = data.index(b"b" * 1000) + 500  # the second chunk (the first declares the topic)
    mcap.write_bytes(data[:at] + b"z" + data[at + 1 :])  # still a string: decodes

    assert repair.main([str(bag), "--out", str(tmp_path / "fixed")]) == 0
    out = capsys.readouterr()
    assert "1 damaged chunk(s) skipped" in out.out and "CRC" in out.err.upper()
    with Reader(tmp_path / "fixed") as reader:
        assert [deserialize(raw, STRING).data for _, _, raw in reader.messages()] == ["a" * 1000]
