"""`patchkit serve`: the OpenAI-compatible server (FastAPI and uvicorn load inside the body only)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from patchkit.cli._common import JsonOpt, ModelOpt, RegistryOpt, TrustOpt


def serve(
    model: ModelOpt,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on; anything but loopback needs PATCHKIT_API_KEY.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0 picks a free one; --json prints it).")] = 8000,
    config: Annotated[Path | None, typer.Option("--config", help="serve.toml: served name, limits, aliases, cache sizes.",
                                                show_default=False)] = None,
    engine: Annotated[str, typer.Option("--engine", help="local (in-process batching) or vllm (a gateway to a vLLM server).")] = "local",
    vllm_url: Annotated[str | None, typer.Option("--vllm-url", help="--engine vllm: the vLLM server, started with "
                                                  "--enable-prompt-embeds.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="The base model's name in the `model` field "
                                              "(default: serve.toml's name, else the model directory's name).",
                                              show_default=False)] = None,
    allow_unauthenticated: Annotated[bool, typer.Option("--allow-unauthenticated", help="Serve on a non-loopback interface "
                                                        "without PATCHKIT_API_KEY (only behind a proxy that authenticates).")] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1… (default: cuda if available).")] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="float32, bfloat16 or float16 (default: float32 on CPU).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads for the local engine "
                                                "(default: torch's choice, one per core).", show_default=False)] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level (info shows each request).")] = "warning",
    lock: Annotated[Path | None, typer.Option("--lock", metavar="FILE", help="The lock whose patches the base name serves "
                                              "(default: MODEL/patchkit.lock).", show_default=False)] = None,
    self_test: Annotated[bool, typer.Option("--self-test", help="Before starting, run the locked patches' signed "
                                            "self-tests on this device and dtype; refuse to start if one fails (exit 10).")] = False,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve the model over the OpenAI API; each request's `model` field picks its verified patches.

    `model` is NAME (the lock's patches), NAME+NS/A@SPEC+NS/B@SPEC (exactly these, in order) or an
    alias from serve.toml. SIGTERM drains in-flight requests, then exits 0.
    """
    from patchkit.serve.server import ServeOptions, run_server

    if self_test:
        _self_test(model, trust=trust, registry=registry, device=device, dtype=dtype, lock=lock)
    run_server(ServeOptions(model_dir=model, host=host, port=port, config_path=config, engine=engine, vllm_url=vllm_url,
                            name=name, allow_unauthenticated=allow_unauthenticated, trust=trust, registry=registry,
                            device=device, dtype=dtype, log_level=log_level, json=json_, threads=threads, lock=lock))


def _self_test(model: Path, *, trust: Path | None, registry: str | None, device: str | None, dtype: str | None,
               lock: Path | None) -> None:
    """`--self-test`: the lock's patches, verified, each run through its self-test; a failure stops the start."""
    from patchkit.cli._behaviour import check_dtype, failure, reports_human
    from patchkit.cli._common import err, policy_for
    from patchkit.runtime.resolve import resolve_patches
    from patchkit.runtime.selftest import check_behaviour

    check_dtype(dtype)
    loaded = resolve_patches(model, None, policy_for(trust), registry=registry, lock_path=lock)
    reports = check_behaviour(model, loaded, device=device, dtype=dtype, require=False)
    err(reports_human(reports) or "patchkit: --self-test: no locked patch ships a self-test")
    bad = failure(reports)
    if bad is not None:
        raise bad


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
