"""Progress bars for long work (downloads, quantization, a long prompt's prefill): a line on stderr
with the rate and the time left, drawn only when stderr is a terminal. On a pipe, in a log, or when
the caller turns it off (`--json`), nothing is written."""

from __future__ import annotations

import sys

from tqdm import tqdm

_enabled = True  # False: no bar anywhere in this process (the CLI's --json)


def disable() -> None:
    """Draw no bar in this process from now on."""
    global _enabled
    _enabled = False


def active() -> bool:
    """True when a bar would be drawn: stderr is a terminal and bars are not disabled."""
    return _enabled and sys.stderr.isatty()


class Bar(tqdm):
    """A tqdm bar on stderr that is disabled unless `active()`; it takes tqdm's arguments (total,
    desc, unit, unit_scale, initial), so huggingface_hub can draw its downloads with it
    (`tqdm_class=Bar`). Use as a context manager; `update(n)` advances it."""

    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)  # huggingface_hub's own bar class takes a group name
        kwargs["disable"] = kwargs.get("disable", False) or not active()
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("leave", False)
        kwargs.setdefault("dynamic_ncols", True)
        super().__init__(*args, **kwargs)


def bar(total: float, desc: str, unit: str = "it", unit_scale: bool = False) -> Bar:
    """A progress bar for `total` units of work (see Bar)."""
    return Bar(total=total, desc=desc, unit=unit, unit_scale=unit_scale)
