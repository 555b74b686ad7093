"""TensorRT engine manifests and the compatibility checks run before an engine is loaded (no torch, no TensorRT).

A serialized TensorRT engine only runs on the TensorRT version, GPU architecture and platform that built
it. Every engine lbedge builds gets a manifest beside it (``<engine>.json``); before deserializing, the
runtime compares it with what it runs on and refuses a mismatch, listing each failed check with its reason.
Each check returns ``ok`` and a reason, in the manner of roboflow/inference's engine negotiation.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, EngineMismatch
from .schema import Problems, get_bool, get_dict, get_int, get_str, missing_keys, read_json

ENGINE_SCHEMA = 1


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str


@dataclass
class EngineManifest:
    """What an engine was built from, for and with."""

    tensorrt_version: str
    cuda_version: str
    compute_capability: str            # "8.7" (Orin), "9.0" (H100/H200)...
    device_name: str
    platform: str                      # "aarch64-linux" / "x86_64-linux"
    precision: str                     # fp16 | int8 | fp32
    onnx_sha256: str
    engine_sha256: str = ""
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)   # name -> {dtype, min, opt, max shapes}
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    build_flags: dict[str, Any] = field(default_factory=dict)         # workspace, dla_core, version_compatible...
    jetpack: str = ""
    lbedge_version: str = ""
    schema: int = ENGINE_SCHEMA

    def cache_key(self) -> str:
        """jetson-inference style key: model checksum, precision, TensorRT version, device."""
        raw = f"{self.onnx_sha256}|{self.precision}|{self.tensorrt_version}|{self.compute_capability}|" \
              f"{self.platform}|{json.dumps(self.build_flags, sort_keys=True)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "EngineManifest":
        """Read and validate an engine manifest: one CheckpointError lists every problem found."""
        path = Path(path)
        fix = "rebuild the engine with `lbedge compile`"
        if not path.is_file():
            raise CheckpointError(f"engine manifest {path} is missing or unreadable: {fix}")
        raw = read_json(path, "engine manifest", fix)
        problems = engine_manifest_problems(raw)
        if problems:
            raise CheckpointError(f"engine manifest {path} is not valid ({len(problems)} problem(s)): "
                                  f"{problems.summary()}; {fix}")
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


_ENGINE_STRINGS = ("tensorrt_version", "cuda_version", "compute_capability", "device_name", "platform",
                   "onnx_sha256", "engine_sha256", "jetpack", "lbedge_version")
_ENGINE_REQUIRED = ("tensorrt_version", "cuda_version", "compute_capability", "device_name", "platform",
                    "precision", "onnx_sha256")


def engine_manifest_problems(raw: Any) -> Problems:
    """Every problem of a parsed engine manifest (types, required fields, precision, build flags)."""
    p = Problems()
    d = get_dict(p, "", raw)
    if d is None:
        return p
    missing_keys(p, "", d, _ENGINE_REQUIRED)
    for key in _ENGINE_STRINGS:
        if key in d:
            get_str(p, key, d[key])
    if "precision" in d:
        get_str(p, "precision", d["precision"], choices=("fp32", "fp16", "int8"))
    for key in ("inputs", "outputs", "build_flags"):
        if key in d:
            get_dict(p, key, d[key])
    if "schema" in d:
        get_int(p, "schema", d["schema"], ENGINE_SCHEMA, ENGINE_SCHEMA)
    flags = d.get("build_flags")
    if isinstance(flags, dict):
        if flags.get("dla_core") is not None:
            get_int(p, "build_flags.dla_core", flags["dla_core"], -1, 64)
        if "version_compatible" in flags:
            get_bool(p, "build_flags.version_compatible", flags["version_compatible"])
    return p


@dataclass(frozen=True)
class RuntimeInfo:
    """The TensorRT runtime and GPU an engine is about to run on."""

    tensorrt_version: str
    cuda_version: str
    compute_capability: str
    device_name: str
    platform: str
    dla_cores: int = 0


def current_platform() -> str:
    return f"{platform.machine()}-{platform.system().lower()}"


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def check_engine(manifest: EngineManifest, runtime: RuntimeInfo, *, onnx_sha256: str | None = None,
                 engine_sha256: str | None = None) -> list[Check]:
    """Every compatibility check between an engine's manifest and the runtime; each with ok and reason."""
    checks: list[Check] = []
    built, have = _version_tuple(manifest.tensorrt_version), _version_tuple(runtime.tensorrt_version)
    if manifest.build_flags.get("version_compatible"):
        ok = built[:1] == have[:1] and have >= built
        checks.append(Check("tensorrt_version", ok,
                            f"version-compatible engine built with TensorRT {manifest.tensorrt_version}, runtime "
                            f"{runtime.tensorrt_version}" + ("" if ok else ": needs the same major version, not older")))
    else:
        ok = built[:3] == have[:3]
        checks.append(Check("tensorrt_version", ok,
                            f"engine built with TensorRT {manifest.tensorrt_version}, runtime is "
                            f"{runtime.tensorrt_version}" + ("" if ok else ": engines only load on the TensorRT "
                                                            "version that built them")))
    ok = manifest.compute_capability == runtime.compute_capability
    checks.append(Check("compute_capability", ok,
                        f"engine built for sm_{manifest.compute_capability.replace('.', '')}, GPU is "
                        f"sm_{runtime.compute_capability.replace('.', '')} ({runtime.device_name})"))
    ok = manifest.platform == runtime.platform
    checks.append(Check("platform", ok, f"engine built on {manifest.platform}, running on {runtime.platform}"))
    dla = manifest.build_flags.get("dla_core")
    if dla is not None and dla >= 0:
        ok = dla < runtime.dla_cores
        checks.append(Check("dla_core", ok, f"engine uses DLA core {dla}, device has {runtime.dla_cores} DLA cores"))
    if onnx_sha256 is not None:
        ok = manifest.onnx_sha256 == onnx_sha256
        checks.append(Check("onnx_sha256", ok, "engine built from this bundle's ONNX" if ok else
                            "engine was built from a different ONNX file (stale engine)"))
    if engine_sha256 is not None and manifest.engine_sha256:
        ok = manifest.engine_sha256 == engine_sha256
        checks.append(Check("engine_sha256", ok, "engine file intact" if ok else
                            "engine file does not match its manifest checksum (corrupt or replaced)"))
    return checks


def require_compatible(manifest: EngineManifest, runtime: RuntimeInfo, where: str, **kw: str | None) -> None:
    """Raise :class:`EngineMismatch` listing every failed check, or return quietly."""
    failed = [c for c in check_engine(manifest, runtime, **kw) if not c.ok]
    if failed:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in failed)
        raise EngineMismatch(f"cannot load TensorRT engine {where}: {reasons}. Rebuild it on this device with "
                             "`lbedge compile BUNDLE`")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)
