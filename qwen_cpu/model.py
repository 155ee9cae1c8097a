"""A loaded model's engine: the GGUF file's tensors (zero-copy, in the mmap) handed to the C++
forward pass, the KV cache book-keeping and the tokenizer. It knows nothing of generation:
generate.py drives it, and the public `qwen_cpu.Model` (api.py) adds chat/stream/generate on top.

Thread safety: a Model may be shared between threads. Its KV cache has one owner at a time: a
`ModelLease` from `Model.hold()`. A stream holds one from its first step until it ends, is closed
or is collected; every other call that runs the network takes one for its own duration. A call
made while another owner's lease is open waits for it, except on the thread that last used that
lease, where the wait could never end: there it is a QwenCpuError (see `Model.hold`). Leases are
not bound to a thread. The GIL is released while C++ computes, so other Python threads keep running.

Sequences: the KV cache has n_seq slots (`Model.load(..., n_seq=4)`); a lease's `forward_runs`
runs tokens of several slots in one pass (qwen_cpu.scheduler holds a lease for its whole life and
drives it; other calls are refused meanwhile). The single-sequence API (prefill, decode_step,
logits, embed, stream, chat) works on slot 0.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _kernels
from ._malloc import release_free_memory
from .arch import ARCHES, dims, shape_of
from .config import DEFAULT_KV_TYPE, KvType, ModelConfig, check_kv_type, check_rope_scaling, config_from_gguf
from .errors import QwenCpuError
from .gguf import GGUFFile
from .kv_cache import KVCache
from .options import MAX_BATCH, MAX_THREADS, check_int, check_regular_file, check_token_ids


DEFAULT_N_CTX = 4096
MAX_SEQ = 1024  # cache slots (n_seq)


@dataclass
class Run:
    """Tokens of one sequence for `Model.forward_runs`: `tokens` at positions pos, pos+1, ... of
    cache slot `slot` (pos <= the tokens the slot holds: positions from pos on are replaced)."""

    slot: int
    pos: int
    tokens: Sequence[int]
    logits: bool = True  # return the last token's logits
    # Drafted tokens being verified (speculative decoding): every row through the decode kernels, as
    # a decode step of it would be computed, and the logits of every row, (len(tokens), n_vocab).
    verify: bool = False


def check_pooling(pooling: str) -> None:
    if pooling not in ("mean", "last"):
        raise QwenCpuError(f"unknown pooling {pooling!r} (use 'mean' or 'last')")


def pool_states(hidden: np.ndarray, pooling: str = "mean") -> np.ndarray:
    """The embedding of a sequence: its final-norm hidden states (n, n_embd) pooled ('mean', or
    'last' for the last token's) into a unit-length (n_embd,) float32 vector."""
    v = hidden.mean(axis=0) if pooling == "mean" else hidden[-1]
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 0 else v.astype(np.float32)


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


class Engine:
    """A GGUF model of an architecture of arch.py (qwen2, qwen3, llama) ready to run (no
    generation: see api.Model). Build with `Engine.load(path)` (or `qwen_cpu.Model.load`)."""

    def __init__(self, gguf: GGUFFile, config: ModelConfig, n_ctx: int, n_threads: int | None, n_batch: int,
                 kv_type: KvType, repack: bool = True, n_seq: int = 1, huge_pages: bool = True):
        self._file = gguf
        self.config = config
        self.path = Path(gguf.path)
        self.n_ctx = n_ctx
        self.n_seq = n_seq
        self.kv_type = kv_type  # the KV cache's (K, V) element types, e.g. ("f16", "f16")
        # The cache's owner (a ModelLease) and a condition to wait for it. An RLock: a lease that
        # the garbage collector finalizes inside this thread's critical section releases safely.
        # Held weakly: a lease nobody references any more is collected, which releases it.
        self._owner: weakref.ref | None = None
        self._owner_changed = threading.Condition(threading.RLock())
        self._compute = threading.Lock()  # one forward pass at a time; never held across a yield
        self._slots = [KVCache(n_ctx) for _ in range(n_seq)]  # what each cache slot holds
        self._cache = self._slots[0]  # the single-sequence API's slot
        self.n_evaluated = 0  # tokens run through the network since load (prefill + decode)
        tensors = self._tensor_views(gguf, config)
        try:
            # The tensors are views of the file mapping: once a matrix is repacked its pages can go
            # (the OS reads them again if touched).
            kernel_config = config.kernel_config(kv_type, n_ctx=n_ctx, n_batch=n_batch, repack=repack,
                                                 release_repacked_source=True, n_seq=n_seq, huge_pages=huge_pages)
            self._net = _kernels.Model(kernel_config, tensors, n_threads or 0)
        except ValueError as e:
            raise QwenCpuError(f"{self.path.name}: {e}") from None
        except MemoryError:
            raise QwenCpuError(f"{self.path.name}: not enough memory for the buffers of n_ctx={n_ctx}, "
                               f"n_batch={n_batch}") from None
        # (K, V) widths of the Hadamard rotation the cache holds quantized rows in (0: none; csrc/hadamard.h)
        self.kv_rotation = tuple(self._net.kv_rotation)
        self._tokenizer = None
        self._sampling_defaults = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, n_ctx: int | None = None, n_threads: int | None = None,
             n_batch: int = 512, kv_type: str | Sequence[str] = DEFAULT_KV_TYPE, repack: bool = True, n_seq: int = 1,
             rope_scaling: str | None = None, rope_scale: float | None = None, huge_pages: bool = True) -> "Engine":
        """Map a GGUF file and prepare it to run. path: a file, or a Hugging Face reference
        `owner/repo[:quant]` (downloaded into the Hugging Face cache once, see hub.py). Weights are not read or copied here (the OS
        pages them in on first use); only the KV cache for n_ctx positions is allocated (its pages
        are committed as positions fill). The matrices whose type this CPU's decode kernels read
        faster in a repacked layout (csrc/repack.h: Q4_0, Q5_0, Q8_0 and Q4_K on AVX2 and AVX-512, Q4_0
        and Q8_0 on NEON) are copied into it by the first decode step (prefill reads them as
        stored), and their pages in the file mapping released; where the system gives transparent
        huge pages, the other matrices are copied too, as stored, into huge pages.

        n_ctx: context length in tokens (default: the model's training context, at most 4096).
        n_threads: compute threads (default: physical cores). n_batch: prefill step size.
        repack: False keeps every weight in the file mapping as stored (zero-copy), as llama.cpp's
        --no-repack does. huge_pages: the copies in transparent huge pages where the system
        allows it (faster decode; a one-off cost in the first decode step); False keeps 4 KiB pages
        and copies only the repacked matrices.
        n_seq: KV cache slots, the sequences that can run at once (a Scheduler's
        parallel requests); each holds n_ctx positions. kv_type: the KV cache's element type, 'f16',
        'q8_0' (about half the memory and the bytes read per token at depth), 'q4_0' (about a
        quarter) or 'f32', for K and V alike or as a (K, V) pair as llama.cpp's -ctk/-ctv (the
        quantized types need head_dim % 32 == 0). rope_scaling ('none', 'linear' or 'yarn')
        and rope_scale (the factor, e.g. 4) replace the file's RoPE scaling: Qwen2.5 runs beyond
        its 32K training context with rope_scaling='yarn', rope_scale=4 (config.check_rope_scaling).
        """
        if n_ctx is not None:
            n_ctx = check_int("n_ctx", n_ctx, 1, 2**31 - 1)
        if n_threads is not None:
            n_threads = check_int("n_threads", n_threads, 1, MAX_THREADS)
        n_batch = check_int("n_batch", n_batch, 1, MAX_BATCH)
        n_seq = check_int("n_seq", n_seq, 1, MAX_SEQ)
        rope_scaling, rope_scale = check_rope_scaling(rope_scaling, rope_scale)
        kv_type = check_kv_type(kv_type)
        from .hub import resolve_model

        path = resolve_model(path)
        check_regular_file(path)
        gguf = GGUFFile(path)
        try:
            if int(gguf.metadata.get("split.count", 1)) > 1:
                raise QwenCpuError(f"{path}: part {gguf.metadata.get('split.no', 0) + 1} of a GGUF split into "
                                   f"{gguf.metadata['split.count']} files; merge them first (llama.cpp: "
                                   "llama-gguf-split --merge FIRST_PART OUT.gguf)")
            if "token_embd.weight" not in gguf.tensors:
                raise QwenCpuError(f"{path}: missing tensor token_embd.weight")
            n_vocab = gguf.tensors["token_embd.weight"].shape[0]
            config = config_from_gguf(gguf.metadata, n_vocab, rope_scaling, rope_scale)
            _check_ranges(config)
            config.check_kv_heads(kv_type)
            if "tokenizer.ggml.tokens" in gguf.metadata:  # files without a vocabulary run on ids
                from .tokenizer import check_gguf_vocab

                check_gguf_vocab(gguf.metadata, n_vocab)
                gguf.release_metadata_pages()  # read again only if the tokenizer is built
            if n_ctx is None:
                n_ctx = min(config.n_ctx_train, DEFAULT_N_CTX)
            n_batch = min(n_batch, n_ctx)  # a step never holds more tokens than the context
            need = config.kv_cache_bytes(n_ctx, kv_type) * n_seq
            avail = _available_memory()
            if avail is not None and need > avail:
                raise QwenCpuError(
                    f"a context of {n_ctx} tokens{f' in each of {n_seq} slots' if n_seq > 1 else ''} needs "
                    f"{need / 2**20:.0f} MiB of KV cache, but only {avail / 2**20:.0f} MiB of memory is available; "
                    f"use a smaller n_ctx{' or n_seq' if n_seq > 1 else ''}"
                )
            return cls(gguf, config, n_ctx, n_threads, n_batch, kv_type, repack, n_seq, huge_pages)
        except BaseException:
            gguf.close()
            raise

    @staticmethod
    def _tensor_views(gguf: GGUFFile, config: ModelConfig) -> dict[str, tuple[np.ndarray, int, int, int]]:
        """name -> (zero-copy view, ggml type, rows, cols) for every tensor of the file, checked
        against the architecture's table (arch.py): present unless optional, of the shape the
        hyper-parameters give, in a type we have kernels for, and nothing the table lacks."""
        arch = ARCHES[config.arch]
        d = dims(config)
        out = {}
        for name, spec in arch.gguf_names(config.n_layer):
            info = gguf.tensors.get(name)
            if info is None:
                if spec.optional:
                    continue
                raise QwenCpuError(f"{gguf.path}: missing tensor {name} (a {arch.name} model has it)")
            want, shape = shape_of(spec, d), tuple(info.shape)
            if shape != want:
                raise QwenCpuError(f"{gguf.path}: tensor {name} has shape {shape}; this {arch.name} model's "
                                   f"hyper-parameters give {want} ({', '.join(spec.shape)})")
            if _kernels.type_info(int(info.ggml_type)) is None:
                raise QwenCpuError(f"{gguf.path}: {name}: tensor type {info.type_name} ({int(info.ggml_type)}) "
                                   "is not supported (no kernels for it)")
            rows, cols = (1, shape[0]) if len(shape) == 1 else (int(np.prod(shape[:-1])), shape[-1])
            out[name] = (gguf.tensor(name), int(info.ggml_type), rows, cols)
        unknown = [n for n in gguf.tensors if n not in out]
        if unknown:
            raise QwenCpuError(f"{gguf.path}: tensor {unknown[0]} is not part of a {config.n_layer}-block "
                               f"{arch.name} model ({len(unknown)} such tensors); qwen-cpu would ignore it")
        return out

    # ---- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        """Free the KV cache and buffers and unmap the file. The model is unusable afterwards: a
        computation running on another thread finishes first; an open stream's next step raises."""
        with self._compute:
            self._net = None
            if self._file is not None:
                self._file.close()
                self._file = None
            release_free_memory()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _require_open(self) -> Any:
        if self._net is None:
            raise QwenCpuError("the model has been closed")
        return self._net

    # ---- ownership of the cache ---------------------------------------------------------------
    def hold(self) -> "ModelLease":
        """Take the KV cache for a sequence of calls (a generation): returns a ModelLease, whose
        prefill/decode_step run on this model, until `lease.release()` (or the end of a `with`
        block, or the lease being garbage-collected). generate.stream holds one per stream.

        While another lease is open this waits for its release (requests from several threads
        take turns), except when the calling thread is the one that last used that lease (e.g. a
        paused stream on this thread): then nothing could ever release it, and this raises
        QwenCpuError instead of waiting forever. Not re-entrant."""
        me = threading.get_ident()
        with self._owner_changed:
            while (owner := self._owner and self._owner()) is not None:
                if owner.exclusive:
                    raise QwenCpuError(owner.exclusive)
                if owner.thread == me:
                    raise QwenCpuError(
                        "the model is in use by an open stream that this thread last advanced: "
                        "finish it or close() it before another call (waiting here would never end)")
                self._owner_changed.wait()
            lease = ModelLease(self)
            self._owner = weakref.ref(lease)
            return lease

    def _release(self, lease: "ModelLease") -> None:
        with self._owner_changed:
            if self._owner is not None and self._owner() in (lease, None):
                self._owner = None
                self._owner_changed.notify_all()

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
        arr = np.asarray(check_token_ids(ids, self.config.n_vocab), dtype=np.int32)
        if arr.size > self.n_ctx:
            raise QwenCpuError(f"the prompt has {arr.size} tokens but the context holds {self.n_ctx} (n_ctx)")
        return arr

    def _forward_from_empty(self, arr: np.ndarray, **kw) -> tuple:
        """The network on arr (checked ids) from an empty cache, under the compute lock."""
        with self._compute:
            net = self._require_open()
            self._cache.clear()
            out = net.forward(arr, 0, **kw)
            self._cache.append(arr.tolist())
            self.n_evaluated += arr.size
            return out

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), n_vocab) float32 of every position, computed from an empty cache."""
        arr = self._check_ids(ids)
        with self.hold():
            return self._forward_from_empty(arr, all_logits=True)[0]

    def embed(self, text_or_ids: str | Sequence[int], pooling: str = "mean") -> np.ndarray:
        """A unit-length vector (n_embd,) float32: the final-norm hidden states pooled over the
        sequence ('mean', or 'last' for the last token's state)."""
        ids = self.tokenize(text_or_ids) if isinstance(text_or_ids, str) else text_or_ids
        arr = self._check_ids(ids)
        check_pooling(pooling)
        with self.hold():
            _, hidden = self._forward_from_empty(arr, want_logits=False, want_hidden=True)
        return pool_states(hidden, pooling)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly ids, reusing the longest cached prefix; returns the last
        position's logits (n_vocab,). Takes the model for this call only (see hold)."""
        with self.hold() as lease:
            return lease.prefill(ids)

    def cached_tokens(self, ids: Sequence[int]) -> int:
        """How many leading ids the KV cache already holds (prefill(ids) computes the rest)."""
        with self._compute:
            return self._cache.reusable_prefix(list(ids))

    def decode_step(self, token: int) -> np.ndarray:
        """Append one token at the next position; returns its logits (n_vocab,)."""
        with self.hold() as lease:
            return lease.decode_step(token)

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
        with self.hold(), self._compute:
            self._cache.clear()

    def _slot(self, slot: int) -> KVCache:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.n_seq:
            raise QwenCpuError(f"slot {slot!r} is outside 0..{self.n_seq - 1} (n_seq = {self.n_seq})")
        return self._slots[slot]

    # ---- saved sessions (session.py does the work) ---------------------------------------------
    def save_state(self, path: str | os.PathLike, extra: dict | None = None) -> None:
        """Write the KV cache and the tokens it holds (slot 0) to path, with a header naming this
        model file, n_ctx and the KV type; extra: JSON data kept alongside (e.g. the messages)."""
        from .session import save_state

        with self.hold() as lease:
            save_state(lease, path, extra)

    def load_state(self, path: str | os.PathLike) -> dict:
        """Make the KV cache hold what save_state wrote, after checking it belongs to this model
        file, n_ctx and KV type (QwenCpuError otherwise, or for a truncated/corrupt file);
        returns its extra data. The next prompt that starts with its tokens computes only the rest."""
        from .session import load_state

        with self.hold() as lease:
            return load_state(lease, path)


class ModelLease:
    """Exclusive use of a Model's KV cache, from `Model.hold()` until `release()`: `with
    model.hold() as lease: lease.prefill(ids); lease.decode_step(token)`. Not bound to a thread:
    any thread may call it (one at a time) and release it; being collected releases it too."""

    def __init__(self, model: Engine):
        self.model: Engine | None = model
        self.thread = threading.get_ident()  # the thread that last used it (see Model.hold)
        # Set by an owner that keeps the lease for good (a Scheduler): Model.hold then raises this
        # message at once instead of waiting.
        self.exclusive: str | None = None

    def _use(self) -> Engine:
        if self.model is None:
            raise QwenCpuError("this lease of the model has been released")
        self.thread = threading.get_ident()
        return self.model

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Model.prefill under this lease: logits (n_vocab,) of the last of ids."""
        m = self._use()
        arr = m._check_ids(ids)
        with m._compute:
            net = m._require_open()
            keep = m._cache.reusable_prefix(arr.tolist())
            m._cache.truncate(keep)
            logits, _ = net.forward(arr[keep:], keep)
            m._cache.append(arr[keep:].tolist())
            m.n_evaluated += arr.size - keep
            return logits[0]

    def decode_step(self, token: int) -> np.ndarray:
        """Model.decode_step under this lease: logits (n_vocab,) of token at the next position."""
        m = self._use()
        arr = m._check_ids([token])
        with m._compute:
            net = m._require_open()
            pos = m._cache.n_past
            if pos >= m.n_ctx:
                raise QwenCpuError(f"the context of {m.n_ctx} tokens is full")
            logits, _ = net.forward(arr, pos)
            m._cache.append(arr.tolist())
            m.n_evaluated += 1
            return logits[0]

    def verify(self, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens at the next positions in one pass, every row computed exactly as a
        decode_step of it would be (the decode kernels, the weights read once for all rows):
        logits (len(tokens), n_vocab) float32, row i those after tokens[i]. Speculative decoding
        checks drafted tokens with it, then `rollback`s the rejected ones."""
        m = self._use()
        arr = m._check_ids(tokens)
        with m._compute:
            net = m._require_open()
            pos = m._cache.n_past
            if pos + arr.size > m.n_ctx:
                raise QwenCpuError(f"verify: {pos + arr.size} tokens would exceed the context of {m.n_ctx} (n_ctx)")
            logits, _ = net.forward(arr, pos, all_logits=True, alone=True)
            m._cache.append(arr.tolist())
            m.n_evaluated += arr.size
            return logits

    def rollback(self, n_past: int, slot: int = 0) -> None:
        """Forget the positions from n_past on that cache slot `slot` holds (the next tokens
        overwrite them), as if they had never been run."""
        m = self._use()
        cache = m._slot(slot)
        if not 0 <= n_past <= cache.n_past:
            raise QwenCpuError(f"rollback: slot {slot} holds {cache.n_past} positions, not {n_past}")
        with m._compute:
            cache.truncate(n_past)

    # ---- several sequences (qwen_cpu.scheduler drives these) ----------------------------------
    def slot_tokens(self, slot: int) -> list[int]:
        """The token ids cache slot `slot` holds, position by position (a copy)."""
        return list(self._use()._slot(slot).tokens)

    def cached_prefix(self, slot: int, ids: Sequence[int]) -> int:
        """How many leading ids slot `slot` already holds (at most len(ids) - 1: the last prompt
        token is always run again, for its logits)."""
        return self._use()._slot(slot).reusable_prefix(list(ids))

    def copy_slot(self, src: int, dst: int, n_pos: int) -> None:
        """Make slot dst hold slot src's first n_pos positions (keys, values and token ids)."""
        m = self._use()
        source, target = m._slot(src), m._slot(dst)
        if not 0 <= n_pos <= source.n_past:
            raise QwenCpuError(f"copy_slot: slot {src} holds {source.n_past} positions, not {n_pos}")
        with m._compute:
            m._require_open().copy_slot(src, dst, n_pos)
            if src != dst:
                target.clear()
                target.append(source.tokens[:n_pos])

    def read_slot(self, slot: int) -> tuple[list[int], np.ndarray]:
        """(token ids, keys and values) slot `slot` holds: _kernels.Model.read_kv's bytes."""
        m = self._use()
        with m._compute:
            tokens = list(m._slot(slot).tokens)
            return tokens, m._require_open().read_kv(slot, len(tokens))

    def write_slot(self, slot: int, tokens: Sequence[int], kv: np.ndarray) -> None:
        """Make slot `slot` hold tokens (checked ids, at most n_ctx) with their keys and values
        kv (read_slot's layout and size)."""
        m = self._use()
        with m._compute:
            cache = m._slot(slot)
            cache.clear()
            m._require_open().write_kv(slot, len(tokens), kv)
            cache.append(tokens)

    def clear_slot(self, slot: int) -> None:
        """Forget what slot `slot` holds."""
        self._use()._slot(slot).clear()

    def forward_runs(self, runs: Sequence[Run], hidden: bool = False) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
        """Run several sequences' tokens in one pass (at most one Run per slot). Per run returns
        (logits (n_vocab,) of its last token, or (len(tokens), n_vocab) of every token for a
        verify run, or None; hidden (len(tokens), n_embd) final-norm states or None). One-token
        runs (decode steps) and verify runs give exactly the logits a single-sequence decode_step
        gives; longer runs those of a prefill."""
        m = self._use()
        if not runs:
            raise QwenCpuError("forward_runs: no runs")
        tokens, pos, seq, rows, seen, alone = [], [], [], [], set(), []
        for run in runs:
            cache = m._slot(run.slot)
            ids = m._check_ids(run.tokens)
            if run.slot in seen:
                raise QwenCpuError(f"forward_runs: slot {run.slot} has two runs")
            seen.add(run.slot)
            if not 0 <= run.pos <= cache.n_past:
                raise QwenCpuError(f"forward_runs: slot {run.slot} holds {cache.n_past} tokens, a run cannot "
                                   f"start at position {run.pos}")
            if run.pos + ids.size > m.n_ctx:
                raise QwenCpuError(f"forward_runs: slot {run.slot} would hold {run.pos + ids.size} tokens, "
                                   f"the context holds {m.n_ctx} (n_ctx)")
            if run.verify:
                rows.extend(range(len(tokens), len(tokens) + ids.size))
            elif run.logits:
                rows.append(len(tokens) + ids.size - 1)
            alone.extend([run.verify] * ids.size)
            tokens.extend(ids.tolist())
            pos.extend(range(run.pos, run.pos + ids.size))
            seq.extend([run.slot] * ids.size)
        with m._compute:
            net = m._require_open()
            for run in runs:
                m._slots[run.slot].truncate(run.pos)  # what follows is being overwritten
            logits, states = net.forward_batch(np.asarray(tokens, np.int32), np.asarray(pos, np.int32),
                                               np.asarray(seq, np.int32), np.asarray(rows, np.int64), hidden,
                                               np.asarray(alone, np.uint8) if any(alone) else None)
            out, start, row = [], 0, 0
            for run in runs:
                n = len(run.tokens)
                m._slots[run.slot].append(run.tokens)
                lg = None
                if run.verify:
                    lg, row = logits[row:row + n], row + n
                elif run.logits:
                    lg, row = logits[row], row + 1
                out.append((lg, states[start:start + n] if states is not None else None))
                start += n
            m.n_evaluated += len(tokens)
            return out

    def release(self) -> None:
        """Give the cache back (idempotent); the next waiting call proceeds."""
        m, self.model = self.model, None
        if m is not None:
            m._release(self)

    def __enter__(self) -> "ModelLease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
