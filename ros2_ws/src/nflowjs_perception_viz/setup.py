"""ament_python build of nflowjs_perception_viz: data only (the RViz2 config), no Python code."""

from setuptools import setup

PACKAGE = "nflowjs_perception_viz"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "LICENSE"]),
        (f"share/{PACKAGE}/rviz", ["rviz/road.rviz"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="nflowjs-perception maintainers",
    maintainer_email="maintainers@users.noreply.r-seed-c6993f65.example",
    description="RViz2 configuration for nflowjs_perception",
    license="Apache-2.0",
)
