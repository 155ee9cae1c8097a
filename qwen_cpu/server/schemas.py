"""Request bodies of the OpenAI-compatible endpoints, as pydantic models.

Only types and shapes are checked here (a wrong type -> 400 naming the field); the values of the
sampling options are checked by `generate.sampling_params`, the function the Python API uses, so a
bad value gets the same message over HTTP as from `Model.chat`. Fields a client may send that we do
not implement are declared so that setting them is a clear 400 instead of being silently ignored;
fields we do not know at all (`user`, `metadata`, ...) are ignored, as OpenAI's own clients send them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import QwenCpuError


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model_config = ConfigDict(extra="ignore")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # not OpenAI's; llama-server and vLLM take it too
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)

    def sampling_overrides(self) -> dict[str, Any]:
        """The sampling options the client set, as keyword arguments of `generate.sampling_params`."""
        keys = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                "frequency_penalty", "seed")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.logit_bias:
            try:
                out["logit_bias"] = {int(k): v for k, v in self.logit_bias.items()}
            except ValueError:
                raise QwenCpuError("logit_bias keys must be token ids (integers as strings)") from None
        return out

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        """Refuse options we do not implement, naming them."""
        if self.n != 1:
            raise QwenCpuError(f"n = {self.n} is not supported: one choice per request (n = 1); "
                               "send several requests for several answers")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls, tool_call_id go to the template

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # checked and compiled by tools.prepare_chat (a bad schema or tool_choice is a 400 with its message)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    # more chat template variables, e.g. {"enable_thinking": false} (vLLM's and llama-server's name)
    chat_template_kwargs: dict[str, Any] | None = None

    def message_dicts(self) -> list[dict]:
        return [m.model_dump(exclude_none=True) for m in self.messages]

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def n_logprobs(self) -> int | None:
        """How many alternatives to report per token (0: only the chosen one), None: no logprobs."""
        if self.top_logprobs is not None and not self.logprobs:
            raise QwenCpuError("top_logprobs needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Common):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    response_format: dict[str, Any] | None = None  # not OpenAI's here; vLLM and llama-server take it

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo:
            raise QwenCpuError("echo is not supported")
        if self.suffix:
            raise QwenCpuError("suffix (fill-in-the-middle) is not supported")
        if self.best_of not in (None, 1):
            raise QwenCpuError("best_of is not supported")

    def single_prompt(self) -> str | list[int]:
        """The prompt as text or token ids; a batch of several prompts is refused."""
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], (str, list)):
            if len(p) != 1:
                raise QwenCpuError(f"prompt: a batch of {len(p)} prompts is not supported; send one per request")
            p = p[0]
        if isinstance(p, list) and not p:
            raise QwenCpuError("prompt is empty")
        return p


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    def inputs(self) -> list[str | list[int]]:
        """The inputs as a list of texts or token-id lists (one vector each)."""
        x = self.input
        if isinstance(x, str):
            items: list = [x]
        elif x and isinstance(x[0], int):
            items = [x]
        else:
            items = list(x)
        if not items or any(len(i) == 0 for i in items):
            raise QwenCpuError("input must not be empty (nor contain an empty string or id list)")
        if self.dimensions is not None:
            raise QwenCpuError("dimensions is not supported (the vectors have the model's width)")
        return items
