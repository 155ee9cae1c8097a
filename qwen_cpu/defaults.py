"""Sampling defaults: the one table of them, and where each setting in force comes from.

A setting is taken from the first of these that has it:

1. what the caller passes (a `chat`/`generate` option, a keyword of `Model.chat/stream/generate`);
2. the model file's `general.sampling.*` keys (llama.cpp's names: temp, top_k, top_p, min_p,
   penalty_repeat, penalty_last_n, and `sequence`, the samplers in use); `qwen-cpu quantize` writes
   them from a checkpoint's generation_config.json (`sampling_keys_from_generation_config`);
3. FAMILIES: the makers' own settings for known model families, for files that carry none;
4. GENERIC: llama.cpp's defaults.

Repetition penalty window: llama.cpp penalises the last `penalty_last_n` tokens (64 by default);
Hugging Face transformers, and so Qwen's and SmolLM2's published settings, penalise every token of
the prompt and of the answer. `penalty_last_n = -1` (WHOLE_CONTEXT) asks for the latter, and
`resolve` turns it into a window as long as the context.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import QwenCpuError

# llama.cpp's defaults (common/common.h), which every model without settings of its own gets.
GENERIC: dict[str, Any] = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.0,
                               presence_penalty=0.0, frequency_penalty=0.0, penalty_window=64)
WHOLE_CONTEXT = -1  # penalty_window: the whole context, prompt and answer (llama.cpp's penalty_last_n = -1)

# general.sampling.<key> -> (SamplingParams field, python type, range check, range text)
FILE_KEYS: dict[str, tuple[str, type, Any, str]] = {
    "temp": ("temperature", float, lambda v: v >= 0, ">= 0"),
    "top_k": ("top_k", int, lambda v: v >= 0, ">= 0"),
    "top_p": ("top_p", float, lambda v: 0 < v <= 1, "in (0, 1]"),
    "min_p": ("min_p", float, lambda v: 0 <= v <= 1, "in [0, 1]"),
    "penalty_repeat": ("repetition_penalty", float, lambda v: v > 0, "> 0"),
    "penalty_last_n": ("penalty_window", int, lambda v: v >= -1, ">= -1"),
}
# llama.cpp's sampler letters for the samplers we have, in the order ours applies them; a sampler
# whose letter a file's `general.sampling.sequence` leaves out is off (these values).
SEQUENCE = "ekpmt"
SEQUENCE_OFF: dict[str, dict[str, Any]] = {
    "e": dict(repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0),
    "k": dict(top_k=0), "p": dict(top_p=1.0), "m": dict(min_p=0.0), "t": dict(temperature=1.0),
}


@dataclass(frozen=True)
class Family:
    """Settings published by a model's makers. `match`: a regex over the file's name fields
    (general.name, basename, finetune, size label and the file name, lower case)."""

    name: str
    where: str  # where the values are published
    match: str
    values: dict[str, Any]
    needs_chat_template: bool = False  # an instruct model recognised by its template


_QWEN25 = dict(temperature=0.7, top_k=20, top_p=0.8, min_p=0.0, penalty_window=WHOLE_CONTEXT)
FAMILIES: tuple[Family, ...] = (
    # Qwen2.5-0.5B/1.5B-Instruct ship repetition_penalty 1.1, the larger sizes 1.05.
    Family("Qwen2.5 Instruct 0.5B/1.5B", "Qwen's generation_config.json",
           r"^(?!.*(coder|math|(?<![a-z])vl(?![a-z])))(?=.*qwen2\.5)(?=.*instruct)(?=.*(?<![\d.])[01]\.5b)",
           {**_QWEN25, "repetition_penalty": 1.1}),
    Family("Qwen2.5 Instruct", "Qwen's generation_config.json", r"^(?!.*(coder|math|(?<![a-z])vl(?![a-z])))(?=.*qwen2\.5)(?=.*instruct)",
           {**_QWEN25, "repetition_penalty": 1.05}),
    # The model card's example call (transformers, so top_k is transformers' default 50).
    Family("SmolLM2 Instruct", "the SmolLM2 model card", r"smollm2",
           dict(temperature=0.2, top_p=0.9, top_k=50, min_p=0.0, repetition_penalty=1.0),
           needs_chat_template=True),
)


@dataclass(frozen=True)
class Defaults:
    """A model's sampling defaults: `values` (SamplingParams field -> value, every field of
    GENERIC), `sources` (field -> where the value comes from), `notes` (keys ignored, and why)."""

    values: dict[str, Any]
    sources: dict[str, str]
    notes: tuple[str, ...] = field(default=())


def _haystack(metadata: Mapping[str, Any], file_name: str) -> str:
    parts = [str(metadata.get(f"general.{k}", "")) for k in ("name", "basename", "finetune", "size_label")]
    return re.sub(r"[\s_]+", "-", " ".join(parts + [file_name]).lower())


def family(metadata: Mapping[str, Any], file_name: str = "") -> Family | None:
    """The first FAMILIES entry the file's name fields match, or None."""
    text = _haystack(metadata, file_name)
    for fam in FAMILIES:
        if fam.needs_chat_template and not ("instruct" in text or metadata.get("tokenizer.chat_template")):
            continue
        if re.search(fam.match, text):
            return fam
    return None


def _file_value(key: str, raw: Any) -> tuple[str, Any]:
    """(field, value) of general.sampling.<key>; raises ValueError naming the problem."""
    name, kind, ok, allowed = FILE_KEYS[key]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise ValueError(f"not a number: {raw!r}")
    if kind is int and raw != int(raw):
        raise ValueError(f"{raw} is not an integer")
    value = kind(raw)
    if not ok(value):
        raise ValueError(f"{value} is out of range ({allowed})")
    return name, value


def model_defaults(metadata: Mapping[str, Any], file_name: str = "") -> Defaults:
    """The sampling defaults of a model file, from its metadata (and its name). A general.sampling
    key with a bad value is ignored and named in `notes` (the model still runs)."""
    fam = family(metadata, file_name)
    values, sources = dict(GENERIC), {k: "generic (llama.cpp's default)" for k in GENERIC}
    if fam is not None:
        for k, v in fam.values.items():
            values[k], sources[k] = v, f"{fam.name} ({fam.where})"
    notes = []
    for key in FILE_KEYS:
        full = f"general.sampling.{key}"
        if full in metadata:
            try:
                name, value = _file_value(key, metadata[full])
            except ValueError as e:
                notes.append(f"{full} ignored: {e}")
                continue
            values[name], sources[name] = value, f"file ({full})"
    seq = metadata.get("general.sampling.sequence")
    if isinstance(seq, str) and seq:
        for letter in SEQUENCE:
            if letter not in seq:
                for k, v in SEQUENCE_OFF[letter].items():
                    values[k], sources[k] = v, f"file (general.sampling.sequence {seq!r}: off)"
        ours = [c for c in seq if c in SEQUENCE]
        if ours != sorted(ours, key=SEQUENCE.index):
            notes.append(f"general.sampling.sequence {seq!r}: the samplers run in the fixed order "
                         "penalties, top-k, top-p, min-p, temperature")
    return Defaults(values, sources, tuple(notes))


def resolve(defaults: Defaults | None, overrides: Mapping[str, Any], n_ctx: int | None = None
            ) -> tuple[dict[str, Any], dict[str, str]]:
    """(SamplingParams keyword arguments, field -> source): the overrides that are not None over
    the defaults (GENERIC when None). penalty_window WHOLE_CONTEXT becomes n_ctx (without a
    context length: 2**31 - 1, longer than any history)."""
    defaults = defaults or model_defaults({})
    values, sources = dict(defaults.values), dict(defaults.sources)
    for k, v in overrides.items():
        if v is not None:
            values[k], sources[k] = v, "given"
    if values.get("penalty_window") == WHOLE_CONTEXT:
        values["penalty_window"] = n_ctx if n_ctx else 2**31 - 1
    return values, sources


def describe(defaults: Defaults) -> list[tuple[str, str, str]]:
    """Rows (setting, value, source) for `qwen-cpu info`."""
    rows = []
    for k in GENERIC:
        v = defaults.values[k]
        text = "whole context (prompt + answer)" if k == "penalty_window" and v == WHOLE_CONTEXT else f"{v:g}"
        rows.append((k, text, defaults.sources[k]))
    return rows


# ---- generation_config.json -> general.sampling.* (for `qwen-cpu quantize`) -------------------

def sampling_keys_from_generation_config(folder: str | Path) -> dict[str, int | float]:
    """general.sampling.<key> -> value from a checkpoint's generation_config.json ({} without one).

    temperature -> temp, top_k, top_p, min_p, repetition_penalty -> penalty_repeat with
    penalty_last_n = -1 (transformers penalises the whole sequence); "do_sample": false (greedy)
    -> temp = 0. Keys the file leaves out are not written (the reader's defaults apply)."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QwenCpuError(f"{path}: not readable JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise QwenCpuError(f"{path}: expected a JSON object")
    hf = {"temperature": "temp", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
          "repetition_penalty": "penalty_repeat"}
    out: dict[str, int | float] = {}
    for src, key in hf.items():
        if cfg.get(src) is not None:
            try:
                out[key] = _file_value(key, cfg[src])[1]
            except ValueError as e:
                raise QwenCpuError(f"{path}: {src}: {e}") from None
    if "penalty_repeat" in out:
        out["penalty_last_n"] = WHOLE_CONTEXT
    if cfg.get("do_sample") is False:
        out["temp"] = 0.0
    return out


def add_sampling_metadata(writer: Any, folder: str | Path) -> None:
    """Write general.sampling.* from folder's generation_config.json into a gguf.GGUFWriter."""
    for key, value in sampling_keys_from_generation_config(folder).items():
        if FILE_KEYS[key][1] is int:
            writer.add_int32(f"general.sampling.{key}", int(value))
        else:
            writer.add_float32(f"general.sampling.{key}", float(value))
