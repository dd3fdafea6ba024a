"""ament_python build of the nflowjs_perception package (colcon build, or pip for the runtime)."""

import os
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "nflowjs_perception"
HERE = Path(__file__).resolve().parent


def share(folder: Path, pattern: str) -> list[str]:
    """Files to install, relative to this folder (setuptools refuses absolute data_files)."""
    files = sorted(glob(str(folder / pattern)))
    if not files:
        raise FileNotFoundError(f"{PACKAGE}: no {pattern} under {folder}: incomplete copy?")
    return [os.path.relpath(f, HERE) for f in files]


def demo_files() -> list[tuple[str, list[str]]]:
    """The demo bundle and bag (demo/), folder by folder, for the share directory."""
    folders = sorted({p.parent for p in (HERE / "demo").rglob("*") if p.is_file()})
    return [
        (f"share/{PACKAGE}/{folder.relative_to(HERE)}", share(folder, "*")) for folder in folders
    ]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "LICENSE", "NOTICE"]),
        # Everything installed comes from inside this folder, so a copy of the package alone
        # (vcs import into another workspace, a bloom release) builds.
        (f"share/{PACKAGE}/launch", share(HERE / "launch", "*.launch.py")),
        # road.yaml (parameters) and fastdds.xml (the Fast DDS profile every process loads)
        (
            f"share/{PACKAGE}/config",
            share(HERE / "config", "*.yaml") + share(HERE / "config", "*.xml"),
        ),
        *demo_files(),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="nflowjs-perception maintainers",
    maintainer_email="maintainers@users.noreply.r-seed-c6993f65.example",
    license="Apache-2.0",  # the code; NOTICE: the CamVid demo data's terms
    description="NFlowJS road-scene segmentation and OOD detection node",
    entry_points={
        "console_scripts": [
            f"perception_node = {PACKAGE}.perception_node:main",
            f"healthcheck = {PACKAGE}.healthcheck:main",
            f"convert_to_bag = {PACKAGE}.bag_tools.convert:main",
            f"play_bag = {PACKAGE}.bag_tools.replay:play_main",
            f"record_bag = {PACKAGE}.bag_tools.replay:record_main",
            f"evaluate_bag = {PACKAGE}.bag_tools.evaluate:main",
            f"repair_bag = {PACKAGE}.bag_tools.repair:main",
            f"make_road_obstacles = {PACKAGE}.bag_tools.road_obstacles:main",
        ],
    },
)
