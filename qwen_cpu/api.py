"""The public Model: the engine (model.py: the network, its KV cache, the tokenizer) with
generation on top: plain completions (`stream`, `generate`), OpenAI-shaped chat (`chat`) and
batches (`generate_batch`, `embed_batch`). The calls go one way: this module -> generate.py
(and chat/tools/constrain/context/batch) -> model.py -> the C++ kernels; the engine never
imports generation.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from . import constrain, generate
from .context import ChatShift, KeepStart, fit_messages
from .generate import Response
from .model import Engine
from .options import check_token_ids
from .tools import encode_messages, prepare_chat


class Model(Engine):
    """A Qwen2/Qwen3/Llama GGUF model ready to run and to generate with. Build with `Model.load(path)`;
    the engine's calls (tokenize, logits, embed, prefill, decode_step, hold, save_state, ...)
    are inherited from model.Engine."""

    def stream(self, prompt: str | Sequence[int], max_tokens: int = 256, stop: Sequence[str] = (),
               context_shift: bool = True, *, response_format: dict | None = None, json_schema: Any = None,
               regex: str | None = None, grammar: str | None = None, **sampling: Any) -> Iterator["Response"]:
        """Stream the continuation of a plain-text prompt (no chat template; BOS added where the
        vocabulary asks for it) or of token ids: yields generate.Response objects with the new
        text, the token id, speed figures and, last, the finish reason ("stop" or "length").
        response_format (OpenAI's), json_schema, regex, grammar (Lark or GBNF): at most one; the
        output then follows it (constrain.py), checked before anything runs.
        sampling: SamplingParams fields (temperature, top_k, top_p, min_p, seed, ...); those not
        given take the model's own defaults (`sampling_defaults`).
        context_shift: when the context fills, keep the BOS token and the newer half of the rest
        and go on (qwen_cpu.context; not with max_tokens None); False ends with "length"."""
        g = constrain.from_options(self.tokenizer, response_format=response_format, json_schema=json_schema,
                                   regex=regex, grammar=grammar)
        ids = self.tokenize(prompt, add_special=True) if isinstance(prompt, str) else prompt
        shift = None
        if context_shift and max_tokens is not None:
            ids = check_token_ids(ids, self.config.n_vocab, "prompt token ids")
            shift = KeepStart(1 if ids[:1] == [self.tokenizer.bos_id] else 0)
        return generate.stream(self, ids, max_tokens=max_tokens, params=generate.sampling_params(self, **sampling),
                               stop=stop, context_shift=shift, constraint=g.constraint() if g else None)

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, stop: Sequence[str] = (),
                 context_shift: bool = True, **options: Any) -> str:
        """The continuation of a prompt as one string (see stream for the options)."""

        return generate.collect(self.stream(prompt, max_tokens, stop, context_shift, **options)).text

    def generate_batch(self, prompts: Sequence, max_tokens: int = 256, stop: Sequence[str] = (),
                       **sampling: Any) -> list["Response"]:
        """Generate for a list of prompts (strings, token ids or chat message lists), up to n_seq
        at a time in one forward pass (qwen_cpu.batch); one Response with the whole text each."""

        from .batch import generate_batch  # the scheduler (and asyncio) only when used

        return generate_batch(self, prompts, max_tokens=max_tokens, stop=stop, **sampling)

    def embed_batch(self, texts: Sequence, pooling: str = "mean") -> np.ndarray:
        """embed() of each text or id list, up to n_seq at a time: (len(texts), n_embd) float32."""

        from .batch import embed_batch

        return embed_batch(self, texts, pooling)

    def chat(self, messages: Sequence[dict], *, stream: bool = False, tools: Sequence[dict] | None = None,
             tool_choice: Any = None, parallel_tool_calls: bool = True, response_format: dict | None = None,
             json_schema: Any = None, regex: str | None = None, grammar: str | None = None,
             max_tokens: int = 512, stop: Sequence[str] = (), context_shift: bool = True,
             chat_template_kwargs: dict | None = None, **sampling: Any):
        """OpenAI-shaped chat completion. messages: [{"role": ..., "content": ...}, ...], rendered
        with the file's chat template (ChatML if it has none); message content never becomes
        control tokens. Returns a `chat.completion` dict, or with stream=True an iterator of
        `chat.completion.chunk` dicts. The KV cache keeps the conversation, so a follow-up turn
        computes only its new tokens. context_shift: a conversation longer than the context loses
        its oldest turns, never the system prompt (qwen_cpu.context); False: it is an error.
        tools / tool_choice / parallel_tool_calls: OpenAI's; calls come back as message.tool_calls
        (finish_reason "tool_calls"), earlier calls and role "tool" results are rendered back
        (tools.py). response_format, json_schema, regex, grammar: as in stream.
        chat_template_kwargs: more template variables, e.g. {"enable_thinking": False} for Qwen3's
        template (chat.check_template_kwargs)."""

        name = f"{self.path.name}: tokenizer.chat_template"
        req = prepare_chat(self.tokenizer, messages, tools=tools, tool_choice=tool_choice,
                           parallel_tool_calls=parallel_tool_calls, response_format=response_format,
                           json_schema=json_schema, regex=regex, grammar=grammar, template_name=name,
                           template_kwargs=chat_template_kwargs)

        def encode(msgs):
            return encode_messages(self.tokenizer, msgs, req.tools, name, chat_template_kwargs)

        shift, ids = None, req.prompt_ids
        if context_shift and max_tokens is not None:
            messages, ids = fit_messages(encode, messages, self.n_ctx)
            shift = ChatShift(encode, messages, ids)
        responses = generate.stream(self, ids, max_tokens=max_tokens, params=generate.sampling_params(self, **sampling),
                                    stop=stop, context_shift=shift,
                                    constraint=req.grammar.constraint() if req.grammar else None)
        if stream:
            return generate.openai_chunks(responses, self.path.name, tool_calls=req.tool_calls)
        return generate.openai_completion(responses, self.path.name, tool_calls=req.tool_calls)
