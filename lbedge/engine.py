"""TensorRT engine manifests and the checks run before an engine is built or loaded (no torch, no TensorRT).

A serialized TensorRT engine only runs on the TensorRT version, GPU architecture and platform that built
it. Every engine lbedge builds gets a manifest beside it (``<engine>.json``); before deserializing, the
runtime compares it with what it runs on and refuses a mismatch, listing each failed check with its reason.
Each check returns ``ok`` and a reason, in the manner of roboflow/inference's engine negotiation.

The rules are plain functions so they are tested without TensorRT: which TensorRT versions lbedge supports
(:func:`tensorrt_problem`), when a version-compatible engine may run on another TensorRT
(:func:`version_compatible_runs`), and the name of the timing cache kept for one device and software stack
(:func:`timing_cache_name`).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError, EngineMismatch
from .schema import Problems, get_bool, get_dict, get_int, get_str, missing_keys, read_json

ENGINE_SCHEMA = 1

#: the oldest TensorRT lbedge builds and runs engines with (JetPack 6.0)
MIN_TENSORRT = (8, 6)

#: runtime major versions that may run a version-compatible engine built with a given major version (TensorRT's
#: engine-compatibility documentation: 8.6+ engines run on 9 and 10, 10 engines on 11; nothing else across majors)
NEXT_MAJORS: dict[int, tuple[int, ...]] = {8: (9, 10), 9: (10,), 10: (11,)}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str


@dataclass
class EngineManifest:
    """What an engine was built from, for and with, and how closely it agreed with ONNX Runtime."""

    tensorrt_version: str
    cuda_version: str  # the device's CUDA, as its driver reports it
    compute_capability: str  # "8.7" (Orin), "9.0" (H100/H200)...
    device_name: str
    platform: str  # "aarch64-linux" / "x86_64-linux"
    precision: str  # fp16 | int8 | fp32
    onnx_sha256: str
    engine_sha256: str = ""
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {dtype, min, opt, max shapes}
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    build_flags: dict[str, Any] = field(default_factory=dict)  # workspace, dla_core, version_compatible...
    jetpack: str = ""
    lbedge_version: str = ""
    precision_control: str = ""  # how the graph's FP32 layers were kept: strong typing or constraints
    agreement: dict[str, Any] = field(default_factory=dict)  # vs ONNX Runtime FP32, measured at build
    schema: int = ENGINE_SCHEMA

    def cache_key(self) -> str:
        """jetson-inference style key: model checksum, precision, TensorRT version, device."""
        raw = (
            f"{self.onnx_sha256}|{self.precision}|{self.tensorrt_version}|{self.compute_capability}|"
            f"{self.platform}|{json.dumps(self.build_flags, sort_keys=True)}"
        )
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
            raise CheckpointError(
                f"engine manifest {path} is not valid ({len(problems)} problem(s)): {problems.summary()}; {fix}"
            )
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


_ENGINE_STRINGS = (
    "tensorrt_version",
    "cuda_version",
    "compute_capability",
    "device_name",
    "platform",
    "onnx_sha256",
    "engine_sha256",
    "jetpack",
    "lbedge_version",
    "precision_control",
)
_ENGINE_REQUIRED = (
    "tensorrt_version",
    "cuda_version",
    "compute_capability",
    "device_name",
    "platform",
    "precision",
    "onnx_sha256",
)


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
    for key in ("inputs", "outputs", "build_flags", "agreement"):
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
    cuda_version: str  # the device's CUDA (cudaDriverGetVersion)
    compute_capability: str
    device_name: str
    platform: str
    dla_cores: int = 0
    cuda_runtime: str = ""  # the CUDA runtime cuda-python carries (cudaRuntimeGetVersion)


def current_platform() -> str:
    return f"{platform.machine()}-{platform.system().lower()}"


def version_tuple(v: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0, 30)``; non-digits in a part are ignored (``"8.6.2a"`` -> 8, 6, 2)."""
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def tensorrt_problem(version: str) -> str | None:
    """Why lbedge cannot build or run engines with TensorRT ``version``, or None when it can."""
    if version_tuple(version)[:2] >= MIN_TENSORRT:
        return None
    return (
        f"TensorRT {version} is not supported: lbedge needs TensorRT 8.6 or later (JetPack 6.0 or later, or "
        "TensorRT 10 on an x86 GPU host). TensorRT 8.5's ONNX parser has no LayerNormalization importer, and "
        "JetPack 5.1's Python 3.8 is older than the Python 3.10 lbedge needs. Upgrade to JetPack 6, or run the "
        'bundle with ONNX Runtime (`lbedge.load_bundle(path, backend="onnxruntime")`)'
    )


def version_compatible_runs(built: str, runtime: str) -> tuple[bool, str]:
    """Whether a version-compatible engine built with TensorRT ``built`` runs on TensorRT ``runtime``, and why.

    TensorRT's rule: version compatibility exists from 8.6 (build and runtime both 8.6 or later); such an engine
    runs on the same or a later runtime of its major version, and across majors only 8 -> 9, 8 -> 10, 9 -> 10 and
    10 -> 11; never on an older runtime.
    """
    b, r = version_tuple(built), version_tuple(runtime)
    if b[:2] < MIN_TENSORRT:
        return False, f"version compatibility needs an engine built with TensorRT 8.6 or later, not {built}"
    if r < b:
        return False, f"built with TensorRT {built}, which is newer than this runtime ({runtime})"
    if r[0] != b[0] and r[0] not in NEXT_MAJORS.get(b[0], ()):
        return False, f"a TensorRT {b[0]} engine does not run on TensorRT {r[0]}, version-compatible or not"
    return True, f"version-compatible engine built with TensorRT {built} runs on TensorRT {runtime}"


def timing_cache_name(runtime: RuntimeInfo) -> str:
    """The timing cache file of one device and software stack, relative to a bundle (``engines/timing....cache``).

    A timing cache holds kernel timings of one GPU with one CUDA and TensorRT version: the name carries the
    compute capability, TensorRT version, CUDA version, platform and device, so a bundle copied to another
    device or software stack starts a new cache instead of reusing a foreign one. It is never listed among the
    bundle's relocatable files.
    """
    device = re.sub(r"[^a-z0-9]+", "-", runtime.device_name.lower()).strip("-")[:40] or "gpu"
    parts = [
        f"sm{runtime.compute_capability.replace('.', '')}",
        f"trt{runtime.tensorrt_version}",
        f"cuda{runtime.cuda_version}",
        runtime.platform,
        device,
    ]
    return "engines/timing." + ".".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p) for p in parts) + ".cache"


def _tensorrt_check(manifest: EngineManifest, runtime: RuntimeInfo) -> Check:
    """The TensorRT-version check: equal versions, or a version-compatible engine on a runtime that may run it."""
    if manifest.build_flags.get("version_compatible"):
        ok, why = version_compatible_runs(manifest.tensorrt_version, runtime.tensorrt_version)
        return Check("tensorrt_version", ok, why)
    ok = version_tuple(manifest.tensorrt_version)[:3] == version_tuple(runtime.tensorrt_version)[:3]
    return Check(
        "tensorrt_version",
        ok,
        f"engine built with TensorRT {manifest.tensorrt_version}, runtime is {runtime.tensorrt_version}"
        + ("" if ok else ": engines only load on the TensorRT version that built them"),
    )


def check_engine(
    manifest: EngineManifest, runtime: RuntimeInfo, *, onnx_sha256: str | None = None, engine_sha256: str | None = None
) -> list[Check]:
    """Every compatibility check between an engine's manifest and the runtime; each with ok and reason."""
    checks = [_tensorrt_check(manifest, runtime)]
    ok = manifest.compute_capability == runtime.compute_capability
    checks.append(
        Check(
            "compute_capability",
            ok,
            f"engine built for sm_{manifest.compute_capability.replace('.', '')}, GPU is "
            f"sm_{runtime.compute_capability.replace('.', '')} ({runtime.device_name})",
        )
    )
    ok = manifest.platform == runtime.platform
    checks.append(Check("platform", ok, f"engine built on {manifest.platform}, running on {runtime.platform}"))
    dla = manifest.build_flags.get("dla_core")
    if dla is not None and dla >= 0:
        ok = dla < runtime.dla_cores
        checks.append(Check("dla_core", ok, f"engine uses DLA core {dla}, device has {runtime.dla_cores} DLA cores"))
    if onnx_sha256 is not None:
        ok = manifest.onnx_sha256 == onnx_sha256
        checks.append(
            Check(
                "onnx_sha256",
                ok,
                "engine built from this bundle's ONNX"
                if ok
                else "engine was built from a different ONNX file (stale engine)",
            )
        )
    if engine_sha256 is not None and manifest.engine_sha256:
        ok = manifest.engine_sha256 == engine_sha256
        checks.append(
            Check(
                "engine_sha256",
                ok,
                "engine file intact"
                if ok
                else "engine file does not match its manifest checksum (corrupt or replaced)",
            )
        )
    return checks


def require_compatible(manifest: EngineManifest, runtime: RuntimeInfo, where: str, **kw: str | None) -> None:
    """Raise :class:`EngineMismatch` listing every failed check, or return quietly."""
    failed = [c for c in check_engine(manifest, runtime, **kw) if not c.ok]
    if failed:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in failed)
        raise EngineMismatch(
            f"cannot load TensorRT engine {where}: {reasons}. Rebuild it on this device with `lbedge compile BUNDLE`"
        )


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)
