"""qwen-cpu: a CPU-first quantized inference engine for Qwen2.5-family GGUF models.

    from qwen_cpu import Model
    with Model.load("qwen2.5-0.5b-instruct-q4_k_m.gguf") as m:
        print(m.chat([{"role": "user", "content": "Hello!"}])["choices"][0]["message"]["content"])
"""

from . import _isa
from .errors import GGUFError, QwenCpuError
from .generate import Response
from .api import Model
from .sampler import SamplingParams

__version__ = "0.1.0"
_isa.select_from_environment()

__all__ = ["GGUFError", "Model", "QwenCpuError", "Response", "SamplingParams", "__version__"]
