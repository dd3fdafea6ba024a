"""Opening bags for reading: what is wrong with a bag that cannot be read, in one line.

rosbags reports a damaged bag with the error of the record it tripped on ("File end magic is
invalid", "string indices must be integers"); a user needs the file, what happened to it and
what to do. ``open_bag`` and ``messages`` raise ``BagError`` with those three, which the tools'
``main`` print as one line before exiting non-zero.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import yaml
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError

REPAIR_HINT = "run `repair_bag {bag}` to rebuild it from its complete records"
SQLITE_HINT = (
    "repair_bag rebuilds MCAP bags only: for this sqlite3 bag, `ros2 bag reindex {bag}` on a ROS "
    "install (a lost metadata.yaml) or sqlite3's `.recover` on its .db3 (a damaged database)"
)


class BagError(Exception):
    """A bag the tools cannot use; the message names the file, the problem and the fix."""


def _fix_hint(bag: Path) -> str:
    """What to run on a bag that cannot be read: repair_bag, which refuses sqlite3 bags."""
    try:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())
        sqlite = info["rosbag2_bagfile_information"]["storage_identifier"] == "sqlite3"
    except Exception:  # no or garbled metadata: go by the files
        sqlite = any(bag.glob("*.db3")) and not any(bag.glob("*.mcap"))
    return (SQLITE_HINT if sqlite else REPAIR_HINT).format(bag=bag)


def _no_metadata(bag: Path) -> BagError:
    mcaps = sorted(p.name for p in bag.glob("*.mcap"))
    if mcaps:
        return BagError(
            f"{bag} has {', '.join(mcaps)} but no metadata.yaml: a recording that was not "
            f"closed (recorder killed, or copied while being written); "
            + REPAIR_HINT.format(bag=bag)
        )
    return BagError(
        f"{bag} is not a rosbag2 folder (no metadata.yaml, no .mcap file): give the folder that "
        "convert_to_bag, record_bag or ros2 bag record wrote"
    )


def check_bag_path(bag: Path) -> None:
    """Raise BagError for paths that cannot be a rosbag2 folder, before any reading."""
    if not bag.exists():
        raise BagError(f"{bag} does not exist: give the bag folder (with metadata.yaml) to read")
    if bag.is_file():
        if bag.suffix == ".bag":
            raise BagError(
                f"{bag} is a ROS 1 bag: convert it with `rosbags-convert --src {bag} --dst "
                f"{bag.with_suffix('')}` and give that folder"
            )
        if bag.suffix in (".mcap", ".db3") or bag.name == "metadata.yaml":
            raise BagError(f"{bag} is a file of a bag: give its folder, {bag.parent}")
        raise BagError(f"{bag} is a file, not a rosbag2 folder: give the bag folder")
    if not (bag / "metadata.yaml").is_file():
        raise _no_metadata(bag)


def diagnose(bag: Path, error: Exception) -> BagError:
    """A BagError for a rosbags error met while opening ``bag`` (matched on rosbags' wording)."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    if text.startswith(("Could not load YAML", "Invalid bag metadata")):
        return BagError(
            f"{bag}/metadata.yaml is not valid rosbag2 metadata ({text}): restore it, or "
            "move it away and " + REPAIR_HINT.format(bag=bag)
        )
    if text.startswith("Storage plugin"):
        return BagError(
            f"{bag}: {text.split(';')[0]}: these tools read mcap and sqlite3 bags; convert it "
            "with `ros2 bag convert` on a ROS install"
        )
    if text.startswith("Rosbag2 version"):
        return BagError(
            f"{bag}: {text.split(';')[0]} (these tools read versions up to 9): convert it with "
            "`ros2 bag convert` from a ROS release that wrote it"
        )
    if text.startswith(("Some database files are missing", "Could not open file")):
        return BagError(
            f"{bag}: a file its metadata.yaml lists is missing or unreadable ({text}): copy the "
            "whole bag folder again"
        )
    if "end magic" in text or "footer" in text or "summary" in text:
        return BagError(
            f"{bag}: its MCAP file ends without a summary (truncated: recorder killed, disk "
            "full, or copied while being written); " + REPAIR_HINT.format(bag=bag)
        )
    if text.startswith("File magic is invalid"):
        return BagError(
            f"{bag}: its data file is not an MCAP file (wrong start bytes): copy the bag again, "
            "or give a bag folder that record_bag, convert_to_bag or ros2 bag record wrote"
        )
    if text.startswith("Profile is not ros2"):
        return BagError(
            f"{bag}: its MCAP file is not a ROS 2 recording (MCAP profile is not ros2): these "
            "tools read ROS 2 bags only"
        )
    return BagError(f"{bag} cannot be read ({type(error).__name__}: {text}); " + _fix_hint(bag))


def open_bag(bag: str | Path) -> Reader:
    """An opened rosbags Reader of ``bag``, or BagError saying why not and what to do."""
    bag = Path(bag)
    check_bag_path(bag)
    try:
        reader = Reader(bag)
        reader.open()
    except (ReaderError, OSError, KeyError, TypeError, ValueError) as error:
        raise diagnose(bag, error) from error
    return reader


def messages(reader: Reader, bag: str | Path, connections: Collection) -> Iterator:
    """``reader.messages`` with a damaged chunk reported as BagError (after what was read)."""
    try:
        yield from reader.messages(connections=connections)
    except Exception as error:  # rosbags and zstd raise several kinds for bad data
        detail = str(error).splitlines()[0] if str(error) else "no detail"
        raise BagError(
            f"{bag}: a damaged record ({type(error).__name__}: {detail}) stops the read here; "
            + _fix_hint(Path(bag))
        ) from error


def require_topics(bag: Path, reader: Reader, wanted: dict[str, tuple[str, str | None]]) -> None:
    """``wanted``: topic -> (the option that named it, the type it must have or None)."""
    present = {c.topic: c.msgtype for c in reader.connections}
    for topic, (option, msgtype) in wanted.items():
        if topic not in present:
            raise BagError(
                f"{bag} has no {topic} ({option}); it has "
                f"{', '.join(sorted(present)) or 'no topics'}: name one of those with {option}"
            )
        if msgtype is not None and present[topic] != msgtype:
            raise BagError(
                f"{bag}: {topic} ({option}) is {present[topic]}, not {msgtype}: name a "
                f"{msgtype} topic with {option}"
            )
