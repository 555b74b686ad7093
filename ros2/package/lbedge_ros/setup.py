"""The lbedge_ros ament package: the node's entry point, its launch files and parameter files (colcon build)."""

from glob import glob

from setuptools import setup

PACKAGE = "lbedge_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="lbedge maintainers",
    maintainer_email="maintainers@lbedge.invalid",
    description="lbedge on ROS 2: zero-shot classification of camera, depth, thermal and audio topics",
    license="MIT",
    entry_points={"console_scripts": ["lbedge_node = lbedge_ros.node:main"]},
)
