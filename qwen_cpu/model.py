"""A loaded model: the GGUF file's tensors (zero-copy, in the mmap) handed to the C++ forward pass,
the KV cache book-keeping and the tokenizer. Generation lives in generate.py.

Thread safety: a Model may be shared between threads; every call that runs the network holds the
model's lock, so calls from two threads run one after the other (never interleaved in the cache).
The GIL is released while C++ computes, so other Python threads keep running.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from . import _kernels
from ._malloc import release_free_memory
from .config import ModelConfig, config_from_gguf
from .errors import QwenCpuError
from .gguf import GGUFFile
from .kv_cache import KVCache

if TYPE_CHECKING:
    from .generate import Response

DEFAULT_N_CTX = 4096

# GGUF tensor names per block, and whether each may be absent (biases exist in qwen2 only).
_BLOCK_TENSORS = {
    "attn_norm.weight": False, "attn_q.weight": False, "attn_k.weight": False, "attn_v.weight": False,
    "attn_q.bias": True, "attn_k.bias": True, "attn_v.bias": True, "attn_output.weight": False,
    "ffn_norm.weight": False, "ffn_gate.weight": False, "ffn_up.weight": False, "ffn_down.weight": False,
}


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_ranges(config: ModelConfig) -> None:
    """Refuse hyper-parameters the C++ model cannot hold (sizes are C int) or compute with (RoPE
    needs a base > 1 and a positive frequency scale), naming the key, before anything is built."""
    for name in ("n_layer", "n_embd", "n_ff", "n_head", "n_kv_head", "head_dim", "n_vocab"):
        value = getattr(config, name)
        if not 0 < value < 2**31:
            raise QwenCpuError(f"model hyper-parameter {name} = {value} is out of range (1 .. 2^31-1)")
    if not config.rope_freq_base > 1:
        raise QwenCpuError(f"rope.freq_base = {config.rope_freq_base} must be > 1")
    if not config.rope_freq_scale > 0:
        raise QwenCpuError(f"rope.freq_scale = {config.rope_freq_scale} (1 / rope.scaling.factor) must be > 0")


class Model:
    """A Qwen2/Llama GGUF model ready to run. Build with `Model.load(path)`."""

    def __init__(self, gguf: GGUFFile, config: ModelConfig, n_ctx: int, n_threads: int | None, n_batch: int, kv_f16: bool,
                 repack: bool = True):
        self._file = gguf
        self.config = config
        self.path = Path(gguf.path)
        self.n_ctx = n_ctx
        self._lock = threading.RLock()
        self._cache = KVCache(n_ctx)
        self.n_evaluated = 0  # tokens run through the network since load (prefill + decode)
        tensors = self._tensor_views(gguf, config)
        try:
            # The tensors are views of the file mapping: once a matrix is repacked its pages can go
            # (the OS reads them again if touched).
            kernel_config = {**config.kernel_config(n_ctx, n_batch, kv_f16), "repack": repack,
                             "release_repacked_source": True}
            self._net = _kernels.Model(kernel_config, tensors, n_threads or 0)
        except ValueError as e:
            raise QwenCpuError(f"{self.path.name}: {e}") from None
        self._tokenizer = None
        self._sampling_defaults = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, n_ctx: int | None = None, n_threads: int | None = None,
             n_batch: int = 512, kv_f16: bool = True, repack: bool = True) -> "Model":
        """Map a GGUF file and prepare it to run. path: a file, or a Hugging Face reference
        `owner/repo[:quant]` (downloaded into the Hugging Face cache once, see hub.py). Weights are not read or copied here (the OS
        pages them in on first use); only the KV cache for n_ctx positions is allocated (its pages
        are committed as positions fill). The matrices whose type this CPU's decode kernels read
        faster in a repacked layout (csrc/repack.h: Q4_0, Q8_0 and Q4_K on AVX2 and AVX-512, Q4_0
        and Q8_0 on NEON) are copied into it by the first decode step (prefill reads them as
        stored), and their pages in the file mapping released.

        n_ctx: context length in tokens (default: the model's training context, at most 4096).
        n_threads: compute threads (default: physical cores). n_batch: prefill step size.
        repack: False keeps every weight in the file mapping as stored (zero-copy), as llama.cpp's
        --no-repack does.
        """
        from .hub import resolve_model

        path = resolve_model(path)
        gguf = GGUFFile(path)
        try:
            if int(gguf.metadata.get("split.count", 1)) > 1:
                raise QwenCpuError(f"{path}: part {gguf.metadata.get('split.no', 0) + 1} of a GGUF split into "
                                   f"{gguf.metadata['split.count']} files; merge them first (llama.cpp: "
                                   "llama-gguf-split --merge FIRST_PART OUT.gguf)")
            if "token_embd.weight" not in gguf.tensors:
                raise QwenCpuError(f"{path}: missing tensor token_embd.weight")
            n_vocab = gguf.tensors["token_embd.weight"].shape[0]
            config = config_from_gguf(gguf.metadata, n_vocab)
            _check_ranges(config)
            if "tokenizer.ggml.tokens" in gguf.metadata:  # files without a vocabulary run on ids
                from .tokenizer import check_gguf_vocab

                check_gguf_vocab(gguf.metadata, n_vocab)
                gguf.release_metadata_pages()  # read again only if the tokenizer is built
            if n_ctx is None:
                n_ctx = min(config.n_ctx_train, DEFAULT_N_CTX)
            if not isinstance(n_ctx, int) or n_ctx <= 0:
                raise QwenCpuError(f"n_ctx must be a positive integer, got {n_ctx!r}")
            if n_threads is not None and (not isinstance(n_threads, int) or n_threads <= 0):
                raise QwenCpuError(f"n_threads must be a positive integer, got {n_threads!r}")
            need = config.kv_cache_bytes(n_ctx, kv_f16)
            avail = _available_memory()
            if avail is not None and need > avail:
                raise QwenCpuError(
                    f"a context of {n_ctx} tokens needs {need / 2**20:.0f} MiB of KV cache, but only "
                    f"{avail / 2**20:.0f} MiB of memory is available; use a smaller n_ctx"
                )
            return cls(gguf, config, n_ctx, n_threads, n_batch, kv_f16, repack)
        except BaseException:
            gguf.close()
            raise

    @staticmethod
    def _tensor_views(gguf: GGUFFile, config: ModelConfig) -> dict[str, tuple[np.ndarray, int, int, int]]:
        """name -> (zero-copy view, ggml type, rows, cols) for every tensor the network uses."""
        # (name, optional): output.weight is absent when the embeddings are tied
        wanted = [("token_embd.weight", False), ("output_norm.weight", False), ("output.weight", True)]
        wanted += [(f"blk.{layer}.{suffix}", optional) for layer in range(config.n_layer)
                   for suffix, optional in _BLOCK_TENSORS.items()]
        out = {}
        for name, optional in wanted:
            info = gguf.tensors.get(name)
            if info is None:
                if optional:
                    continue
                raise QwenCpuError(f"{gguf.path}: missing tensor {name}")
            if _kernels.type_info(int(info.ggml_type)) is None:
                raise QwenCpuError(f"{gguf.path}: {name}: tensor type {info.type_name} ({int(info.ggml_type)}) "
                                   "is not supported (no kernels for it)")
            shape = tuple(info.shape)
            rows, cols = (1, shape[0]) if len(shape) == 1 else (int(np.prod(shape[:-1])), shape[-1])
            out[name] = (gguf.tensor(name), int(info.ggml_type), rows, cols)
        return out

    # ---- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Free the KV cache and buffers and unmap the file. The model is unusable afterwards."""
        with self._lock:
            self._net = None
            if self._file is not None:
                self._file.close()
                self._file = None
            release_free_memory()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _require_open(self) -> Any:
        if self._net is None:
            raise QwenCpuError("the model has been closed")
        return self._net

    # ---- text ---------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The tokenizer built from the file's metadata (on first use)."""
        if self._tokenizer is None:
            from .tokenizer import Tokenizer

            if self._file is None:
                raise QwenCpuError("the model has been closed")
            self._tokenizer = Tokenizer.from_gguf_metadata(self._file.metadata)
            release_free_memory()  # the build's temporaries (~28 MB at a 152k vocabulary)
            self._file.release_metadata_pages()  # the tokenizer keeps its own copy of the texts
        return self._tokenizer

    @property
    def metadata(self) -> dict[str, Any]:
        if self._file is None:
            raise QwenCpuError("the model has been closed")
        return self._file.metadata

    @property
    def sampling_defaults(self):
        """The file's own sampling defaults (defaults.Defaults: values and where each comes from)."""
        if self._sampling_defaults is None:
            from .defaults import model_defaults

            self._sampling_defaults = model_defaults(self.metadata, self.path.name)
        return self._sampling_defaults

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of text; special-token markup in text is NOT recognised (it stays text)."""
        return self.tokenizer.encode(text, add_special=add_special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    # ---- the network --------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[int]) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim != 1 or arr.size == 0:
            raise QwenCpuError("expected a non-empty sequence of token ids")
        if arr.min() < 0 or arr.max() >= self.config.n_vocab:
            raise QwenCpuError(f"token id out of range 0..{self.config.n_vocab - 1}")
        if arr.size > self.n_ctx:
            raise QwenCpuError(f"the prompt has {arr.size} tokens but the context holds {self.n_ctx} (n_ctx)")
        return arr.astype(np.int32)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), n_vocab) float32 of every position, computed from an empty cache."""
        arr = self._check_ids(ids)
        with self._lock:
            net = self._require_open()
            self._cache.clear()
            logits, _ = net.forward(arr, 0, all_logits=True)
            self._cache.append(arr.tolist())
            self.n_evaluated += arr.size
            return logits

    def embed(self, text_or_ids: str | Sequence[int], pooling: str = "mean") -> np.ndarray:
        """A unit-length vector (n_embd,) float32: the final-norm hidden states pooled over the
        sequence ('mean', or 'last' for the last token's state)."""
        ids = self.tokenize(text_or_ids) if isinstance(text_or_ids, str) else list(text_or_ids)
        arr = self._check_ids(ids)
        if pooling not in ("mean", "last"):
            raise QwenCpuError(f"unknown pooling {pooling!r} (use 'mean' or 'last')")
        with self._lock:
            net = self._require_open()
            self._cache.clear()
            _, hidden = net.forward(arr, 0, want_logits=False, want_hidden=True)
            self._cache.append(arr.tolist())
            self.n_evaluated += arr.size
        v = hidden.mean(axis=0) if pooling == "mean" else hidden[-1]
        norm = float(np.linalg.norm(v))
        return (v / norm).astype(np.float32) if norm > 0 else v.astype(np.float32)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly ids, reusing the longest cached prefix; returns the last
        position's logits (n_vocab,). Holds the lock only for the call (generate.py holds it longer)."""
        arr = self._check_ids(ids)
        with self._lock:
            net = self._require_open()
            keep = self._cache.reusable_prefix(arr.tolist())
            self._cache.truncate(keep)
            logits, _ = net.forward(arr[keep:], keep)
            self._cache.append(arr[keep:].tolist())
            self.n_evaluated += arr.size - keep
            return logits[0]

    def cached_tokens(self, ids: Sequence[int]) -> int:
        """How many leading ids the KV cache already holds (prefill(ids) computes the rest)."""
        with self._lock:
            return self._cache.reusable_prefix(list(ids))

    def decode_step(self, token: int) -> np.ndarray:
        """Append one token at the next position; returns its logits (n_vocab,)."""
        with self._lock:
            net = self._require_open()
            pos = self._cache.n_past
            if pos >= self.n_ctx:
                raise QwenCpuError(f"the context of {self.n_ctx} tokens is full")
            logits, _ = net.forward(self._check_ids([token]), pos)
            self._cache.append([token])
            self.n_evaluated += 1
            return logits[0]

    @property
    def threads(self) -> int:
        """Compute threads in use."""
        return self._require_open().n_threads

    @property
    def n_past(self) -> int:
        """Tokens currently in the KV cache."""
        return self._cache.n_past

    def reset(self) -> None:
        """Forget the cached context."""
        with self._lock:
            self._cache.clear()

    # ---- generation (generate.py does the work) -----------------------------------------------
    def stream(self, prompt: str | Sequence[int], max_tokens: int = 256, stop: Sequence[str] = (),
               **sampling: Any) -> Iterator["Response"]:
        """Stream the continuation of a plain-text prompt (no chat template; BOS added where the
        vocabulary asks for it) or of token ids: yields generate.Response objects with the new
        text, the token id, speed figures and, last, the finish reason ("stop" or "length").
        sampling: SamplingParams fields (temperature, top_k, top_p, min_p, seed, ...); those not
        given take the model's own defaults (`sampling_defaults`)."""
        from . import generate

        ids = self.tokenize(prompt, add_special=True) if isinstance(prompt, str) else list(prompt)
        return generate.stream(self, ids, max_tokens=max_tokens, params=generate.sampling_params(self, **sampling), stop=stop)

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, stop: Sequence[str] = (),
                 **sampling: Any) -> str:
        """The continuation of a prompt as one string (see stream)."""
        from . import generate

        return generate.generate(self.stream(prompt, max_tokens, stop, **sampling)).text

    def chat(self, messages: Sequence[dict], *, stream: bool = False, tools: Sequence[dict] | None = None,
             max_tokens: int = 512, stop: Sequence[str] = (), **sampling: Any):
        """OpenAI-shaped chat completion. messages: [{"role": ..., "content": ...}, ...], rendered
        with the file's chat template (ChatML if it has none); message content never becomes
        control tokens. Returns a `chat.completion` dict, or with stream=True an iterator of
        `chat.completion.chunk` dicts. The KV cache keeps the conversation, so a follow-up turn
        computes only its new tokens."""
        from . import generate
        from .chat import encode_chat

        ids = encode_chat(self.tokenizer, messages, tools=tools)
        responses = generate.stream(self, ids, max_tokens=max_tokens, params=generate.sampling_params(self, **sampling),
                                    stop=stop)
        if stream:
            return generate.openai_chunks(responses, self.path.name)
        return generate.openai_completion(responses, self.path.name)
