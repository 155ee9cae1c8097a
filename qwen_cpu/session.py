"""Saved sessions: a model's KV cache (slot 0) and the tokens it holds, written to a file and read
back, so that a conversation resumes without computing its past again (`Model.save_state`,
`Model.load_state`, `qwen-cpu chat --session FILE`).

File layout (little-endian):

    magic  b"QWENCPU-KV\\0\\0"   12 bytes
    header_bytes u32, then the header: UTF-8 JSON, an object with
        format 3; model {file, size, digest}: the model file's name, size and a digest of its
        first 8 MiB and 64 samples of the rest (model_identity); rope: the RoPE parameters in force (keys are
        stored rotated); n_ctx; kv_type: [K type, V type] ("f16", "q8_0", "q4_0" or "f32");
        kv_rotation: [K, V] widths of the Hadamard rotation of the stored rows (0: none; the
        model's kv_rotation); n_layer, n_kv_head, head_dim; n_pos: positions held; payload_digest: blake2b of the
        payload; extra: the caller's JSON data (e.g. the conversation's messages)
    payload: n_pos token ids (int32), then the keys and values as the cache stores them, quantized
        rows included (_kernels.Model.read_kv layout)

Reading checks everything before the cache is touched: a file of another model, n_ctx, KV type,
KV rotation or RoPE setting is refused by name (format 2, without kv_rotation, came before quantized
rows were rotated: it is read as unrotated, so its float caches still load); a truncated, padded or altered file (sizes, digest) or one whose
header is not what we write is a QwenCpuError, never a crash or an oversized allocation.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .errors import QwenCpuError
from .options import check_regular_file, check_token_ids

MAGIC = b"QWENCPU-KV\0\0"
FORMAT = 3  # 3: kv_rotation (format 2 had none: its rows are unrotated); 2: kv_type names K's and V's types
MAX_HEADER = 64 << 20  # bytes of JSON header (the extra data included)
_HEAD_BYTES, _SAMPLES, _SAMPLE_BYTES = 8 << 20, 64, 4096


def model_identity(model) -> dict[str, Any]:
    """{file, size, digest} of the model's GGUF file: blake2b of its first 8 MiB (the metadata
    and tensor table of any file we know) and of 64 evenly spaced 4 KiB samples of the whole
    file, so that two files with the same metadata but other weights (fine-tunes) differ,
    without reading gigabytes."""
    path = Path(model.path)
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h.update(f.read(_HEAD_BYTES))
            span = max(size - _SAMPLE_BYTES, 0)
            for i in range(_SAMPLES):
                f.seek(span * i // (_SAMPLES - 1))
                h.update(f.read(_SAMPLE_BYTES))
    except OSError as e:
        raise QwenCpuError(f"{path}: cannot read the model file to identify it: {e.strerror or e}") from None
    return {"file": path.name, "size": size, "digest": h.hexdigest()}


def _payload_digest(toks: bytes, kv) -> str:
    """blake2b (hex) of the payload: the token ids' bytes, then the cache's."""
    h = hashlib.blake2b(toks, digest_size=16)
    h.update(memoryview(kv))
    return h.hexdigest()


def _rope(model) -> dict[str, Any]:
    return {k: v for k, v in asdict(model.config).items() if k.startswith("rope_")}


def _geometry(model) -> dict[str, int]:
    c = model.config
    return {"n_layer": c.n_layer, "n_kv_head": c.n_kv_head, "head_dim": c.head_dim}


def save_state(lease, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write slot 0 of the lease's model to path (atomically: a temporary file, then renamed)."""
    model = lease.model
    tokens, kv = lease.read_slot(0)
    toks = np.asarray(tokens, dtype="<i4").tobytes()
    header = {"format": FORMAT, "model": model_identity(model), "rope": _rope(model), "n_ctx": model.n_ctx,
              "kv_type": list(model.kv_type), "kv_rotation": list(model.kv_rotation), **_geometry(model), "n_pos": len(tokens),
              "payload_digest": _payload_digest(toks, kv), "extra": extra if extra is not None else {}}
    try:
        text = json.dumps(header, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise QwenCpuError(f"save_state: extra must be JSON data: {e}") from None
    if len(text) > MAX_HEADER:
        raise QwenCpuError(f"save_state: the header with its extra data takes {len(text)} bytes (at most {MAX_HEADER})")
    tmp = Path(f"{os.fspath(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(text)) + text)
            f.write(toks)
            f.write(memoryview(kv))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise QwenCpuError(f"save_state: cannot write {path}: {e.strerror or e}") from None


def _refuse(path, why: str) -> QwenCpuError:
    return QwenCpuError(f"{path}: not a usable saved session: {why}")


def _check_int(header: dict, key: str, path) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _refuse(path, f"header field {key!r} is {value!r}")
    return value


def load_state(lease, path: str | os.PathLike) -> dict:
    """Check the file at path against the lease's model and load it into slot 0; returns extra."""
    model = lease.model
    check_regular_file(path, "saved session")  # (a FIFO would block open())
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(len(MAGIC) + 4)
            if len(head) < len(MAGIC) + 4 or head[:len(MAGIC)] != MAGIC:
                raise _refuse(path, "it does not start with the session magic (not written by save_state)")
            (n_header,) = struct.unpack("<I", head[len(MAGIC):])
            if n_header > min(MAX_HEADER, size - len(head)):
                raise _refuse(path, f"the header claims {n_header} bytes, the file is truncated or corrupt")
            try:
                header = json.loads(f.read(n_header).decode())
            except (UnicodeDecodeError, ValueError, RecursionError) as e:
                raise _refuse(path, f"the header is not valid JSON ({type(e).__name__})") from None
            if not isinstance(header, dict) or header.get("format") not in (2, FORMAT):
                fmt = header.get("format") if isinstance(header, dict) else header
                raise _refuse(path, f"format {fmt!r}, this version reads formats 2 and {FORMAT}"
                                    f"{' (format 1 came from an older qwen-cpu: save the session again)' if fmt == 1 else ''}")
            _check_header(header, model, path)
            n_pos = header["n_pos"]
            kv_bytes = model.config.kv_cache_bytes(n_pos, model.kv_type)
            want = len(head) + n_header + 4 * n_pos + kv_bytes
            if size != want:
                raise _refuse(path, f"{size} bytes where the header implies {want} (truncated or corrupt)")
            toks = np.frombuffer(f.read(4 * n_pos), dtype="<i4")
            kv = np.frombuffer(f.read(kv_bytes), dtype=np.uint8)
    except OSError as e:
        raise QwenCpuError(f"{path}: {e.strerror or e}") from None
    if _payload_digest(toks.tobytes(), kv) != header.get("payload_digest"):
        raise _refuse(path, "the cached keys, values or tokens do not match their digest (corrupt)")
    try:
        tokens = check_token_ids(toks.tolist(), model.config.n_vocab, "saved tokens")
    except QwenCpuError as e:
        raise _refuse(path, str(e)) from None
    lease.write_slot(0, tokens, kv)
    extra = header.get("extra")
    return extra if isinstance(extra, dict) else {}


def _check_header(header: dict, model, path) -> None:
    """Refuse a header written for another model file, context, KV type, RoPE or shape."""
    ident = model_identity(model)
    saved = header.get("model")
    # (the file's name only informs: a renamed or moved copy of the same file is the same model)
    if not isinstance(saved, dict) or (saved.get("size"), saved.get("digest")) != (ident["size"], ident["digest"]):
        name = saved.get("file") if isinstance(saved, dict) else saved
        raise _refuse(path, f"it was saved with another model file ({name!r}), this is {ident['file']!r}")
    if header.get("rope") != _rope(model):
        raise _refuse(path, "it was saved with other RoPE settings (rope_scaling / rope_scale)")
    saved = header.get("kv_type")
    if saved != list(model.kv_type):
        shown = "/".join(saved) if isinstance(saved, list) and all(isinstance(x, str) for x in saved) else repr(saved)
        raise _refuse(path, f"its KV cache types (K/V) are {shown}, this model's are {'/'.join(model.kv_type)} "
                            "(load the model with the session's kv_type to resume it)")
    saved = header.get("kv_rotation", [0, 0]) if header["format"] == 2 else header.get("kv_rotation")
    if saved != list(model.kv_rotation):
        if header["format"] == 2:
            raise _refuse(path, "format 2 came from an older qwen-cpu, whose quantized KV cache rows were not "
                                "rotated as this version's are: save the session again")
        raise _refuse(path, f"its KV cache rows are rotated by Hadamard widths (K, V) {saved!r}, this model's by "
                            f"{list(model.kv_rotation)} (QWEN_CPU_KV_ROTATION differs?)")
    n_ctx = _check_int(header, "n_ctx", path)
    if n_ctx != model.n_ctx:
        raise _refuse(path, f"it was saved with n_ctx {n_ctx}, this model has n_ctx {model.n_ctx}")
    for key, value in _geometry(model).items():
        if _check_int(header, key, path) != value:
            raise _refuse(path, f"its {key} is {header[key]}, this model's is {value}")
    if _check_int(header, "n_pos", path) > model.n_ctx:
        raise _refuse(path, f"it holds {header['n_pos']} positions, more than n_ctx {model.n_ctx}")
    if not isinstance(header.get("payload_digest"), str):
        raise _refuse(path, "the header has no payload digest")
