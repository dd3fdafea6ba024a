"""repair_bag on MCAP files cut at arbitrary byte offsets and with a damaged chunk, and the bag
tools' one-line errors for missing, truncated, corrupt and foreign bags.

play_bag and record_bag run as processes (they install signal handlers); the others in-process.
"""

import errno
import os
import random
import shutil
from pathlib import Path

import pytest
from mcap.records import Chunk, DataEnd
from mcap.stream_reader import StreamReader, breakup_chunk
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import WriterError
from ruamel.yaml import YAML

from conftest import write_fake_camvid
from nflowjs_perception.bag_tools import convert, evaluate, frames, repair
from nflowjs_perception.bag_tools.bagio import open_writer
from nflowjs_perception.bag_tools.messages import TYPESTORE, serialize
from ros_support import run_tool

STRING = "std_msgs/msg/String"
N_MESSAGES = 24


def string_bag(out: Path, compress: bool) -> list[bytes]:
    """24 messages of 300 kB: rosbags closes a chunk past 1 MiB, so 6 chunks of 4."""
    writer = open_writer(out, compress)
    conn = writer.add_connection("/chatter", STRING, typestore=TYPESTORE)
    sent = []
    for i in range(N_MESSAGES):
        data = serialize(TYPESTORE.types[STRING](data=f"{i:03d}" + "x" * 300_000))
        writer.write(conn, 10**18 + i * 10**8, data)
        sent.append(data)
    writer.set_custom_data("nflowjs.dataset", "strings")
    writer.close()
    return sent


def chunk_ends(mcap: Path) -> list[tuple[int, int]]:
    """(byte offset where the chunk record ends, messages in it) for each chunk of the file."""
    ends = []
    with mcap.open("rb") as file:
        for record in StreamReader(file, emit_chunks=True).records:
            if isinstance(record, DataEnd):
                break
            if isinstance(record, Chunk):
                ends.append(
                    (file.tell(), sum(type(r).__name__ == "Message" for r in breakup_chunk(record)))
                )
    return ends


def repaired_messages(bag: Path) -> list[bytes]:
    with Reader(bag) as reader:
        return [bytes(raw) for _, _, raw in reader.messages()]


@pytest.fixture(scope="module", params=[True, False], ids=["zstd", "uncompressed"])
def original(tmp_path_factory, request):
    """A closed bag, zstd-compressed (chunks with a CRC) or not (record_bag's default: rosbags
    writes no CRC for them)."""
    folder = tmp_path_factory.mktemp("original")
    bag = folder / "strings"
    sent = string_bag(bag, compress=request.param)
    return bag, sent, chunk_ends(bag / "strings.mcap"), request.param


def test_the_test_bag_has_several_chunks(original):
    _, _, ends, _ = original
    assert len(ends) == 6 and sum(n for _, n in ends) == N_MESSAGES


def cut_offsets(ends: list[tuple[int, int]], size: int) -> list[int]:
    first, third = ends[0][0], ends[2][0]
    edges = [0, 8, 30, first - 1, first, first + 1, (first + ends[1][0]) // 2, third]
    edges += [ends[-1][0], size - 1]  # after the last chunk: only the summary is lost
    rng = random.Random(16)
    return edges + sorted(rng.randrange(9, size) for _ in range(6))


def test_repair_recovers_every_complete_chunk_of_a_file_cut_anywhere(original, tmp_path, capsys):
    bag, sent, ends, _ = original
    data = (bag / "strings.mcap").read_bytes()
    for offset in cut_offsets(ends, len(data)):
        cut = tmp_path / f"cut{offset}"
        cut.mkdir()
        (cut / "strings.mcap").write_bytes(data[:offset])
        if offset % 2:  # copied while being written: maybe with the writer's last metadata.yaml
            shutil.copy(bag / "metadata.yaml", cut / "metadata.yaml")
        expected = sum(n for end, n in ends if end <= offset)
        code = repair.main([str(cut)])
        out, err = capsys.readouterr()
        if expected == 0:
            assert code == 2, (offset, out, err)
            (line,) = err.strip().splitlines()
            assert line.startswith(f"repair_bag: error: {cut}: no complete message in strings.mcap")
            assert (cut / "strings.mcap").read_bytes() == data[:offset]  # untouched
            continue
        assert code == 0, (offset, err)
        assert repaired_messages(cut) == sent[:expected], offset
        assert f"{expected} messages recovered" in out
        kept = cut / "strings.mcap.damaged"
        assert kept.read_bytes() == data[:offset]  # nothing written is lost
        with Reader(cut) as reader:
            assert reader.message_count == expected
        info = YAML(typ="safe").load((cut / "metadata.yaml").read_text())
        custom = info["rosbag2_bagfile_information"]["custom_data"] or {}
        assert custom.get("nflowjs.dataset") == ("strings" if offset % 2 else None)


def test_repair_skips_a_damaged_chunk_and_keeps_those_after_it(original, tmp_path, capsys):
    bag, sent, ends, compressed = original
    damaged = tmp_path / "damaged"
    shutil.copytree(bag, damaged)
    mcap = damaged / "strings.mcap"
    data = bytearray(mcap.read_bytes())
    middle = (ends[1][0] + ends[2][0]) // 2  # inside the third chunk's (zstd) data
    data[middle : middle + 64] = b"\xff" * 64
    mcap.write_bytes(bytes(data))

    if compressed:  # zstd and the CRC fail; readers stop at the damaged chunk
        # The summary is intact, so the bag opens; the read stops at the damaged chunk.
        code = evaluate.main([str(damaged), "--heatmap-topic", "/chatter", "--quiet"])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and f"{damaged}: /chatter (--heatmap-topic) is {STRING}" in line
        played = run_tool("replay", "play", str(damaged), "--as-fast-as-possible")
        assert played.returncode == 2
        (line,) = played.stderr.strip().splitlines()
        assert f"play: error: {damaged}: a damaged record" in line and "repair_bag" in line

    assert repair.main([str(damaged), "--out", str(tmp_path / "fixed")]) == 0
    out = capsys.readouterr()
    assert "1 damaged chunk(s) skipped" in out.out
    # uncompressed, the damage is found by decoding the messages (no CRC to check)
    assert compressed or f"a /chatter message does not decode as {STRING}" in out.err
    assert repaired_messages(tmp_path / "fixed") == sent[:8] + sent[12:]
    assert mcap.read_bytes() == bytes(data)  # --out leaves the bag as it was


def cut_copy(original, tmp_path: Path, end_of_chunk: int) -> tuple[Path, bytes]:
    """The original's MCAP cut after its ``end_of_chunk``-th chunk, in a folder of its own."""
    bag, _, ends, _ = original
    data = (bag / "strings.mcap").read_bytes()[: ends[end_of_chunk][0]]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "strings.mcap").write_bytes(data)
    return cut, data


def test_repair_of_the_current_folder(original, tmp_path, monkeypatch, capsys):
    cut, data = cut_copy(original, tmp_path, 1)
    monkeypatch.chdir(cut)
    assert repair.main(["."]) == 0, capsys.readouterr().err
    assert "8 messages recovered" in capsys.readouterr().out
    assert repaired_messages(cut) == original[1][:8]
    assert (cut / "strings.mcap.damaged").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut"]  # no staging folder left


def test_a_write_error_is_reported_and_leaves_the_bag_as_it_was(
    original, tmp_path, monkeypatch, capsys
):
    cut, data = cut_copy(original, tmp_path, 3)
    real_write, written = Writer.write, []

    def disk_full_after_five(self, connection, timestamp, raw):
        if len(written) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(timestamp)
        real_write(self, connection, timestamp, raw)

    monkeypatch.setattr(Writer, "write", disk_full_after_five)
    assert repair.main([str(cut)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"repair_bag: error: {cut} was not repaired (OSError: ")
    assert "No space left on device" in line and "left as it was" in line
    assert sorted(p.name for p in cut.iterdir()) == ["strings.mcap"]  # nothing swapped in
    assert (cut / "strings.mcap").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut"]  # no staging folder left


def test_a_writer_that_cannot_open_is_not_called_read_damage(
    original, tmp_path, monkeypatch, capsys
):
    cut, data = cut_copy(original, tmp_path, 3)

    def refuse(self):
        raise WriterError("cannot create the storage")

    monkeypatch.setattr(Writer, "open", refuse)
    assert repair.main([str(cut)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{cut} was not repaired (WriterError: cannot create the storage)" in line
    assert sorted(p.name for p in cut.iterdir()) == ["strings.mcap"]
    assert (cut / "strings.mcap").read_bytes() == data


def test_a_bag_of_topics_without_messages_is_not_repaired(tmp_path, capsys):
    bag = tmp_path / "quiet"
    writer = open_writer(bag, compress=False)
    writer.add_connection("/chatter", STRING, typestore=TYPESTORE)
    writer.close()
    ((end, messages),) = chunk_ends(bag / "quiet.mcap")  # the chunk declaring the topic
    assert messages == 0
    data = (bag / "quiet.mcap").read_bytes()[:end]
    (bag / "metadata.yaml").unlink()
    (bag / "quiet.mcap").write_bytes(data)
    assert repair.main([str(bag)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"repair_bag: error: {bag}: no complete message in quiet.mcap")
    assert sorted(p.name for p in bag.iterdir()) == ["quiet.mcap"]


def bad_bag(tmp_path: Path, case: str, good: Path) -> Path:
    """A bag folder (or path) broken the way ``case`` says."""
    bag = tmp_path / case
    if case == "missing":
        return bag
    if case == "ros1":
        bag = tmp_path / "drive.bag"
        bag.write_bytes(b"#ROSBAG V2.0\n")
        return bag
    if case == "empty-folder":
        bag.mkdir()
        return bag
    shutil.copytree(good, bag)
    mcap = next(bag.glob("*.mcap"))
    metadata = bag / "metadata.yaml"
    if case == "mcap-file":
        return mcap
    if case == "garbage-metadata":
        metadata.write_text("just a string")
    elif case == "unknown-storage":
        metadata.write_text(
            metadata.read_text().replace(
                "storage_identifier: mcap", "storage_identifier: rosbag_v3"
            )
        )
    elif case == "truncated":
        mcap.write_bytes(mcap.read_bytes()[:-100])
    elif case == "not-mcap":
        mcap.write_bytes(b"PK\x03\x04 a zip, not an MCAP file" * 10)
    elif case == "data-file-missing":
        mcap.unlink()
    elif case == "no-metadata":
        metadata.unlink()
    return bag


# case -> what the line must say (the problem and the fix)
BAD_BAGS = {
    "missing": ["does not exist"],
    "ros1": ["is a ROS 1 bag", "rosbags-convert"],
    "empty-folder": ["not a rosbag2 folder", "record_bag"],
    "mcap-file": ["is a file of a bag: give its folder"],
    "garbage-metadata": ["metadata.yaml is not valid rosbag2 metadata", "repair_bag"],
    "unknown-storage": ["Storage plugin 'rosbag_v3' not supported", "ros2 bag convert"],
    "truncated": ["ends without a summary", "repair_bag"],
    "not-mcap": ["not an MCAP file", "copy the bag again"],
    "data-file-missing": ["missing", "copy the whole bag folder"],
    "no-metadata": ["but no metadata.yaml", "repair_bag"],
}


@pytest.fixture(scope="module")
def camvid_bag(tmp_path_factory):
    folder = tmp_path_factory.mktemp("camvid")
    root = write_fake_camvid(folder / "camvid", frames=3, size=(36, 48))
    bag = folder / "bag"
    convert.write_bag(frames.camvid_frames(root), bag, progress=False)
    return bag


def assert_one_line(stderr: str, tool: str, path: Path, says: list[str]) -> None:
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"{tool}: error: ") and str(path) in line, line
    for text in says:
        assert text in line, line


@pytest.mark.parametrize("case", sorted(BAD_BAGS))
def test_play_and_evaluate_explain_a_bad_bag_in_one_line(case, camvid_bag, tmp_path, capsys):
    bag = bad_bag(tmp_path, case, camvid_bag)
    played = run_tool("replay", "play", str(bag), "--as-fast-as-possible")
    assert played.returncode == 2
    assert_one_line(played.stderr, "play", bag, BAD_BAGS[case])
    assert evaluate.main([str(bag), "--quiet", "--out", str(tmp_path / "m.json")]) == 2
    assert_one_line(capsys.readouterr().err, "evaluate_bag", bag, BAD_BAGS[case])
    assert not (tmp_path / "m.json").exists()


def test_missing_topics_and_wrong_types_are_named(camvid_bag, tmp_path, capsys):
    played = run_tool("replay", "play", str(camvid_bag), "--topics", "/lidar/points")
    assert played.returncode == 2
    assert_one_line(
        played.stderr, "play", camvid_bag, ["has no /lidar/points (--topics)", "/camera/image_raw"]
    )
    code = evaluate.main([str(camvid_bag), "--heatmap-topic", "/camera/camera_info", "--quiet"])
    assert code == 2
    assert_one_line(
        capsys.readouterr().err,
        "evaluate_bag",
        camvid_bag,
        ["/camera/camera_info (--heatmap-topic) is sensor_msgs/msg/CameraInfo, not sensor_msgs/"],
    )


@pytest.mark.parametrize("case", ["missing", "mcap-file", "empty-folder", "not-mcap", "sqlite"])
def test_repair_explains_what_it_cannot_repair(case, camvid_bag, tmp_path, capsys):
    if case == "sqlite":
        bag = tmp_path / "sqlite"
        bag.mkdir()
        (bag / "sqlite_0.db3").write_bytes(b"SQLite format 3\x00")
        says = ["ros2 bag reindex"]
    else:
        bag = bad_bag(tmp_path, case, camvid_bag)
        says = {
            "missing": ["does not exist"],
            "mcap-file": ["is not a bag folder"],
            "empty-folder": ["has no .mcap file"],
            "not-mcap": ["no complete message", "invalid magic"],
        }[case]
    before = sorted(p.name for p in bag.iterdir()) if bag.is_dir() else None
    assert repair.main([str(bag)]) == 2
    assert_one_line(capsys.readouterr().err, "repair_bag", bag, says)
    assert (sorted(p.name for p in bag.iterdir()) if bag.is_dir() else None) == before


def test_record_and_convert_refuse_an_unusable_out_in_one_line(camvid_bag, tmp_path, capsys):
    recorded = run_tool("replay", "record", "--out", str(camvid_bag), "/a")
    assert recorded.returncode == 2
    assert_one_line(recorded.stderr, "record", camvid_bag, ["exists", "--overwrite"])
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    recorded = run_tool("replay", "record", "--out", str(a_file / "bag"), "/a")
    assert recorded.returncode == 2
    assert_one_line(recorded.stderr, "record", a_file, ["is a file, not a folder"])
    recorded = run_tool(
        "replay", "record", "--out", str(tmp_path / "new"), "--type", "/a=foo/msg/Bar", "/a"
    )
    assert recorded.returncode == 2
    assert_one_line(recorded.stderr, "record", Path("/a"), ["unknown message type"])
    assert not (tmp_path / "new").exists()

    root = tmp_path / "camvid"
    assert (
        convert.main(["camvid", "--root", str(root), "--out", str(tmp_path / "c"), "--quiet"]) == 2
    )
    assert_one_line(capsys.readouterr().err, "convert_to_bag", root, [])
    write_fake_camvid(root, frames=1, size=(36, 48))
    assert convert.main(["camvid", "--root", str(root), "--out", str(camvid_bag), "--quiet"]) == 2
    assert_one_line(capsys.readouterr().err, "convert_to_bag", camvid_bag, ["--overwrite"])
    with Reader(camvid_bag) as reader:  # the existing bag is untouched
        assert reader.message_count > 0


def test_a_damaged_sqlite3_bag_is_not_sent_to_repair_bag(tmp_path, capsys):
    bag = tmp_path / "sqlite"
    writer = Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    conn = writer.add_connection("/chatter", STRING, typestore=TYPESTORE)
    writer.write(conn, 1, serialize(TYPESTORE.types[STRING](data="hello")))
    writer.close()
    (bag / "sqlite.db3").write_bytes(b"not a database, not any more" * 10)
    assert evaluate.main([str(bag), "--quiet"]) == 2
    line = capsys.readouterr().err
    assert_one_line(line, "evaluate_bag", bag, ["ros2 bag reindex", "sqlite3 bag"])
    assert "run `repair_bag" not in line  # it would refuse this bag
