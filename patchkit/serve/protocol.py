"""The OpenAI request bodies patchkit serve accepts, and what it refuses with a 400.

Unknown fields are ignored, as OpenAI-compatible servers do; a known field asking for
something this server does not do (n > 1, logprobs, tools, penalties) is refused rather
than silently dropped. `min_tokens` and `ignore_eos` are vLLM's extra parameters.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from patchkit.serve.errors import APIError, bad_request

MAX_STOP = 16
MAX_STOP_CHARS = 256


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[Any] | None = None


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = 0.0
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False

    def stop_list(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP or any(len(s) > MAX_STOP_CHARS for s in stops):
            raise bad_request(f"stop takes at most {MAX_STOP} strings of at most {MAX_STOP_CHARS} characters", param="stop")
        return tuple(s for s in stops if s)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _refuse_unsupported(self) -> None:
        if (self.n or 1) != 1:
            raise bad_request("n must be 1: this server returns one choice per prompt", param="n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise bad_request(f"{name} is not supported (leave it 0)", param=name)
        if self.logit_bias:
            raise bad_request("logit_bias is not supported", param="logit_bias")
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed with stream=true", param="stream_options")


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    def check(self) -> None:
        self._refuse_unsupported()
        if self.logprobs or self.top_logprobs:
            raise bad_request("logprobs are not supported", param="logprobs")
        if self.tools or self.functions:
            raise bad_request("tools and functions are not supported", param="tools")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise bad_request("only response_format type 'text' is supported", param="response_format")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def chat_messages(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for i, m in enumerate(self.messages):
            if m.tool_calls:
                raise bad_request("tool calls are not supported", param=f"messages.{i}.tool_calls")
            if m.content is None:
                raise bad_request("a message needs content", param=f"messages.{i}.content")
            if isinstance(m.content, str):
                text = m.content
            else:
                if any(p.type != "text" or p.text is None for p in m.content):
                    raise bad_request("only text content parts are supported", param=f"messages.{i}.content")
                text = "".join(p.text or "" for p in m.content)
            out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        return out


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    def check(self) -> None:
        self._refuse_unsupported()
        if self.echo:
            raise bad_request("echo is not supported", param="echo")
        if self.logprobs:
            raise bad_request("logprobs are not supported", param="logprobs")
        if self.suffix:
            raise bad_request("suffix is not supported", param="suffix")
        if (self.best_of or 1) != 1:
            raise bad_request("best_of must be 1", param="best_of")

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise bad_request("prompt is empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [[x for x in p if isinstance(x, int)]]
        if any(isinstance(x, int) for x in p):
            raise bad_request("prompt mixes token ids and texts", param="prompt")
        return [x for x in p if not isinstance(x, int)]

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


def parse_body(model: type[ChatRequest] | type[CompletionRequest], raw: bytes) -> Any:
    """The validated request, or a 400 naming the first bad field."""
    try:
        req = model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or None
        if first["type"] in ("json_invalid", "json_type"):
            raise bad_request(f"the body is not valid JSON: {first['msg']}", code="invalid_json") from None
        raise APIError(400, f"{loc or 'body'}: {first['msg']}", code="invalid_value", param=loc) from None
    req.check()
    return req
