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
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
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


def open_writer(path: Path, compress: bool) -> Writer:
    """An open MCAP rosbag2 writer; ``compress``: zstd chunk compression (MCAP-internal, which
    ``ros2 bag play`` and the mcap readers decode transparently)."""
    writer = Writer(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    if compress:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    return writer


# A killed recorder loses the chunk it had not closed yet: at most CHUNK_SECONDS of messages, or
# rosbags' 1 MiB chunk (a larger message is a chunk of its own, closed as soon as it is written).
CHUNK_SECONDS = 1.0
# fsync (what survives a power cut, not only a killed process) at most this often: a sync per
# chunk of a 60 MB/s camera stream would stall the recorder.
FSYNC_SECONDS = 1.0


class _FlushingMcapWriter(McapWriter):
    """rosbags' MCAP storage, closing a chunk after CHUNK_SECONDS too, and flushing each one.

    rosbags (0.11, pinned in pyproject) closes a chunk at 1 MiB and buffers the file; these few
    lines over its ``close_chunk`` add the time bound and the flush, which the ``mcap`` writer
    offers no better (its chunk finalizing is private as well, and it writes no metadata.yaml).
    """

    def __init__(self, path: Path, compression: CompressionMode) -> None:
        super().__init__(path, compression)
        self.chunk_opened = time.monotonic()
        self.last_sync = time.monotonic()

    def write(self, connection, timestamp: int, data: bytes | memoryview) -> None:
        if not self.chunk.msgs:
            self.chunk_opened = time.monotonic()
        super().write(connection, timestamp, data)
        if not self.chunk.msgs:  # rosbags closed it at 1 MiB
            self._hand_over()
        else:
            self.close_chunk_if_due()

    def close_chunk_if_due(self) -> None:
        """Close the pending chunk once it is CHUNK_SECONDS old (call this while idle too)."""
        if self.chunk.msgs and time.monotonic() - self.chunk_opened >= CHUNK_SECONDS:
            self.close_chunk()
            self._hand_over()

    def _hand_over(self) -> None:
        self.bio.flush()
        now = time.monotonic()
        if now - self.last_sync >= FSYNC_SECONDS:
            os.fsync(self.bio.fileno())
            self.last_sync = now


class RecordingWriter(Writer):
    """A rosbags MCAP writer whose chunks reach the disk as they close (see CHUNK_SECONDS)."""

    STORAGE_PLUGINS: ClassVar = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _FlushingMcapWriter}

    def close_chunk_if_due(self) -> None:
        if self.storage is not None:
            self.storage.close_chunk_if_due()


def open_recording_writer(path: Path, compress: bool) -> RecordingWriter:
    """``open_writer`` for a recording: written in place, chunks flushed as they close."""
    writer = RecordingWriter(path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
    if compress:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    return writer


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
def staged_bag(
    out: str | Path, overwrite: bool = False, keep_on_error: bool = False
) -> Iterator[Path]:
    """Yield a path to write a bag at; on success it is renamed to ``out``.

    On an exception the staged bag is deleted, or with ``keep_on_error`` (a recorder whose
    writer was closed cleanly) still moved to ``out`` so nothing recorded is lost.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: choose another output folder or pass --overwrite")
    make_parent(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    staged = staging / out.name
    try:
        try:
            yield staged
        except BaseException:
            if keep_on_error and staged.exists():
                _move_into_place(staged, out, staging)
            raise
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
