"""Writing the GGUF file: gguf-py's GGUFWriter for the header, metadata and tensor infos, then each
tensor converted and written chunk by chunk, into a temporary file renamed when complete."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import QwenCpuError
from ..progress import Bar
from .recipes import type_name
from .source import SourceTensor


class _Streamed:
    """A tensor for GGUFWriter.write_tensor_data that writes itself chunk by chunk (tofile)."""

    def __init__(self, nbytes: int, chunks: Iterator[np.ndarray]):
        self.nbytes = nbytes
        self._chunks = chunks

    def tofile(self, fout: Any) -> None:
        written = 0
        for c in self._chunks:
            fout.write(memoryview(np.ascontiguousarray(c)).cast("B"))
            written += c.nbytes
        if written != self.nbytes:
            raise QwenCpuError(f"internal error: wrote {written} bytes of a {self.nbytes}-byte tensor")


_CHUNK_ELEMS = 1 << 22  # 4 Mi elements (16 MiB of float32) per conversion step


def _chunks(t: SourceTensor, n_threads: int) -> Iterator[np.ndarray]:
    from .. import _kernels

    n_rows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
    n_per_row = t.shape[-1]
    if len(t.shape) == 1:  # a vector: one "row"
        if t.raw_rows is not None and t.raw_type == t.out_type:
            yield np.ascontiguousarray(t.raw_rows(0, n_per_row)).view(np.uint8)
        else:
            yield _kernels.quantize(t.out_type, t.read_rows(0, n_per_row).reshape(1, -1), n_threads)
        return
    step = max(1, _CHUNK_ELEMS // n_per_row)
    step = max(t.row_align, step // t.row_align * t.row_align)
    for a in range(0, n_rows, step):
        b = min(n_rows, a + step)
        if t.raw_rows is not None and t.raw_type == t.out_type:
            yield np.ascontiguousarray(t.raw_rows(a, b)).view(np.uint8)
        else:
            x = t.read_rows(a, b).reshape(b - a, n_per_row)
            yield _kernels.quantize(t.out_type, x, n_threads)


def write_gguf(w: Any, tensors: list[SourceTensor], dst: Path, progress: bool, n_threads: int) -> int:
    """Write w's header and the tensors' data to dst (atomically); returns the file size."""
    t_start = time.perf_counter()
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the model private to its writer
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        n = len(tensors)
        bar = Bar(total=sum(t.nbytes for t in tensors), desc=dst.name, unit="B", unit_scale=True,
                  disable=not progress)  # drawn on a terminal only
        for i, t in enumerate(tensors):
            t0 = time.perf_counter()
            w.write_tensor_data(_Streamed(t.nbytes, _chunks(t, n_threads)))
            t.release()
            bar.update(t.nbytes)
            if progress:
                shape = "x".join(str(d) for d in t.shape)
                bar.write(f"[{i + 1:4d}/{n}] {t.name:<28} {shape:>12} {t.src_type:>5} -> {type_name(t.out_type):<5}"
                          f" {t.nbytes / 2**20:9.2f} MiB {time.perf_counter() - t0:6.2f} s", file=sys.stderr)
        bar.close()
        w.close()
        with open(tmp, "r+b") as fh:  # on disk before the rename makes it the model
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except OSError as e:
        _discard(w, tmp)
        raise QwenCpuError(f"{dst}: writing failed: {e.strerror or e}") from e
    except BaseException:
        _discard(w, tmp)
        raise
    size = dst.stat().st_size
    if progress:
        print(f"wrote {dst} ({size / 2**20:.1f} MiB, {time.perf_counter() - t_start:.1f} s)", file=sys.stderr)
    return size


def _discard(w: Any, tmp: Path) -> None:
    try:
        w.close()
    except Exception:  # noqa: BLE001 - the original error matters, not this one
        pass
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass

