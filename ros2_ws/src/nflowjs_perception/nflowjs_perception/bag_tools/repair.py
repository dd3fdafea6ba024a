"""Rebuild a damaged bag from its complete records (the role of ``ros2 bag reindex``).

    repair_bag BAG [--out REPAIRED]

A recorder killed by SIGKILL, a full disk or a copy taken while the bag was written leaves an
MCAP file without its summary (and a bag folder without metadata.yaml, or with a garbled one):
rosbags, ``ros2 bag play`` and these tools refuse it. ``repair_bag`` reads the file as a stream
with the ``mcap`` library (record by record from the start, never trusting the missing end),
keeps every complete chunk (a chunk whose data is damaged is skipped, those after it kept), and
writes a new MCAP with summary and metadata.yaml. In place by default: the damaged files stay
in the folder as ``*.damaged`` (nothing written is deleted); with ``--out`` BAG is left as it is.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.rosbag2 import metadata as rosbag2_metadata
from rosbags.rosbag2.errors import WriterError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.msg import get_types_from_msg

from nflowjs_perception.bag_tools.bagio import open_writer, staged_bag
from nflowjs_perception.bag_tools.bagread import BagError, messages, open_bag
from nflowjs_perception.bag_tools.messages import TYPESTORE
from nflowjs_perception.bag_tools.ros_node import log_stderr

# private to rosbags (pinned by a test): without it the repaired bag keeps no QoS profiles
parse_qos = getattr(rosbag2_metadata, "parse_qos", None)

try:  # pip's mcap: in pyproject and the runtime image, but no rosdep key lists it for a ROS install
    from mcap.exceptions import McapError
    from mcap.records import Channel, Chunk, DataEnd, Message, Schema
    from mcap.stream_reader import StreamReader, breakup_chunk
except ImportError:
    StreamReader = None


@dataclass
class RepairSummary:
    path: Path
    messages: dict[str, int] = field(default_factory=dict)
    damaged_chunks: int = 0
    stopped: list[str] = field(default_factory=list)  # per source file: why reading ended early
    kept: list[Path] = field(default_factory=list)  # the damaged originals, renamed
    repaired: bool = True


def _natural_key(path: Path) -> list:
    """bag_2.mcap before bag_10.mcap (rosbag2's split files)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class _Rewriter:
    """Feeds the records of damaged MCAP files into a rosbags writer.

    The writer is opened at the first chunk, compressed as that chunk was (the bag's choice);
    a topic's connection is added at its first message, so that channels declared before any
    chunk (as the C++ writer does) wait for that choice.
    """

    def __init__(self, open_writer: Callable[[bool], object], log: Callable[[str], None]):
        self.open_writer, self.writer, self.log = open_writer, None, log
        self.typestore = TYPESTORE
        self.declared: dict[tuple, tuple] = {}  # (topic, type, qos text) -> (channel, schema)
        self.connections: dict[tuple, object | None] = {}  # same key -> connection, or None
        self.summary_messages: dict[str, int] = {}
        self.damaged_chunks = 0

    def copy_file(self, mcap: Path) -> str | None:
        """Copy the complete records of ``mcap``; return why reading stopped early, or None.

        Only the reading is guarded: an error of the writer (disk full) is no damage of the
        source, and propagates so that a failed repair never replaces the original.
        """
        schemas: dict[int, Schema] = {}
        channels: dict[int, tuple] = {}
        with mcap.open("rb") as file:
            size = mcap.stat().st_size
            records = iter(StreamReader(file, emit_chunks=True, record_size_limit=size).records)
            complete = 0  # where the last complete record ends
            while True:
                try:
                    record = next(records, None)
                    complete = file.tell()
                    # the summary after DataEnd repeats schemas and channels
                    if record is None or isinstance(record, DataEnd):
                        return None
                    inner = self._chunk_records(record, mcap.name)
                except McapError as error:
                    why = str(error) or (
                        "no summary after them" if complete == size else "cut off inside a record"
                    )
                    return f"{mcap.name}: complete records end at byte {complete} of {size} ({why})"
                except Exception as error:  # a garbled length or string: stop here
                    return f"{mcap.name}: unreadable after byte {complete} of {size} ({error})"
                if self.writer is None and isinstance(record, Chunk):  # outside the try above
                    self.writer = self.open_writer(record.compression != "")
                self._copy_records(inner, schemas, channels, mcap.name)

    def _chunk_records(self, record, name: str) -> list:
        if not isinstance(record, Chunk):
            return [record]
        try:
            return breakup_chunk(record, validate_crc=True)
        except Exception as error:  # zstd/lz4/CRC: skip the chunk
            self.damaged_chunks += 1
            self.log(f"repair: {name}: skipping a damaged chunk ({error})")
            return []

    def _copy_records(self, records: list, schemas, channels, name: str) -> None:
        """Copy a chunk's records, or none of its messages when one of them does not decode:
        rosbags writes no CRC for uncompressed chunks, so decoding is the check of their data."""
        writes = []
        for record in records:
            if isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Channel):
                key = self._declare(record, schemas.get(record.schema_id))
                channels[record.id] = key
            elif isinstance(record, Message) and record.channel_id in channels:
                connection = self._connection(channels[record.channel_id])
                if connection is not None:
                    writes.append((connection, record))
        for connection, record in writes:
            if connection.ext.serialization_format != "cdr":
                continue
            try:
                self.typestore.deserialize_cdr(record.data, connection.msgtype)
            except Exception as error:  # rosbags raises several kinds for bad data
                self.damaged_chunks += 1
                self.log(
                    f"repair: {name}: skipping a damaged chunk (a {connection.topic} message "
                    f"does not decode as {connection.msgtype}: {type(error).__name__}: {error})"
                )
                return
        for connection, record in writes:
            self.writer.write(connection, record.log_time, record.data)
            topic = connection.topic
            self.summary_messages[topic] = self.summary_messages.get(topic, 0) + 1

    def _declare(self, channel: Channel, schema: Schema | None) -> tuple:
        key = (
            channel.topic,
            schema.name if schema else None,
            channel.metadata.get("offered_qos_profiles", ""),
        )
        self.declared.setdefault(key, (channel, schema))
        return key

    def finish(self) -> None:
        """Add the topics that had no message, so the repaired bag still lists them."""
        for key in self.declared:
            self._connection(key)

    def _connection(self, key: tuple):
        if key in self.connections:
            return self.connections[key]
        channel, schema = self.declared[key]
        self.connections[key] = None
        if schema is None:
            self.log(f"repair: skipping {channel.topic}: its schema record is missing")
            return None
        qos_text = key[2]
        try:
            offered = parse_qos(qos_text) if qos_text and parse_qos else []
        except Exception:  # a garbled profile must not cost the messages
            offered = []
        msgdef = schema.data.decode()
        try:
            rihs01 = self._type_hash(schema.name, msgdef)
        except Exception as error:  # rosbags' parser errors vary
            self.log(f"repair: skipping {channel.topic}: cannot parse {schema.name} ({error})")
            return None
        if self.writer is None:  # no chunk before: rosbags' default for a recording
            self.writer = self.open_writer(False)
        self.connections[key] = self.writer.add_connection(
            channel.topic,
            schema.name,
            msgdef=msgdef,
            rihs01=rihs01,
            serialization_format=channel.message_encoding,
            offered_qos_profiles=offered,
        )
        self.summary_messages.setdefault(channel.topic, 0)
        return self.connections[key]

    def _type_hash(self, msgtype: str, msgdef: str) -> str:
        if msgtype not in self.typestore.fielddefs:  # a type of another package: from the bag
            if self.typestore is TYPESTORE:
                self.typestore = get_typestore(Stores.ROS2_JAZZY)
            self.typestore.register(get_types_from_msg(msgdef, msgtype))
        return self.typestore.hash_rihs01(msgtype)


def _readable(bag: Path) -> int | None:
    """The message count of a bag that reads end to end, else None."""
    try:
        reader = open_bag(bag)
    except BagError:
        return None
    try:
        return sum(1 for _ in messages(reader, bag, reader.connections))
    except BagError:
        return None
    finally:
        reader.close()


def _old_custom_data(bag: Path) -> dict[str, str]:
    """custom_data of a metadata.yaml still readable enough (the converters put dataset info
    there); {} otherwise."""
    try:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())
        data = info["rosbag2_bagfile_information"].get("custom_data") or {}
        return {str(k): str(v) for k, v in data.items()}
    except Exception:  # garbage is what this tool is for
        return {}


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to ``path.damaged`` (or .damaged.1, ...) and return the new name."""
    kept = path.with_name(f"{path.name}.damaged")
    n = 0
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.damaged.{n}")
    path.rename(kept)
    return kept


def repair(
    bag: str | Path, out: str | Path | None = None, log: Callable[[str], None] = log_stderr
) -> RepairSummary:
    """Rebuild ``bag`` (in place, or into ``out``) from the complete records of its MCAP files."""
    bag = Path(bag)
    if StreamReader is None:
        raise BagError("repair_bag needs the Python package mcap: pip install 'mcap>=1.2,<2'")
    if not bag.is_dir():
        raise BagError(
            f"{bag} is not a bag folder{' (it does not exist)' if not bag.exists() else ''}: "
            "give the folder the recorder wrote"
        )
    sources = sorted(bag.glob("*.mcap"), key=_natural_key)
    if not sources:
        db3 = " (it holds a sqlite3 bag: use `ros2 bag reindex`)" if any(bag.glob("*.db3")) else ""
        raise BagError(f"{bag} has no .mcap file to repair{db3}")
    if out is None:
        count = _readable(bag)
        if count is not None:
            log(f"repair: {bag} reads end to end ({count} messages): nothing to repair")
            return RepairSummary(bag, repaired=False)
    if out is not None and Path(out).exists():
        raise BagError(f"{out} exists: give --out a folder that does not exist yet")
    target = Path(out) if out is not None else bag
    summary = RepairSummary(target)
    custom_data = _old_custom_data(bag)
    with _staging(bag, out) as staged:
        rewriter = _Rewriter(lambda compress: open_writer(staged, compress), log)
        try:
            for source in sources:
                stopped = rewriter.copy_file(source)
                if stopped:
                    summary.stopped.append(stopped)
            rewriter.finish()
            if sum(rewriter.summary_messages.values()) == 0:  # topics alone are no recovery
                raise BagError(
                    f"{bag}: no complete message in {', '.join(s.name for s in sources)}"
                    f"{' (' + '; '.join(summary.stopped) + ')' if summary.stopped else ''}: "
                    "nothing to recover"
                )
            for key, value in custom_data.items():
                rewriter.writer.set_custom_data(key, value)
            rewriter.writer.close()
        except BaseException:  # the staged files are deleted; the bag stays as it was
            if rewriter.writer is not None:
                rewriter.writer.abort()
            raise
        summary.messages = rewriter.summary_messages
        summary.damaged_chunks = rewriter.damaged_chunks
        if out is None:  # swap in: originals set aside first, then the rebuilt files moved in
            for old in [*sources, bag / "metadata.yaml"]:
                if old.exists():
                    summary.kept.append(_set_aside(old))
            for new in staged.iterdir():
                new.rename(bag / new.name)
    return summary


class _staging:
    """With ``out``: staged_bag (renamed to out when complete). In place: a hidden folder
    beside ``bag`` whose files repair() moves into ``bag`` itself."""

    def __init__(self, bag: Path, out):
        self.bag, self.out = bag, out

    def __enter__(self) -> Path:
        if self.out is not None:
            self.context = staged_bag(self.out)
            return self.context.__enter__()
        bag = self.bag.resolve()  # `repair_bag .`: the folder's own name, and its parent
        self.folder = Path(tempfile.mkdtemp(prefix=f".{bag.name}.", dir=bag.parent))
        return self.folder / bag.name

    def __exit__(self, *exc) -> bool:
        if self.out is not None:
            return bool(self.context.__exit__(*exc))
        shutil.rmtree(self.folder, ignore_errors=True)
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="repair_bag",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bag", type=Path, help="the damaged bag folder")
    parser.add_argument(
        "--out", type=Path, help="write the repaired bag here and leave BAG untouched"
    )
    args = parser.parse_args(argv)
    try:
        summary = repair(args.bag, args.out)
    except BagError as error:
        log_stderr(f"repair_bag: error: {error}")
        return 2
    except (OSError, WriterError) as error:  # writing failed (disk full, permissions)
        log_stderr(
            f"repair_bag: error: {args.bag} was not repaired ({type(error).__name__}: {error}); "
            "it is left as it was: free disk space or fix permissions (or give --out on "
            "another disk) and run repair_bag again"
        )
        return 2
    if not summary.repaired:
        return 0
    counts = ", ".join(f"{t} x{n}" for t, n in summary.messages.items())
    total = sum(summary.messages.values())
    lines = [f"repaired {summary.path}: {total} messages recovered ({counts})"]
    lines += [f"  read stopped: {why}; what followed is lost" for why in summary.stopped]
    if summary.damaged_chunks:
        lines.append(f"  {summary.damaged_chunks} damaged chunk(s) skipped")
    if summary.kept:
        lines.append(f"  the damaged originals are kept: {', '.join(p.name for p in summary.kept)}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
