"""Checkpoint -> GGUF: quantize a Hugging Face Qwen2/Qwen3/Llama checkpoint (or requantize a GGUF) into a
GGUF file that llama.cpp and qwen-cpu both load.

    quantize_model("Qwen2.5-0.5B-Instruct/", "qwen2.5-0.5b-q4_k_m.gguf", "q4_k_m")

The TYPEs and the per-tensor rules: recipes.py. Sources: hf_checkpoint.py (a Hugging Face
folder), source.py (a GGUF file); the file itself: writer.py.

The legacy types and F16/BF16 are byte-identical to gguf-py's quantizers; the K-quants are our own
(qwen_cpu._kernels.quantize), with an error at or below llama.cpp's reference quantizers.

Memory: tensors are read (safetensors: mapped, rows converted on demand), converted and written in
row chunks, one tensor at a time, so peak memory stays near a chunk plus the output buffers of one
chunk, whatever the model size.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..defaults import add_sampling_metadata
from ..errors import QwenCpuError
from .hf_checkpoint import add_hf_metadata, add_tokenizer, hf_config, hf_tensors
from .recipes import QUANT_TYPES, QuantType, row_bytes, tensor_type, type_name
from .source import READABLE, copy_gguf_metadata, gguf_source
from .writer import write_gguf

__all__ = ["QUANT_TYPES", "QuantType", "QuantizeResult", "quantize_model", "tensor_type"]


@dataclass
class QuantizeResult:
    """What quantize_model wrote: the file, its size, tensor count per GGUF type name, seconds."""

    path: Path
    n_bytes: int
    type_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def quantize_model(src: str | os.PathLike, dst: str | os.PathLike, type: str, force: bool = False,
                   progress: bool | None = True, n_threads: int = 0) -> QuantizeResult:
    """Quantize a checkpoint folder or requantize a GGUF file into the GGUF file `dst`.

    src: a Hugging Face folder (config.json, *.safetensors [+ model.safetensors.index.json],
    tokenizer.json, tokenizer_config.json) of Qwen2, Qwen3, Llama, Qwen2Moe or Qwen3Moe ForCausalLM
    (qwen_cpu/arch.py), or a .gguf file.
    type: one of QUANT_TYPES (f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_m q5_k_m q6_k).
    force: overwrite an existing dst. progress: a line per tensor on stderr (None: only if stderr is
    a terminal). n_threads: quantization threads (0: one per core).

    The file is written to a temporary name beside dst and renamed when complete: on any error
    (including KeyboardInterrupt or a full disk) no partial file is left. Raises QwenCpuError for
    bad input.
    """
    import gguf

    t_start = time.perf_counter()
    qt = QUANT_TYPES.get(str(type).lower())
    if qt is None:
        raise QwenCpuError(f"unknown quantization type {type!r}; choose one of {', '.join(QUANT_TYPES)}")
    src_p, dst_p = Path(src), Path(dst)
    if not src_p.exists():
        raise QwenCpuError(f"{src_p}: no such file or folder")
    if dst_p.is_dir():
        raise QwenCpuError(f"{dst_p}: is a folder; give the output file's path")
    if dst_p.exists() and not force:
        raise QwenCpuError(f"{dst_p}: already exists (use force to overwrite)")
    if not dst_p.parent.exists():
        raise QwenCpuError(f"{dst_p.parent}: the output folder does not exist")
    if progress is None:
        progress = sys.stderr.isatty()

    closers: list[Callable[[], None]] = []
    try:
        if src_p.is_dir():
            cfg = hf_config(src_p)
            for f in ("tokenizer.json",):
                if not (src_p / f).exists():
                    raise QwenCpuError(f"{src_p}: no {f} (the tokenizer is written into the GGUF)")
            tensors, shards = hf_tensors(src_p, cfg)
            closers += [s.close for s in shards]
            arch, n_layer, n_expert = cfg.arch, cfg.n_layer, cfg.n_expert
            w = gguf.GGUFWriter(None, arch)
            add_hf_metadata(w, cfg, qt)
            add_tokenizer(w, src_p, cfg.n_vocab)
            add_sampling_metadata(w, src_p)  # general.sampling.* from generation_config.json
        else:
            gsrc, arch, n_layer, tensors = gguf_source(src_p, closers)
            n_expert = int(gsrc.metadata.get(f"{arch}.expert_count", 0))
            w = gguf.GGUFWriter(None, arch)
            copy_gguf_metadata(w, gsrc)
            w.add_file_type(qt.file_type)
            w.add_quantization_version(2)

        has_output = any(t.name == "output.weight" for t in tensors)
        counts: dict[str, int] = {}
        for t in tensors:
            if len(t.shape) == 1 and t.raw_type is not None:
                t.out_type = t.raw_type  # GGUF vectors are copied as they are
            else:
                t.out_type = tensor_type(t.name, t.shape, qt, n_layer, has_output, n_expert)
            if t.raw_type is not None and t.out_type != t.raw_type and t.raw_type not in READABLE:
                raise QwenCpuError(f"{src_p}: tensor {t.name!r} is {t.src_type}, which cannot be requantized "
                                   f"(readable: {', '.join(type_name(x) for x in sorted(READABLE))})")
            n_rows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
            if t.out_type != t.raw_type:  # converted; else copied with the source's byte count
                t.nbytes = n_rows * row_bytes(t.out_type, t.shape[-1])
            w.add_tensor_info(t.name, (*t.shape[:-1], t.nbytes // n_rows), np.dtype(np.uint8), t.nbytes,
                              raw_dtype=gguf.GGMLQuantizationType(t.out_type))
            counts[type_name(t.out_type)] = counts.get(type_name(t.out_type), 0) + 1
        size = write_gguf(w, tensors, dst_p, progress, n_threads)
        return QuantizeResult(dst_p, size, counts, time.perf_counter() - t_start)
    finally:
        for c in closers:
            c()
