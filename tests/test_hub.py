"""Model references (qwen_cpu/hub.py) end to end: the real huggingface_hub client, run by the
`qwen-cpu` command line in subprocesses, against a loopback HTTP server started here that answers
the Hub's API for a few test repositories (tests/_fakehub.py; HF_ENDPOINT points at it, HF_HOME at a
fresh folder); then the cache is used with the server gone and with HF_HUB_OFFLINE=1."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _checkpoints import make_gguf
from _fakehub import FakeHub
from _helpers import CWD, PYTHONPATH

from qwen_cpu.errors import QwenCpuError
from qwen_cpu.hub import Ref, _pick, parse_ref, quant_of



@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, bytes]:
    """Two small real models (random weights, a byte-level tokenizer) as GGUF bytes; the Q8_0 one
    carries general.sampling.* from a generation_config.json."""
    d = tmp_path_factory.mktemp("hub-models")
    q8 = make_gguf(d / "a", "q8_0", generation_config={"temperature": 0.6, "top_k": 30})
    f16 = make_gguf(d / "b", "f16")
    return {"q8_0": q8.read_bytes(), "f16": f16.read_bytes()}


@pytest.fixture
def hub(models):
    server = FakeHub({
        "test-org/Tiny-GGUF": {"README.md": b"# tiny\n", "tiny-Q8_0.gguf": models["q8_0"],
                               "tiny-F16.gguf": models["f16"]},
        "test-org/Several": {"m-q4_k_m.gguf": b"GGUF", "m-q4_k_s.gguf": b"GGUF"},
        "test-org/Split": {"big-q4_k_m-00001-of-00002.gguf": b"GGUF", "big-q4_k_m-00002-of-00002.gguf": b"GGUF"},
        "test-org/NoGGUF": {"config.json": b"{}"},
    })
    yield server
    server.close()


def blob(hf_home: Path, sha256: str) -> Path:
    return hf_home / "hub" / "models--test-org--Tiny-GGUF" / "blobs" / sha256


def cli(hf_home: Path, endpoint: str, *args, offline: bool = False):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint,
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HUB_ETAG_TIMEOUT": "5"}
    env.pop("HF_TOKEN", None)
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    env["HF_HUB_OFFLINE"] = "1" if offline else "0"
    return subprocess.run([sys.executable, "-m", "qwen_cpu.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=CWD, env=env)


def test_pull_run_list_offline_and_rm(hub, models, tmp_path):
    home, ref = tmp_path / "hf", "test-org/Tiny-GGUF:q8_0"
    p = cli(home, hub.url, "pull", ref)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""  # no progress bar on a pipe
    path = Path(p.stdout.split(" (")[0])
    snapshot = home / "hub" / "models--test-org--Tiny-GGUF" / "snapshots" / hub.sha["test-org/Tiny-GGUF"]
    assert path == snapshot / "tiny-Q8_0.gguf" and path.read_bytes() == models["q8_0"]
    assert ("GET", "/api/models/test-org/Tiny-GGUF") in hub.requests
    assert ("HEAD", "/test-org/Tiny-GGUF/resolve/main/tiny-Q8_0.gguf") in hub.requests
    sha256 = hashlib.sha256(models["q8_0"]).hexdigest()
    assert ("GET", f"/cdn/{sha256}") in hub.requests  # the bytes from the CDN the hub redirected to
    assert blob(home, sha256).read_bytes() == models["q8_0"]  # stored under its sha256, as the Hub's client does
    assert sum(r[0] == "GET" and r[1].startswith("/cdn/") for r in hub.requests) == 1  # only the chosen file

    # a cached file is not downloaded again; the Python API and --json take the reference too
    hub.requests.clear()
    out = cli(home, hub.url, "generate", "test-org/Tiny-GGUF:Q8_0", "hello", "-n", "3", "--json", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["usage"]["completion_tokens"] <= 3
    assert not any(r[1].startswith("/cdn/") for r in hub.requests)

    listing = cli(home, hub.url, "list").stdout.splitlines()
    assert listing[0].split() == ["NAME", "QUANT", "SIZE", "PATH"]
    assert listing[1].split()[0:2] == ["test-org/Tiny-GGUF:Q8_0", "Q8_0"] and listing[1].endswith(str(path))

    # the hub gone: offline mode, and a network error without it, both use the cache
    hub.close()
    for offline in (True, False):
        info = cli(home, hub.url, "info", ref, offline=offline)
        assert info.returncode == 0, info.stderr
        assert str(path) in info.stdout and "0.6" in info.stdout and "file (general.sampling.temp)" in info.stdout
    # ... but cannot invent what was never downloaded
    p = cli(home, hub.url, "info", "test-org/Tiny-GGUF:f16", offline=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "no GGUF file in test-org/Tiny-GGUF matches 'f16' in the cache" in p.stderr
    p = cli(home, hub.url, "chat", "other/repo:q4_0", offline=True)
    assert p.returncode == 1 and "not in the Hugging Face cache" in p.stderr and "HF_HUB_OFFLINE" in p.stderr

    rm = cli(home, hub.url, "rm", ref, offline=True)
    assert rm.returncode == 0, rm.stderr
    assert "removed test-org/Tiny-GGUF/tiny-Q8_0.gguf" in rm.stdout
    assert not (home / "hub" / "models--test-org--Tiny-GGUF").exists()
    p = cli(home, hub.url, "list", offline=True)
    assert p.stdout == "" and "no GGUF models in the Hugging Face cache" in p.stderr


@pytest.mark.parametrize("ref, message", [
    ("test-org/Tiny-GGUF:q4_k_m", "no GGUF file in test-org/Tiny-GGUF matches 'q4_k_m' on Hugging Face; "
                                  "its GGUF files: tiny-F16.gguf, tiny-Q8_0.gguf"),
    ("test-org/Tiny-GGUF", "test-org/Tiny-GGUF has 2 GGUF models on Hugging Face; name one with"),
    ("test-org/Several:q4_k", "'q4_k' matches 2 GGUF files in test-org/Several: m-q4_k_m.gguf, m-q4_k_s.gguf"),
    ("test-org/Split:q4_k_m", "big-q4_k_m-00001-of-00002.gguf is split into 2 files"),
    ("test-org/NoGGUF", "the repository test-org/NoGGUF has no GGUF files"),
    ("nobody/nothing:q4_0", "no such file, nor a repository nobody/nothing on Hugging Face"),
])
def test_resolution_errors_are_one_clear_line(hub, tmp_path, ref, message):
    p = cli(tmp_path / "hf", hub.url, "pull", ref)
    assert p.returncode == 1 and message in p.stderr, p.stderr
    assert p.stderr.startswith("Error: ") and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert not (tmp_path / "hf" / "hub" / "models--test-org--Split" / "blobs").exists()


@pytest.mark.parametrize("command", [["info", "-"], ["generate", "-", "hi"], ["chat", "-"], ["bench", "-"],
                                     ["perplexity", "-", __file__], ["quantize", "-", "-o", "x.gguf", "--type", "q8_0"]])
def test_every_command_says_one_line_for_a_model_it_cannot_find(hub, tmp_path, command):
    for model, message in (("nobody/nothing:q4_0", "nobody/nothing:q4_0: no such file, nor a repository"),
                           ("./nothing.gguf", "./nothing.gguf: no such file")):
        if command[0] == "quantize" and model.endswith(".gguf"):
            message = "no such file or folder"
        p = cli(tmp_path / "hf", hub.url, *[model if a == "-" else a for a in command])
        assert p.returncode == 1 and p.stderr.startswith("Error: ") and p.stderr.count("\n") == 1, p.stderr
        assert message in p.stderr


def test_parse_ref_and_quant_names():
    assert parse_ref("Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m") == Ref("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "q4_k_m")
    assert parse_ref("owner/repo") == Ref("owner/repo", None)
    for path_like in ("model.gguf", "dir/model.gguf", "/abs/owner/repo", "./owner/repo", "a/b/c", "~/x"):
        assert parse_ref(path_like) is None
    assert quant_of("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert quant_of("Q4_K_M/model-UD-Q4_K_XL-00001-of-00002.gguf") == "Q4_K_XL"
    assert quant_of("model.gguf") is None


def test_pick_prefers_a_whole_name_part():
    files = {"m-q4_0.gguf": 1, "m-q4_0_4_4.gguf": 1, "m-q4_k_m.gguf": 1, "m-Q8_0.gguf": 1}
    assert _pick(Ref("o/r", "Q4_0"), files) == "m-q4_0.gguf"  # not also q4_0_4_4
    assert _pick(Ref("o/r", "q8_0"), files) == "m-Q8_0.gguf"
    assert _pick(Ref("o/r", None), files) == "m-q4_k_m.gguf"  # llama.cpp's default choice
    assert _pick(Ref("o/r", "4_4"), files) == "m-q4_0_4_4.gguf"  # a part of the name, else a substring
    with pytest.raises(QwenCpuError, match="matches 2 GGUF files"):
        _pick(Ref("o/r", "q4"), {"m-q4_0.gguf": 1, "m-q4_1.gguf": 1})


def test_a_local_split_part_is_refused_by_name(tmp_path):
    import gguf
    import numpy as np

    from qwen_cpu import Model

    path = tmp_path / "big-q4_k_m-00001-of-00002.gguf"
    w = gguf.GGUFWriter(path, "qwen2")
    w.add_uint16("split.no", 0)
    w.add_uint16("split.count", 2)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(QwenCpuError, match="part 1 of a GGUF split into 2 files; merge them first"):
        Model.load(path)



def test_a_cache_that_cannot_be_written_is_not_called_a_network_error(hub, tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "hub").write_text("a file where the cache folder should be")
    p = cli(tmp_path / "hf", hub.url, "pull", "test-org/Tiny-GGUF:q8_0")
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert "test-org/Tiny-GGUF:q8_0: writing the Hugging Face cache failed" in p.stderr
