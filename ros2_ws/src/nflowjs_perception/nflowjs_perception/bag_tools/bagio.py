"""Writing rosbag2 (MCAP) folders so that a crash never leaves a half bag where one is expected.

A bag is written under a hidden staging folder beside its destination and renamed into place
once closed: a reader sees either no bag or a complete one. The staging folder holds the bag
under its final name because rosbags names the .mcap file after the bag folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    out.parent.mkdir(parents=True, exist_ok=True)
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
