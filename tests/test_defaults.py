"""Sampling defaults (qwen_cpu/defaults.py): the file's general.sampling.* keys (written here by
gguf-py's GGUFWriter, and by our quantizer from generation_config.json, read back by gguf-py's
GGUFReader), the per-family table, the generic values, their precedence, and that Model and the
CLI use them. Expected values are the published ones, written out by hand."""

import math
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from _checkpoints import make_gguf
from _helpers import CWD, PYTHONPATH

from qwen_cpu import Model, generate
from qwen_cpu.defaults import GENERIC, WHOLE_CONTEXT, family, model_defaults, resolve
from qwen_cpu.gguf import GGUFFile
from qwen_cpu.sampler import Sampler

QWEN_CONFIG = {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
               "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20}


def write_metadata_gguf(path, **keys):
    """A GGUF holding only the given general.sampling.* keys (and one tensor), by gguf-py."""
    w = gguf.GGUFWriter(path, "qwen2")
    for key, value in keys.items():
        add = w.add_int32 if isinstance(value, int) else w.add_string if isinstance(value, str) else w.add_float32
        add(f"general.sampling.{key}", value)
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFFile(path) as f:
        return dict(f.metadata)


def test_file_keys_win_over_the_family_table_and_generic(tmp_path):
    meta = write_metadata_gguf(tmp_path / "m.gguf", temp=0.3, top_k=7, penalty_last_n=-1)
    meta["general.name"] = "Qwen2.5 7B Instruct"
    d = model_defaults(meta, "m.gguf")
    assert d.values["temperature"] == pytest.approx(0.3) and d.sources["temperature"] == "file (general.sampling.temp)"
    assert d.values["top_k"] == 7 and d.values["penalty_window"] == WHOLE_CONTEXT
    # not in the file: Qwen2.5 Instruct's generation_config values
    assert d.values["top_p"] == 0.8 and d.values["repetition_penalty"] == 1.05
    assert d.sources["top_p"].startswith("Qwen2.5 Instruct")
    assert d.values["presence_penalty"] == 0.0 and d.sources["presence_penalty"].startswith("generic")
    # what the caller gives wins; None means not given; -1 is the whole context
    values, sources = resolve(d, {"temperature": 0.0, "top_k": None}, n_ctx=512)
    assert values["temperature"] == 0.0 and sources["temperature"] == "given" and values["top_k"] == 7
    assert values["penalty_window"] == 512


def test_sequence_turns_samplers_off_and_bad_values_are_ignored_with_a_note(tmp_path):
    meta = write_metadata_gguf(tmp_path / "m.gguf", sequence="kt", top_p=0.0, min_p=0.5, top_k=5)
    d = model_defaults(meta)
    assert d.values["top_k"] == 5
    assert d.values["top_p"] == 1.0 and d.values["min_p"] == 0.0  # p and m are not in the sequence
    assert d.values["repetition_penalty"] == 1.0 and "sequence" in d.sources["repetition_penalty"]
    assert any("general.sampling.top_p ignored: 0.0 is out of range" in n for n in d.notes)
    meta = write_metadata_gguf(tmp_path / "n.gguf", sequence="tk")
    assert any("fixed order" in n for n in model_defaults(meta).notes)


@pytest.mark.parametrize("fields, expected", [
    ({"general.name": "Qwen2.5 0.5B Instruct"}, "Qwen2.5 Instruct 0.5B/1.5B"),
    ({"general.basename": "Qwen2.5", "general.size_label": "1.5B", "general.finetune": "Instruct"},
     "Qwen2.5 Instruct 0.5B/1.5B"),
    ({"general.name": "Qwen2.5 7B Instruct"}, "Qwen2.5 Instruct"),
    ({"general.name": "Qwen2.5 Coder 7B Instruct"}, None),
    ({"general.name": "Qwen2.5 7B"}, None),  # a base model
    ({"general.name": "SmolLM2 360M", "tokenizer.chat_template": "{{ x }}"}, "SmolLM2 Instruct"),
    ({"general.name": "SmolLM2 360M"}, None),
])
def test_family_table(fields, expected):
    fam = family(fields, "")
    assert (fam.name if fam else None) == expected


def test_family_values_are_the_published_ones():
    qwen = model_defaults({"general.name": "Qwen2.5 0.5B Instruct"}).values
    assert (qwen["temperature"], qwen["top_k"], qwen["top_p"], qwen["min_p"]) == (0.7, 20, 0.8, 0.0)
    assert qwen["repetition_penalty"] == 1.1 and qwen["penalty_window"] == WHOLE_CONTEXT
    assert model_defaults({"general.name": "Qwen2.5 14B Instruct"}).values["repetition_penalty"] == 1.05
    assert model_defaults({}).values == GENERIC


def test_the_demo_model_gets_smollm2_s_settings(smollm2_path):
    with Model.load(smollm2_path, n_ctx=256) as m:
        d = m.sampling_defaults
        assert (d.values["temperature"], d.values["top_p"], d.values["top_k"]) == (0.2, 0.9, 50)
        p = generate.sampling_params(m, seed=3)
        assert (p.temperature, p.top_p, p.top_k, p.min_p, p.seed) == (0.2, 0.9, 50, 0.0, 3)
        assert generate.sampling_params(m, temperature=1.5).temperature == 1.5
    assert generate.sampling_params().temperature == GENERIC["temperature"]  # no model: generic


def test_whole_context_penalty_reaches_the_prompt():
    # Token 0 is in the prompt, 100 tokens back. transformers' rule (penalty over every token of the
    # sequence) divides its logit 2.0 by 1.05 -> 1.905 < 1.95, so token 1 wins; llama.cpp's last-64
    # window does not see it and token 0 wins.
    history = [0] + [5] * 99
    logits = np.array([2.0, 1.95, 0.0, 0.0, 0.0, -1.0], dtype=np.float32)
    qwen = model_defaults({"general.name": "Qwen2.5 7B Instruct"})
    whole = generate.sampling_params(qwen, temperature=0)
    assert whole.penalty_window >= len(history)
    assert Sampler(whole)(logits, history) == 1
    window = generate.sampling_params(qwen, temperature=0, penalty_window=64)
    assert Sampler(window)(logits, history) == 0
    assert math.isclose(2.0 / 1.05, 1.9047619, rel_tol=1e-6)


def test_quantize_writes_general_sampling_from_generation_config(tmp_path):
    path = make_gguf(tmp_path / "ckpt", generation_config=QWEN_CONFIG)
    r = gguf.GGUFReader(path)
    got = {f.name: f.contents() for f in r.fields.values() if f.name.startswith("general.sampling.")}
    assert got.keys() == {"general.sampling.temp", "general.sampling.top_k", "general.sampling.top_p",
                          "general.sampling.penalty_repeat", "general.sampling.penalty_last_n"}
    assert got["general.sampling.top_k"] == 20 and got["general.sampling.penalty_last_n"] == -1
    assert got["general.sampling.temp"] == pytest.approx(0.7) and got["general.sampling.top_p"] == pytest.approx(0.8)
    assert got["general.sampling.penalty_repeat"] == pytest.approx(1.05)
    assert r.fields["general.sampling.top_k"].types == [gguf.GGUFValueType.INT32]
    greedy = make_gguf(tmp_path / "greedy", generation_config={"do_sample": False, "temperature": 0.9})
    assert gguf.GGUFReader(greedy).fields["general.sampling.temp"].contents() == 0.0


def test_model_generates_with_the_file_s_defaults(tmp_path):
    # The file says temperature 0 (do_sample false): every seed gives the greedy text; a temperature
    # given by the caller wins (random weights: two seeds at temperature 1 differ).
    path = make_gguf(tmp_path / "ckpt", generation_config={"do_sample": False})
    with Model.load(path, n_ctx=64) as m:
        ids = [5, 6, 7]
        greedy = m.generate(ids, max_tokens=12, temperature=0)
        assert m.generate(ids, max_tokens=12, seed=1) == greedy == m.generate(ids, max_tokens=12, seed=2)
        hot = {m.generate(ids, max_tokens=12, seed=s, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) for s in range(4)}
        assert len(hot) > 1


def test_info_shows_the_settings_in_force_and_their_sources(tmp_path):
    path = make_gguf(tmp_path / "ckpt", generation_config=QWEN_CONFIG)
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    out = subprocess.run([sys.executable, "-m", "qwen_cpu.cli", "info", str(path)], capture_output=True,
                         text=True, check=True, cwd=CWD, env=env).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[-8:]}
    assert lines["temperature"].split()[1:] == ["0.7", "file", "(general.sampling.temp)"]
    assert lines["top_k"].split()[1:] == ["20", "file", "(general.sampling.top_k)"]
    assert "whole context" in lines["penalty_window"] and "general.sampling.penalty_last_n" in lines["penalty_window"]
    assert lines["min_p"].split()[1:3] == ["0.05", "generic"]
