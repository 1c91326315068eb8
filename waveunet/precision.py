"""The precision separation runs in: ``auto``, ``fp32``, ``bf16`` or ``fp16``.

``auto`` is a rule, not a timing probe, so a run's precision follows from the machine alone:
bf16 on CUDA and on CPUs whose flags report native bf16 arithmetic (``avx512_bf16`` or
``amx_bf16`` in ``/proc/cpuinfo``), fp32 elsewhere (on a CPU without them bf16 is emulated and
slower than fp32). The network runs under autocast in the chosen precision; what goes in and
comes out stays float32. ``waveunet separate --precision``, ``Separator(precision=...)`` and
``waveunet evaluate precision=`` take these values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "TRAINING_PRECISIONS", "autocast", "cpu_has_native_bf16",
           "resolve_precision"]

# The one home of the names. This module imports torch only inside the functions that need it,
# so that settings (which takes the names from here) and ``waveunet separate``'s argument
# parsing start without it. TRAINING_PRECISIONS: what ``trainer.precision`` and
# ``scripts/bench.py --precision`` may be: autocast off, bfloat16, float16 (with a grad
# scaler). PRECISIONS: what ``precision`` may be for separation (Separator, ``separate
# --precision``, ``evaluate precision=``): those and ``auto``.
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")
PRECISIONS = ("auto", *TRAINING_PRECISIONS)
# CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: AVX512-BF16 and Intel AMX.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU feature flags named on the ``flags`` lines of ``/proc/cpuinfo`` text."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU (or the given ``/proc/cpuinfo`` text) does bf16 arithmetic natively.

    Without such flags (and where ``/proc/cpuinfo`` does not exist) bf16 is emulated on the CPU
    and slower than fp32, so the answer is False.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    return bool(cpu_flags(cpuinfo) & set(NATIVE_BF16_CPU_FLAGS))


def resolve_precision(precision: str, device: torch.device, *, cpuinfo: str | None = None,
                      setting: str = "precision") -> str:
    """``'auto'`` -> ``'bf16'`` on CUDA and on CPUs with native bf16, else ``'fp32'``.

    A rule, not a timing probe, so a run's precision is known from the machine alone.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"{setting}: unknown {precision!r} (use {', '.join(PRECISIONS)})")
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16(cpuinfo)):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of a resolved ``precision`` on ``device`` (disabled for fp32)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
