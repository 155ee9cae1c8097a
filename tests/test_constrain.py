"""Constrained decoding (qwen_cpu/constrain.py): every output of a random-weight Qwen2.5-shaped
model (the real 151,936-token vocabulary) sampled at temperature 1.0 under a JSON schema validates
with the `jsonschema` library, and under a regex matches with Python's `re` (independent checkers,
not llguidance); invalid input fails before any computation; the mask comes before the other
sampling steps; the real SmolLM2 gives sensible JSON."""

import json
import re

import jsonschema
import numpy as np
import pytest

from qwen_cpu import Model, QwenCpuError, constrain, generate
from qwen_cpu.sampler import Sampler, SamplingParams

SHORT = {"type": "string", "maxLength": 8}
SMALL_INT = {"type": "integer", "minimum": -50, "maximum": 50}


def obj(properties, required=None):
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required,
            "additionalProperties": False}


# Strings are bounded (maxLength, enum, pattern, format) and objects closed: a model that knows
# nothing would otherwise write an unbounded string or invent keys until max_tokens.
SCHEMAS = [
    obj({"name": SHORT, "age": {"type": "integer", "minimum": 0, "maximum": 150}}),
    obj({"a": SMALL_INT, "b": {"type": "boolean"}, "c": {"type": "null"}}, required=["a"]),   # optional keys
    obj({"user": obj({"id": {"type": "integer", "minimum": 1, "maximum": 9999},
                      "role": {"enum": ["admin", "user", "guest"]}}),
         "active": {"type": "boolean"}}),                                                   # nested objects
    {"type": "array", "items": SMALL_INT, "minItems": 2, "maxItems": 5},
    {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 3, "maxItems": 3},
    {"enum": ["red", "green", "blue"]},
    {"enum": [1, "two", None, True, 3.5]},
    obj({"version": {"const": "1.0"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}}),
    {"type": "number", "minimum": -1.5, "maximum": 2.25},
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
    obj({"price": {"type": "number", "minimum": 0, "maximum": 1000}, "qty": {"type": "integer", "minimum": 1, "maximum": 99}}),
    {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"},
    {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org)$"},
    {"type": "string", "minLength": 3, "maxLength": 6},
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 5}, SHORT, {"type": "null"}]},
    {"anyOf": [obj({"kind": {"const": "circle"}, "r": {"type": "number", "minimum": 0, "maximum": 10}}),
               obj({"kind": {"const": "rect"}, "w": SMALL_INT, "h": SMALL_INT})]},
    {"type": "array", "items": obj({"x": SMALL_INT, "y": SMALL_INT}), "minItems": 1, "maxItems": 3},
    {"type": "boolean"},
    {"type": "array", "prefixItems": [SHORT, SMALL_INT, {"type": "boolean"}], "items": False, "minItems": 3},
    obj({"a": obj({"b": obj({"c": obj({"d": {"enum": ["x", "y"]}})})})}),                    # deep nesting
    {"$defs": {"pt": obj({"x": SMALL_INT, "y": SMALL_INT})}, **obj({"from": {"$ref": "#/$defs/pt"}, "to": {"$ref": "#/$defs/pt"}})},
    {"type": ["string", "null"], "maxLength": 4},
    obj({"title": SHORT, "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}}, required=["title"]),
    obj({"day": {"type": "string", "format": "date"}, "id": {"type": "string", "format": "uuid"}}),
]

REGEXES = [
    r"[0-9]{3}-[0-9]{4}",
    r"(yes|no|maybe)",
    r"[A-Z][a-z]{1,10}( [A-Z][a-z]{1,10}){0,2}",
    r"(0|[1-9][0-9]{0,5})(\.[0-9]{1,3})?",
    r"[a-z_][a-z0-9_]{0,15}",
    r"#[0-9a-fA-F]{6}",
    r"(ab|cd){1,5}x",
    r"[^\n]{1,20}",
    r"-?[0-9]+(e[0-9]{1,2})?",
    r"\d{4}-\d{2}-\d{2}",   # \d: Unicode digits in both Rust's regex and Python's re
]


@pytest.fixture(scope="module")
def tiny(tiny_qwen_gguf):
    with Model.load(tiny_qwen_gguf, n_ctx=1024) as m:
        yield m


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_random_model_output_validates_against_the_schema(tiny, index):
    schema = SCHEMAS[index]
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for seed in (1, 2):
        r = generate.collect(tiny.stream("{", max_tokens=400, json_schema=schema, temperature=1.0, seed=seed))
        assert r.finish_reason == "stop", (r.text, r.generation_tokens)
        validator.validate(json.loads(r.text))


@pytest.mark.parametrize("pattern", REGEXES)
def test_random_model_output_matches_the_regex(tiny, pattern):
    for seed in (1, 2):
        r = generate.collect(tiny.stream("x", max_tokens=200, regex=pattern, temperature=1.0, seed=seed))
        assert r.finish_reason == "stop"
        assert re.fullmatch(pattern, r.text), r.text


def test_lark_and_gbnf_grammars(tiny):
    for text in ('start: ("yes" | "no") " " /[0-9]{1,3}/', 'root ::= ("yes" | "no") " " [0-9] [0-9]? [0-9]?'):
        for seed in (1, 2):
            out = tiny.generate("x", max_tokens=50, grammar=text, temperature=1.0, seed=seed)
            assert re.fullmatch(r"(yes|no) [0-9]{1,3}", out), out


BAD = [
    (dict(regex="[a-"), "invalid regex"),
    (dict(json_schema={"type": "strin"}), "invalid JSON schema"),
    (dict(json_schema="{not json"), "invalid JSON schema"),
    (dict(json_schema=[1, 2]), "invalid JSON schema"),
    (dict(grammar="start: foo"), "invalid grammar"),
    (dict(grammar="root ::= bar"), "invalid grammar"),
    (dict(response_format={"type": "yaml"}), "response_format type 'yaml'"),
    (dict(response_format={"type": "json_schema"}), "json_schema"),
    (dict(regex="a", json_schema={}), "at most one"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[m for _, m in BAD])
def test_invalid_constraint_is_an_error_before_any_computation(tiny, options, message):
    tiny.reset()
    before = tiny.n_evaluated
    with pytest.raises(QwenCpuError, match=message):
        tiny.stream("x", **options)
    with pytest.raises(QwenCpuError, match=message):
        tiny.chat([{"role": "user", "content": "hi"}], **options)
    assert tiny.n_evaluated == before


def ids_of(tok, logits):
    return set(np.flatnonzero(logits > -np.inf).tolist())


def test_constraint_protocol_on_a_regex(tiny):
    tok = tiny.tokenizer
    c = constrain.from_regex(tok, "ab+").constraint()
    logits = np.zeros(tiny.config.n_vocab, dtype=np.float32)
    c.mask_logits(logits)
    allowed = ids_of(tok, logits)
    assert allowed and not allowed & tok.eos_ids  # EOS only once the output is a match
    assert all(re.fullmatch("ab*", tok.token_to_bytes(i).decode()) for i in allowed)
    assert tok.token_to_id("a") in allowed and tok.token_to_id("ab") in allowed
    c.accept(tok.token_to_id("ab"))
    assert c.is_accepting() and not c.is_complete()   # "abb..." may follow
    logits[:] = 0
    c.mask_logits(logits)
    assert tok.eos_ids <= ids_of(tok, logits)
    with pytest.raises(QwenCpuError, match="not allowed"):
        c.accept(tok.token_to_id("a"))

    exact = constrain.from_regex(tok, "ab").constraint()
    exact.accept(tok.token_to_id("ab"))
    assert exact.is_complete() and exact.forced_tokens() == []
    forced = constrain.from_regex(tok, "The quick brown fox").constraint().forced_tokens()
    assert forced and "The quick brown fox".startswith(tok.decode(forced))


def test_mask_comes_before_logit_bias_and_the_callers_logits_stay(tiny):
    tok = tiny.tokenizer
    c = constrain.from_regex(tok, "[0-9]").constraint()
    letter = tok.token_to_id("a")
    logits = np.zeros(tiny.config.n_vocab, dtype=np.float32)
    logits[letter] = 50.0
    sampler = Sampler(SamplingParams(temperature=0, logit_bias={letter: 100.0}), constraint=c)
    token = sampler(logits)
    assert tok.decode([token]).isdigit() and c.is_complete()   # drawn from the allowed, then accepted
    assert logits[letter] == 50.0 and np.isfinite(logits).all()


def test_length_at_max_tokens(tiny):
    r = generate.collect(tiny.stream("{", max_tokens=3, json_schema=SCHEMAS[2], temperature=1.0, seed=1))
    assert r.finish_reason == "length" and r.generation_tokens == 3


def test_forced_tokens_run_as_one_prefill(tiny, monkeypatch):
    pattern = "The quick brown fox jumps over the lazy dog and runs away: [0-9]{2}"
    from qwen_cpu.model import ModelLease

    calls = []
    real_prefill = ModelLease.prefill
    monkeypatch.setattr(ModelLease, "prefill", lambda lease, ids: calls.append(len(ids)) or real_prefill(lease, ids))
    tiny.reset()
    batched = tiny.generate("x", max_tokens=40, regex=pattern, temperature=0)
    assert len(calls) == 2                    # the prompt, then the forced run in one call
    monkeypatch.setattr(generate, "FORCED_PREFILL_MIN", 10**9)
    calls.clear()
    tiny.reset()
    stepped = tiny.generate("x", max_tokens=40, regex=pattern, temperature=0)
    assert len(calls) == 1 and stepped == batched and re.fullmatch(pattern, batched)


def test_cli_constraint_options(tiny_qwen_gguf, tmp_path):
    from click.testing import CliRunner

    from qwen_cpu import cli

    schema = SCHEMAS[0]
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    (tmp_path / "g.gbnf").write_text('root ::= "go " [a-c]')
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli.main, ["generate", str(tiny_qwen_gguf), "hi", "--temp", "1", "--seed", "2", *args])

    r = run("--json-schema", str(tmp_path / "schema.json"))
    assert r.exit_code == 0, r.output
    jsonschema.validate(json.loads(r.output), schema)
    r = run("--regex", "[0-9]{3}-ok")
    assert r.exit_code == 0 and re.fullmatch(r"[0-9]{3}-ok\n", r.output)
    r = run("--grammar", str(tmp_path / "g.gbnf"))
    assert r.exit_code == 0 and re.fullmatch(r"go [a-c]\n", r.output)
    r = run("--regex", "[0-9")
    assert r.exit_code != 0 and "invalid regex" in r.output


def test_real_model_json_object_and_schema(smollm2_path):
    question = [{"role": "user", "content": 'What is the capital of France? Answer in JSON with the keys "country" '
                                            'and "capital".'}]
    schema = obj({"country": {"type": "string"}, "capital": {"type": "string"}})
    with Model.load(smollm2_path, n_ctx=512) as m:
        out = m.chat(question, response_format={"type": "json_object"}, temperature=0, max_tokens=64)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "stop"
        assert "Paris" in json.loads(choice["message"]["content"]).values()
        out = m.chat(question, response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema,
                                                                                      "strict": True}},
                     temperature=0, max_tokens=64)
        answer = json.loads(out["choices"][0]["message"]["content"])
        jsonschema.validate(answer, schema)
        assert answer["capital"] == "Paris"


def test_top_k_on_masked_logits_takes_the_allowed_tokens():
    """A grammar often allows fewer tokens than top_k: the finite logits come first (padded with
    masked ones up to k), found without partitioning the whole vocabulary."""
    from qwen_cpu.sampler import top_k_indices

    x = np.full(151936, -np.inf, dtype=np.float32)
    x[[5, 70001, 151000]] = [1.0, 3.0, 2.0]
    ids = top_k_indices(x, 40)
    assert ids.size == 40 and ids[:3].tolist() == [70001, 151000, 5] and np.isneginf(x[ids[3:]]).all()
    x[np.arange(0, 151936, 7)] = 0.5                      # many finite logits: the ordinary path
    ids = top_k_indices(x, 40)
    assert ids[:3].tolist() == [70001, 151000, 5] and (x[ids[3:]] == 0.5).all() and ids.size == 40


def test_scheduler_sequences_follow_their_own_grammars(tiny_qwen_gguf):
    """Interface 1 through the engine's scheduler: several requests in one batch, each with its own
    Constraint, each output valid under its own schema or regex."""
    from qwen_cpu.scheduler import Request, Scheduler

    with Model.load(tiny_qwen_gguf, n_ctx=512, n_seq=3) as m:
        s = Scheduler(m)
        try:
            jobs = [(SCHEMAS[0], None), (SCHEMAS[3], None), (None, REGEXES[0])]
            handles = []
            for i, (schema, pattern) in enumerate(jobs):
                g = constrain.from_json_schema(m.tokenizer, schema) if schema else constrain.from_regex(m.tokenizer, pattern)
                params = generate.sampling_params(temperature=1.0, seed=i)
                handles.append(s.submit(Request(prompt_ids=m.tokenize("{"), max_tokens=300, params=params,
                                                constraint=g.constraint())))
            for (schema, pattern), h in zip(jobs, handles):
                r = generate.collect(iter(h))
                assert r.finish_reason == "stop", r.text
                if schema:
                    jsonschema.validate(json.loads(r.text), schema)
                else:
                    assert re.fullmatch(pattern, r.text)
        finally:
            s.close()
