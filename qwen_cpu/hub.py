"""Models by name: a Hugging Face reference `owner/repo[:quant]` resolved to a GGUF file in the
standard Hugging Face cache (downloaded once, reused afterwards, offline too), and the cache's GGUF
files listed and removed.

Resolution: the repository's file list (huggingface_hub's model_info) gives its GGUF files; the
quant tag picks one, case-insensitively: first a file whose name has the tag as a whole part
(between `-`, `.` or `/`: `q4_k_m` in `qwen2.5-0.5b-instruct-q4_k_m.gguf`, not in `...-q4_k_m_l`),
else a file whose name contains it. No tag: the only GGUF file, else the Q4_K_M one (llama.cpp's
choice). None or several: an error listing the repository's GGUF files. A model split into
`-0000i-of-0000n.gguf` parts is refused (qwen-cpu maps one file; merge the parts with llama.cpp's
llama-gguf-split). When the hub cannot be reached (no network, HF_HUB_OFFLINE=1) the same choice is
made among the cached files of the repository's `main` revision.

huggingface_hub reads HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_HUB_OFFLINE and HF_TOKEN as usual.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import QwenCpuError

_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?::(?P<quant>[\w.+-]+))?$")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT = re.compile(r"(?<![a-z0-9])(i?q\d+(?:_[a-z0-9]+)*|bf16|f16|f32)(?![a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Ref:
    repo: str                 # owner/name
    quant: str | None         # the tag after ':' (None: not given)

    def __str__(self) -> str:
        return self.repo + (f":{self.quant}" if self.quant else "")


@dataclass(frozen=True)
class CachedModel:
    """A GGUF file in the Hugging Face cache."""

    repo: str
    file: str        # path inside the repository
    size: int        # bytes
    path: Path       # the file in the cache's snapshot folder (a link to `blob`)
    blob: Path

    @property
    def ref(self) -> str:
        return f"{self.repo}:{quant_of(self.file) or self.file}"


def parse_ref(text: str) -> Ref | None:
    """The reference `owner/repo[:quant]` in text, or None if text is not one (a path-like string:
    absolute, ./, ~, several slashes, or ending in .gguf)."""
    if text.startswith(("/", ".", "~")) or text.lower().endswith(".gguf") or text.count("/") != 1:
        return None
    m = _REF.match(text)
    return Ref(m["repo"], m["quant"]) if m else None


def quant_of(file: str) -> str | None:
    """The quant tag in a GGUF file name (`Q4_K_M` in `Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`), or None."""
    stem = _SPLIT.sub("", file.rsplit("/", 1)[-1])
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    found = _QUANT.findall(stem)
    return found[-1] if found else None


def resolve_model(model: str | os.PathLike) -> Path:
    """The GGUF file MODEL names: an existing file as it is, else a reference resolved (and
    downloaded into the cache if needed). Raises QwenCpuError with one clear line otherwise."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise QwenCpuError(f"{text}: is a folder, not a GGUF file")
    if path.exists():  # a FIFO, a device: open() could wait forever
        raise QwenCpuError(f"{text}: not a regular file")
    ref = parse_ref(text)
    if ref is None:
        raise QwenCpuError(f"{text}: no such file (nor a Hugging Face reference owner/repo[:quant])")
    return pull(ref)


def pull(ref: Ref | str) -> Path:
    """The cached GGUF file of ref, downloaded first if it is not in the cache (a progress bar on
    a terminal). Offline, or with the hub unreachable, the cached copy is used."""
    ref = _as_ref(ref)
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return _from_cache(ref, "HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(ref.repo, files_metadata=True)
        files = {s.rfilename: s.size or 0 for s in info.siblings or []}
        name = _pick(ref, files)
        from .progress import Bar

        return Path(hf_hub_download(ref.repo, name, tqdm_class=Bar))
    except GatedRepoError:
        raise QwenCpuError(f"{ref}: the repository {ref.repo} is gated: accept its terms on huggingface.co "
                           "and log in (hf auth login, or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise QwenCpuError(f"{ref}: no such file, nor a repository {ref.repo} on Hugging Face (if it is "
                           "private: log in with hf auth login, or set HF_TOKEN)") from None
    except QwenCpuError:
        raise
    except Exception as e:  # noqa: BLE001 - network and server errors: the cache may still have it
        if isinstance(e, OSError) and e.errno is not None and not isinstance(e, ConnectionError):
            # the cache folder itself (no space, no permission): not a network error
            where = f"{e.filename}: " if e.filename else ""
            raise QwenCpuError(f"{ref}: writing the Hugging Face cache failed: {where}{e.strerror or e}") from None
        return _from_cache(ref, f"the hub cannot be reached ({_first_line(e)})")


def cached_models(repo: str | None = None) -> list[CachedModel]:
    """The GGUF files in the Hugging Face cache (of one repository if given), by repository and name."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    out, seen = [], set()
    for r in cache.repos:
        if r.repo_type != "model" or (repo is not None and r.repo_id.lower() != repo.lower()):
            continue
        for rev in sorted(r.revisions, key=lambda v: "main" not in v.refs):  # main's files first
            for f in rev.files:
                rel = f.file_path.relative_to(rev.snapshot_path).as_posix()
                if rel.lower().endswith(".gguf") and (r.repo_id, rel) not in seen:
                    seen.add((r.repo_id, rel))
                    out.append(CachedModel(r.repo_id, rel, f.size_on_disk, f.file_path, f.blob_path))
    return sorted(out, key=lambda c: (c.repo.lower(), c.file.lower()))


def remove(ref: Ref | str) -> list[CachedModel]:
    """Delete ref's cached GGUF file (every revision's copy, and its data unless another cached
    file shares it); the repository's cache folder goes when nothing is left in it. Returns what
    was removed."""
    ref = _as_ref(ref)
    cached = cached_models(ref.repo)
    name = _pick(ref, {c.file: c.size for c in cached}, where="in the cache")
    gone = [c for c in cached if c.file == name]
    keep_blobs = {c.blob for c in cached if c.file != name}
    from huggingface_hub import scan_cache_dir

    repo_dir = next(r.repo_path for r in scan_cache_dir().repos
                    if r.repo_type == "model" and r.repo_id.lower() == ref.repo.lower())
    for c in gone:
        c.path.unlink(missing_ok=True)
        if c.blob not in keep_blobs:
            c.blob.unlink(missing_ok=True)
    snapshots = repo_dir / "snapshots"
    if not any(p.is_file() for p in snapshots.rglob("*")):
        shutil.rmtree(repo_dir)
    return gone


# ---- choosing a file ---------------------------------------------------------------------------

def _as_ref(ref: Ref | str) -> Ref:
    if isinstance(ref, Ref):
        return ref
    parsed = parse_ref(ref)
    if parsed is None:
        raise QwenCpuError(f"{ref}: not a Hugging Face reference (owner/repo[:quant])")
    return parsed


def _parts(name: str) -> list[str]:
    return re.split(r"[-./]", name.lower()[:-5] if name.lower().endswith(".gguf") else name.lower())


def _has_part_run(name: str, tag: str) -> bool:
    words, want = _parts(_SPLIT.sub(".gguf", name)), _parts(tag)
    return any(words[i:i + len(want)] == want for i in range(len(words) - len(want) + 1))


def _pick(ref: Ref, files: dict[str, int], where: str = "on Hugging Face") -> str:
    """The one GGUF file (path in the repository) of `files` (path -> size) that ref names."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    # a split model is one choice: its parts grouped under the first one's name
    models: dict[str, list[str]] = {}
    for f in ggufs:
        models.setdefault(_SPLIT.sub("", f), []).append(f)
    listing = ", ".join(f"{v[0]}" + (f" (+{len(v) - 1} parts)" if len(v) > 1 else "") for v in models.values())
    if not models:
        raise QwenCpuError(f"{ref}: the repository {ref.repo} has no GGUF files {where}")
    if ref.quant is None:
        hits = list(models) if len(models) == 1 else [m for m in models if (quant_of(m) or "").lower() == "q4_k_m"]
        if len(hits) != 1:
            raise QwenCpuError(f"{ref}: {ref.repo} has {len(models)} GGUF models {where}; name one with "
                               f"{ref.repo}:QUANT (e.g. :{quant_of(next(iter(models))) or 'q4_k_m'}): {listing}")
    else:
        hits = [m for m in models if _has_part_run(m, ref.quant)]
        hits = hits or [m for m in models if ref.quant.lower() in m.lower()]
        if not hits:
            raise QwenCpuError(f"{ref}: no GGUF file in {ref.repo} matches {ref.quant!r} {where}; "
                               f"its GGUF files: {listing}")
        if len(hits) > 1:
            raise QwenCpuError(f"{ref}: {ref.quant!r} matches {len(hits)} GGUF files in {ref.repo}: "
                               f"{', '.join(hits)}; give a tag that names one")
    parts = models[hits[0]]
    if len(parts) > 1 or _SPLIT.search(parts[0]):
        raise QwenCpuError(f"{ref}: {parts[0]} is split into {len(parts)} files; qwen-cpu loads one-file GGUFs: "
                           "download the parts and merge them with llama.cpp's llama-gguf-split --merge")
    return parts[0]


def _from_cache(ref: Ref, why: str) -> Path:
    """ref resolved among the cached files (when the hub cannot be asked: `why`)."""
    cached = cached_models(ref.repo)
    if not cached:
        from huggingface_hub import constants

        raise QwenCpuError(f"{ref}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}")
    name = _pick(ref, {c.file: c.size for c in cached}, where="in the cache")
    return next(c.path for c in cached if c.file == name)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
