"""Hand freed heap memory back to the OS.

glibc's malloc keeps what is freed inside its heap for reuse, so the temporaries of a big one-off
build (the tokenizer's vocabulary dict and merge list, and the Rust library's own copies while it
builds its maps: ~28 MB for a 152k-token vocabulary) would stay in RSS for the life of the process.
malloc_trim(0) returns the free pages. Other C libraries lack it; then this does nothing.
"""

from __future__ import annotations

import ctypes


def _find_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process already uses
    except (OSError, AttributeError):
        return None


_TRIM = _find_trim()


def release_free_memory() -> None:
    """Return free heap pages to the OS where the C library can (glibc); otherwise a no-op."""
    if _TRIM is not None:
        _TRIM(0)
