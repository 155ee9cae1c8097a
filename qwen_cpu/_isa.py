"""Kernel-path selection: QWEN_CPU_ISA=scalar|sse42|avx2|avxvnni|avx512|neon|neon_dotprod forces one path."""

import os

from . import _kernels
from .errors import QwenCpuError


def select_from_environment() -> str:
    """Apply QWEN_CPU_ISA if set (error if this CPU or build lacks it); return the path in use."""
    wanted = os.environ.get("QWEN_CPU_ISA", "").strip()
    if wanted:
        available = _kernels.available_isas()
        if wanted not in available:
            raise QwenCpuError(
                f"QWEN_CPU_ISA={wanted!r} is not available here; this CPU and build offer: {', '.join(available)}"
            )
        _kernels.set_isa(wanted)
    return _kernels.get_isa()
