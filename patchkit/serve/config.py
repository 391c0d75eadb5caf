"""serve.toml: the served name, limits, aliases and cache sizes of `patchkit serve`.

Every field has a default, so the file is optional; an unknown key is refused (a typo in a
limit must not silently leave the default in force).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patchkit import constants
from patchkit.errors import InvalidInputError, NotFoundError

CONFIG_SCHEMA_VERSION = "1.0"
MAX_CONFIG_BYTES = 1024 * 1024
# A served name or alias: no '+' (it separates patches) and no '/' (that is a patch name).
SERVED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class Limits(BaseModel):
    """What one request, and the server as a whole, may ask for."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: Annotated[int, Field(ge=1, description="Most new tokens one request may ask for (more: 400).")] = 1024
    default_max_tokens: Annotated[int, Field(ge=1, description="New tokens when the request names none.")] = 256
    max_prompt_tokens: Annotated[int, Field(ge=1, description="Longest prompt, in tokens (longer: 413).")] = 4096
    max_body_bytes: Annotated[int, Field(ge=1024, description="Largest request body (larger: 413).")] = 1_000_000
    max_batch: Annotated[int, Field(ge=1, description="Requests generating at once (batch slots).")] = 8
    max_queue: Annotated[int, Field(ge=0, description="Requests waiting for a slot; one more gets 429.")] = 64
    max_patches: Annotated[int, Field(ge=0, description="Patches one request may compose.")] = 8
    max_prompts: Annotated[int, Field(ge=1, description="Prompts in one /v1/completions request.")] = 8
    body_timeout_s: Annotated[float, Field(gt=0, le=3600, description="Time a client has to send its whole request body "
                                           "(slower: 408); no capacity slot is held meanwhile.")] = 10.0
    max_connections: Annotated[int, Field(ge=1, description="Open connections the server keeps at once (more: 503); "
                                          "at least max_batch + max_queue.")] = 512

    @model_validator(mode="after")
    def _default_within_max(self) -> Limits:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens ({self.max_tokens})")
        if self.max_connections < self.max_batch + self.max_queue:
            raise ValueError(f"max_connections ({self.max_connections}) is below max_batch + max_queue "
                             f"({self.max_batch + self.max_queue}): the queue could never fill")
        return self


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: str = CONFIG_SCHEMA_VERSION
    name: Annotated[str | None, Field(description="The base model's name in the `model` field (default: the model directory's name).")] = None
    limits: Limits = Limits()
    aliases: Annotated[dict[str, list[str]], Field(description="alias -> ordered patch refs or artifact dirs.")] = {}
    prefix_cache_size: Annotated[int, Field(ge=1, description="Patch sets whose prefix KV stays in memory (LRU).")] = 16
    resolved_cache_size: Annotated[int, Field(ge=1, description="Verified `model` strings remembered (LRU).")] = 256
    recheck_s: Annotated[float, Field(gt=0, description="How long a verified patch set is served before it is verified "
                                                        "again (revocations and yanks reach the server within this).")] = 300.0
    token_budget: Annotated[int, Field(ge=1, description="Most virtual tokens one patch set may add.")] = constants.DEFAULT_TOKEN_BUDGET
    ready_interval_s: Annotated[float, Field(gt=0, description="How long a readiness check (/ready, /health) is reused "
                                                               "before the engine and the served patches are checked again.")] = 5.0
    drain_timeout_s: Annotated[float, Field(gt=0, description="After SIGTERM, how long in-flight requests may take.")] = 60.0
    vllm_model: Annotated[str | None, Field(description="--engine vllm: the model name the vLLM server serves (default: its first).")] = None
    vllm_timeout_s: Annotated[float, Field(gt=0, description="--engine vllm: the timeout of one upstream request.")] = 600.0

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, v: str) -> str:
        if v.split(".")[0] != CONFIG_SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"schema_version {v} is not supported (this patchkit reads {CONFIG_SCHEMA_VERSION})")
        return v

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str | None) -> str | None:
        if v is not None and not SERVED_NAME_RE.match(v):
            raise ValueError(f"name {v!r} must match {SERVED_NAME_RE.pattern}")
        return v

    @field_validator("aliases")
    @classmethod
    def _valid_aliases(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for alias, specs in v.items():
            if not SERVED_NAME_RE.match(alias):
                raise ValueError(f"alias {alias!r} must match {SERVED_NAME_RE.pattern} (no '+' or '/')")
            if any(not s.strip() for s in specs):
                raise ValueError(f"alias {alias!r} lists an empty patch")
        return v


def load_config(path: Path | None) -> ServeConfig:
    """The config in `path` (None: every default); a bad file is one clear error, never a partial config."""
    if path is None:
        return ServeConfig()
    try:
        raw = path.read_bytes()[: MAX_CONFIG_BYTES + 1]
    except FileNotFoundError:
        raise NotFoundError(f"config file {path} does not exist", "pass --config serve.toml, or leave it out for the defaults") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read config file {path}: {exc.strerror}", "check the path and its permissions") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise InvalidInputError(f"config file {path} is over {MAX_CONFIG_BYTES} bytes", "a serve.toml is a few lines")
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"config file {path} is not valid TOML: {exc}", "fix the syntax (see README, `patchkit serve`)") from None
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InvalidInputError(f"config file {path}: {where}: {first['msg']}", "fix that entry (see README, `patchkit serve`)") from None
