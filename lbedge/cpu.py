"""What this CPU's instruction set means for INT8 inference on ONNX Runtime and BF16 on PyTorch (torch-free).

ONNX Runtime's x86 INT8 kernels multiply unsigned 8-bit activations by signed 8-bit weights (U8S8). With VNNI
(AVX512-VNNI, AVX-VNNI) or AMX the products are accumulated exactly in int32. Without them (AVX2, AVX-512BW) the
kernels add pairs of products into a saturating int16 (``vpmaddubsw``), which full-range 8-bit weights overflow:
there, weights quantized to 7 bits (ONNX Runtime's ``reduce_range``) keep the sums in range, at a small loss of
precision. ARM64 kernels accumulate in 32 bits (``sdot``/``udot`` with the dot-product extension).

:func:`int8_weight_bits` chooses the weight width for the machine an INT8 graph is built on;
:func:`int8_weights_suit` says whether a graph built with a width suits the machine it runs on.

BF16 runs on PyTorch only (ONNX Runtime's CPU provider has no BF16 kernels). PyTorch's BF16 matrix products use
BF16 units where the CPU has them (x86 AVX512-BF16 or AMX-BF16, ARM64 BF16) and are emulated, several times
slower than FP32, elsewhere: :func:`bf16_support` says which.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

#: x86 flags (as /proc/cpuinfo spells them) whose INT8 dot products accumulate exactly in int32
EXACT_X86_INT8 = ("amx_int8", "avx512_vnni", "avx_vnni")
#: ARM64 feature (as /proc/cpuinfo spells it) of the int8 dot-product instructions
ARM_DOTPROD = "asimddp"
#: x86 flags of BF16 matrix or dot-product units, fastest first
X86_BF16 = ("amx_bf16", "avx512_bf16")
#: ARM64 feature of the BF16 instructions
ARM_BF16 = "bf16"


def _cpuinfo_field(keys: tuple[str, ...], cpuinfo: str | None) -> str | None:
    """The first value of one of ``keys`` in ``/proc/cpuinfo`` (or the text given); None where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, ARM64 ``Features``) from ``/proc/cpuinfo`` (or the text given);
    empty where the file cannot be read (macOS, Windows)."""
    return frozenset((_cpuinfo_field(("flags", "Features"), cpuinfo) or "").split())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or the text given), else what the platform says."""
    return _cpuinfo_field(("model name",), cpuinfo) or platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True)
class WeightBits:
    """The INT8 weight width for a CPU, and why."""

    bits: int  # 8: full range; 7: ONNX Runtime's reduce_range
    reason: str


def int8_weight_bits(flags: frozenset[str] | None = None, machine: str | None = None) -> WeightBits:
    """The weight width that is exact on this CPU (``flags``/``machine``: another CPU's, for tests): 8 bits where
    the INT8 kernels accumulate in int32 (VNNI, AMX, ARM64 dot product), 7 bits elsewhere, and 7 bits where the
    CPU cannot be told (the width that is safe everywhere)."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        exact = [f for f in EXACT_X86_INT8 if f in flags]
        if exact:
            return WeightBits(8, f"x86 with {exact[0]}: INT8 products accumulate exactly in int32")
        if not flags:
            return WeightBits(7, "x86 CPU whose flags cannot be read: 7-bit weights are exact on every x86 CPU")
        return WeightBits(7, "x86 without VNNI or AMX: INT8 kernels add pairs of products into saturating int16")
    if machine in ("aarch64", "arm64"):
        if ARM_DOTPROD in flags:
            return WeightBits(8, "ARM64 with the dot-product extension: INT8 products accumulate in int32")
        return WeightBits(7, "ARM64 without the dot-product extension (or unknown): 7-bit weights are safe")
    return WeightBits(7, f"{machine or 'unknown'} CPU: 7-bit weights are safe everywhere")


def int8_weights_suit(bits: int, flags: frozenset[str] | None = None, machine: str | None = None) -> tuple[bool, str]:
    """(ok, reason): whether an ONNX Runtime INT8 graph with ``bits``-bit weights is exact on this CPU. 7-bit
    graphs suit every CPU; 8-bit ones need int32 accumulation (see :func:`int8_weight_bits`)."""
    here = int8_weight_bits(flags, machine)
    if bits <= 7 or here.bits == 8:
        return True, f"{bits}-bit weights on {here.reason.split(':')[0]}"
    return False, (
        f"this INT8 graph has 8-bit weights, built for CPUs with VNNI or AMX, but this CPU is {here.reason}, so "
        "large sums can clip and embeddings drift; rebuild the bundle here, or with --weight-bits 7, for this CPU"
    )


@dataclass(frozen=True)
class Bf16Support:
    """Whether this CPU computes BF16 matrix products natively, and why (the units found, or their absence)."""

    native: bool
    reason: str


def bf16_support(flags: frozenset[str] | None = None, machine: str | None = None) -> Bf16Support:
    """Native BF16 on this CPU (``flags``/``machine``: another CPU's, for tests): x86 with AMX-BF16 or
    AVX512-BF16, ARM64 with the BF16 extension."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        units = [f for f in X86_BF16 if f in flags]
        if units:
            return Bf16Support(True, f"x86 with {units[0]}: BF16 products run on the CPU's BF16 units")
        return Bf16Support(False, "x86 without AMX-BF16 or AVX512-BF16: BF16 products are emulated, slower than FP32")
    if machine in ("aarch64", "arm64"):
        if ARM_BF16 in flags:
            return Bf16Support(True, "ARM64 with the BF16 extension: BF16 products run natively")
        return Bf16Support(False, "ARM64 without the BF16 extension: BF16 products are emulated, slower than FP32")
    return Bf16Support(False, f"{machine or 'unknown'} CPU: no known BF16 units")


__all__ = [
    "ARM_BF16",
    "ARM_DOTPROD",
    "EXACT_X86_INT8",
    "X86_BF16",
    "Bf16Support",
    "WeightBits",
    "bf16_support",
    "cpu_flags",
    "cpu_model",
    "int8_weight_bits",
    "int8_weights_suit",
]
