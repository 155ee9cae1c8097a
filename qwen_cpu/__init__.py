"""qwen-cpu: a CPU-first quantized inference engine for Qwen2.5-family GGUF models."""

from . import _isa
from .errors import GGUFError, QwenCpuError

__version__ = "0.1.0"
_isa.select_from_environment()

__all__ = ["GGUFError", "QwenCpuError", "__version__"]
