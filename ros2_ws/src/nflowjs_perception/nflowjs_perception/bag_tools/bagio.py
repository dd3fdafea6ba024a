"""Writing rosbag2 (MCAP) folders: converted datasets atomically, recordings crash-safe.

A converted bag is written under a hidden staging folder beside its destination and renamed
into place once closed: a reader sees either no bag or a complete one. The staging folder holds
the bag under its final name because rosbags names the .mcap file after the bag folder.

A recording cannot be redone, so it is written where the user asked from the start, in chunks
handed to the operating system as they close (``RecordingWriter``): a killed recorder leaves an
MCAP file without its summary whose complete chunks ``repair_bag`` reads back.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer, storage_mcap
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.rosbag2.storage_mcap import McapWriter

# rosbag2 metadata version 9 is what Jazzy and Kilted write (Iron and older read up to 8).
BAG_VERSION = 9
_DEFAULT = QosTime(0, 0)  # rmw's "unspecified": the middleware default (infinite)


def qos(reliable: bool = True, transient_local: bool = False, depth: int = 10) -> Qos:
    """An offered QoS profile for the bag's metadata (what ``ros2 bag play`` will offer)."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=_DEFAULT,
        lifespan=_DEFAULT,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_DEFAULT,
        avoid_ros_namespace_conventions=False,
    )


def open_writer(
    path: Path,
    compress: bool,
    recording: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Writer:
    """An open MCAP rosbag2 writer; ``compress``: zstd chunk compression (MCAP-internal, which
    ``ros2 bag play`` and the mcap readers decode transparently); ``recording``: a
    ``RecordingWriter``, its chunks on disk as they close."""
    if not recording:
        writer = Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    else:
        missing = missing_rosbags_internals()
        if missing:  # record all the same: losing the recording would be worse than the warning
            log(
                f"record: warning: rosbags {version('rosbags')} lacks {', '.join(missing)}: "
                "recording with its plain writer, whose chunks are not flushed as they close "
                "(a killed recorder loses more); install rosbags>=0.11,<0.12"
            )
        writer = RecordingWriter(path, flushing=not missing)
    if compress:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    return writer


# A killed recorder loses the chunk it had not closed yet: at most CHUNK_SECONDS of messages, or
# what rosbags' chunk holds before it passes 1 MiB (the message that takes it past 1 MiB, however
# large, is written into it and then closes it).
CHUNK_SECONDS = 1.0
# fsync (what survives a power cut, not only a killed process) at most this often: a sync per
# chunk of a 60 MB/s camera stream would stall the recorder.
FSYNC_SECONDS = 1.0


def missing_rosbags_internals() -> list[str]:
    """The private parts of rosbags that _FlushingMcapWriter relies on and this rosbags lacks.

    pyproject pins rosbags 0.11, but a ROS install may bring another; a test pins these so a
    change shows up in CI instead of as a traceback on a robot.
    """
    missing = [
        name
        for name, present in (
            ("Writer.STORAGE_PLUGINS", isinstance(getattr(Writer, "STORAGE_PLUGINS", None), dict)),
            ("McapWriter.close_chunk", callable(getattr(McapWriter, "close_chunk", None))),
            (
                "PendingChunk.msgs",
                "msgs"
                in getattr(getattr(storage_mcap, "PendingChunk", None), "__annotations__", {}),
            ),
        )
        if not present
    ]
    # bio (the open file) and chunk (the PendingChunk) are set in McapWriter.__init__
    init_names = McapWriter.__init__.__code__.co_names
    return missing + [f"McapWriter.{a}" for a in ("bio", "chunk") if a not in init_names]


class _FlushingMcapWriter(McapWriter):
    """rosbags' MCAP storage, closing a chunk after CHUNK_SECONDS too, flushing each one, with
    its CRC.

    rosbags (0.11, pinned in pyproject) closes a chunk at 1 MiB and buffers the file; these few
    lines over its ``close_chunk`` add the time bound and the flush, which the ``mcap`` writer
    offers no better (its chunk finalizing is private as well, and it writes no metadata.yaml).
    """

    def __init__(self, path: Path, compression: CompressionMode) -> None:
        super().__init__(path, compression)
        self.chunk_opened = time.monotonic()
        self.last_sync = time.monotonic()
        self.unsynced = False  # flushed to the OS but not fsync'ed yet

    def write(self, connection, timestamp: int, data: bytes | memoryview) -> None:
        if not self.chunk.msgs:
            self.chunk_opened = time.monotonic()
        super().write(connection, timestamp, data)
        if not self.chunk.msgs:  # rosbags closed it at 1 MiB
            self._hand_over()
        else:
            self.close_chunk_if_due()

    def close_chunk(self) -> None:
        """rosbags' close_chunk, with the CRC of the chunk's data, which it leaves 0 (unchecked):
        without it, damage inside an uncompressed chunk that still decodes (pixels) would pass
        repair_bag unnoticed. Patched in at the MCAP spec's place: op, length, start, end, size."""
        with self.chunk.bio.getbuffer() as data:
            crc = zlib.crc32(data)
        start = self.bio.tell()
        super().close_chunk()
        end = self.bio.tell()
        self.bio.seek(start + 1 + 8 + 8 + 8 + 8)
        self.bio.write(struct.pack("<I", crc))
        self.bio.seek(end)

    def close_chunk_if_due(self) -> None:
        """Close the pending chunk once it is CHUNK_SECONDS old, and fsync what was handed over
        once FSYNC_SECONDS passed since the last sync (call this while idle too: after a burst
        no new chunk may come to trigger the sync)."""
        if self.chunk.msgs and time.monotonic() - self.chunk_opened >= CHUNK_SECONDS:
            self.close_chunk()
            self._hand_over()
        elif self.unsynced and time.monotonic() - self.last_sync >= FSYNC_SECONDS:
            self._sync()

    def _hand_over(self) -> None:
        self.bio.flush()
        self.unsynced = True
        if time.monotonic() - self.last_sync >= FSYNC_SECONDS:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self.bio.fileno())
        self.last_sync, self.unsynced = time.monotonic(), False


class RecordingWriter(Writer):
    """A rosbags MCAP writer whose chunks reach the disk as they close (see CHUNK_SECONDS), and
    whose files are fsync'ed when it closes; ``flushing=False``: rosbags' own MCAP storage (a
    rosbags whose internals changed, see missing_rosbags_internals)."""

    def __init__(self, path: Path, flushing: bool = True) -> None:
        super().__init__(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        if flushing:
            self.STORAGE_PLUGINS = {
                **Writer.STORAGE_PLUGINS,
                StoragePlugin.MCAP: _FlushingMcapWriter,
            }

    def close_chunk_if_due(self) -> None:
        if isinstance(self.storage, _FlushingMcapWriter):
            self.storage.close_chunk_if_due()

    def close(self) -> None:
        super().close()
        # A closed recording must survive a power cut too: its files, then their names.
        for path in [*self.path.iterdir(), self.path]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def make_parent(out: Path) -> None:
    """Create the folders above ``out``, saying so when a file stands where one must go."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(
                    f"cannot create {out}: {parent} is a file, not a folder: choose another --out"
                )
            break
    out.parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def staged_bag(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a path to write a bag at; on success it is renamed to ``out``, on an exception
    deleted."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: choose another output folder or pass --overwrite")
    make_parent(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    staged = staging / out.name
    try:
        yield staged
        _move_into_place(staged, out, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staged: Path, out: Path, staging: Path) -> None:
    old = staging / f"{out.name}.old"
    if out.exists():  # --overwrite: set the old bag aside first, restore it if the rename fails
        out.rename(old)
    try:
        staged.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)
        raise
