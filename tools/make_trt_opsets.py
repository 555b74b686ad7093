"""Derive quantize/tensorrt_ops.json from onnx-tensorrt's docs/operators.md at the TensorRT releases lbedge targets.

Usage: python tools/make_trt_opsets.py /path/to/onnx-tensorrt-git-dir
(a clone or bare repository of github.com/onnx/onnx-tensorrt; nothing of it is committed but the derived table).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

RELEASES = {"8.5": "3b008c4", "8.6": "6872a94", "10": "96e7811"}  # JetPack 5.1, JetPack 6.0, JetPack 6.1+/x86


def parse(markdown: str) -> dict[str, dict]:
    ops: dict[str, dict] = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.fullmatch(r"[A-Z][A-Za-z0-9]+", cells[0]) or cells[1] not in ("Y", "N"):
            continue
        types = [t.strip() for t in cells[2].split(",")] if len(cells) > 2 and cells[2] else []
        ops[cells[0]] = {
            "supported": cells[1] == "Y",
            "types": [t for t in types if t],
            "restrictions": cells[3] if len(cells) > 3 else "",
        }
    return ops


def main(git_dir: str) -> None:
    out = {}
    for version, commit in RELEASES.items():
        md = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{commit}:docs/operators.md"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        out[version] = parse(md)
    target = Path(__file__).resolve().parents[1] / "quantize" / "tensorrt_ops.json"
    target.write_text(
        json.dumps(
            {"source": "onnx/onnx-tensorrt docs/operators.md", "commits": RELEASES, "releases": out},
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    print(
        f"wrote {target}: "
        + ", ".join(f"TensorRT {v}: {sum(o['supported'] for o in ops.values())} ops" for v, ops in out.items())
    )


if __name__ == "__main__":
    main(sys.argv[1])
