"""``ros2 run lbedge_ros lbedge_node``: the node of the pip-installed lbedge (:mod:`lbedge.ros2.node`)."""

from __future__ import annotations

import sys
from typing import Sequence


def main(args: Sequence[str] | None = None) -> None:
    try:
        from lbedge.ros2.node import main as run
    except ImportError as exc:
        sys.exit(
            f"lbedge is not importable by the Python ROS 2 runs ({exc}): install it into that Python, e.g. "
            '`python3 -m pip install "lbedge-0.1.0-py3-none-any.whl[jetson,ros]"` in a venv created with '
            "--system-site-packages and activated before `colcon build` and `ros2 launch` (docs/ros2.md)"
        )
    run(args)


if __name__ == "__main__":
    main()
