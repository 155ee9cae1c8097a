"""Resident-memory probes shared by the tests (Linux /proc)."""

from __future__ import annotations

import os


def rss_bytes() -> int:
    """This process's resident set, in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mapping_rss_kib(address: int) -> int | None:
    """Resident KiB of this process's mapping that starts at address (Linux /proc/self/smaps),
    else None. One mapping, not every mapping of the file: other tests may hold the file open."""
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line: start-end perms ...
            inside = int(head[0].split("-")[0], 16) == address
        elif inside and line.startswith("Rss:"):
            return int(head[1])
    return None
