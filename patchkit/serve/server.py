"""Start `patchkit serve`: check everything that can refuse, load once, listen, drain on SIGTERM.

Order matters for the operator: a bad flag, config, bind or lock fails in milliseconds, before
the weights load; the port opens only once the model is ready, and `--json` prints one line
with the URL at that moment (so `--port 0` tells the caller which port it got).

SIGTERM (or Ctrl-C) drains: `/health` turns 503 and new requests get 503 `draining` while
in-flight ones finish (up to `drain_timeout_s`), then the process exits 0. A second signal
exits at once.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.jsonio import dumps_line
from patchkit.errors import MissingExtraError, NotFoundError, PatchkitError, UsageError
from patchkit.serve.config import SERVED_NAME_RE, ServeConfig, load_config
from patchkit.serve.patches import PatchResolver, PatchSet
from patchkit.trust.store import TrustStore

ENGINES = ("local", "vllm")


@dataclass
class ServeOptions:
    model_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    config_path: Path | None = None
    engine: str = "local"
    vllm_url: str | None = None
    name: str | None = None
    allow_unauthenticated: bool = False
    trust: Path | None = None
    registry: str | None = None
    device: str | None = None
    dtype: str | None = None
    log_level: str = "warning"
    json: bool = False
    threads: int | None = None
    lock: Path | None = None


def is_loopback(host: str) -> bool:
    """True only if every address `host` names is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def check_bind(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    if api_key is None and not allow_unauthenticated and not is_loopback(host):
        raise UsageError(f"refusing to serve on {host} without an API key: anyone who can reach it could use the model",
                         "set PATCHKIT_API_KEY (clients send it as a Bearer token), bind to 127.0.0.1, "
                         "or pass --allow-unauthenticated if a proxy in front does the auth")


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise UsageError(f"cannot resolve --host {host}: {exc}", "pass an IP address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}", "pick another --port (0 picks a free one)") from None
    sock.set_inheritable(True)
    return sock


def served_name(opts: ServeOptions, config: ServeConfig) -> str:
    name = opts.name or config.name or opts.model_dir.resolve().name
    if not SERVED_NAME_RE.match(name):
        raise UsageError(f"the served name {name!r} is not a valid model name ({SERVED_NAME_RE.pattern})", "pass --name NAME")
    return name


def _engine(opts: ServeOptions, config: ServeConfig, metrics: Any) -> Any:
    if opts.engine == "vllm":
        from patchkit.serve.vllm import VLLMEngine

        assert opts.vllm_url is not None
        return VLLMEngine.load(opts.model_dir, opts.vllm_url, served_model=config.vllm_model, max_concurrent=config.limits.max_batch,
                               timeout_s=config.vllm_timeout_s)
    from patchkit.serve.engine import LocalEngine

    return LocalEngine.load(opts.model_dir, max_batch=config.limits.max_batch, prefix_cache_size=config.prefix_cache_size,
                            metrics=metrics, device=opts.device, dtype=opts.dtype, threads=opts.threads)


def _ready_line(opts: ServeOptions, name: str, url: str, port: int, base: PatchSet, engine: Any) -> None:
    info = {"ok": True, "url": url, "host": opts.host, "port": port, "model": name, "model_dir": str(opts.model_dir),
            "patches": base.usage(), **engine.describe()}
    if opts.json:
        sys.stdout.write(dumps_line(info, sort_keys=True) + "\n")
        sys.stdout.flush()
    lock = ", ".join(base.refs) or "none (plain model)"
    print(f"patchkit: serving {name} on {url} (engine {info['engine']}; locked patches: {lock}); "
          f"point an OpenAI client at {url}/v1", file=sys.stderr, flush=True)


def run_server(opts: ServeOptions) -> None:
    if opts.engine not in ENGINES:
        raise UsageError(f"unknown engine {opts.engine!r}", f"use one of {', '.join(ENGINES)}")
    if opts.engine != "vllm" and opts.vllm_url:
        raise UsageError("--vllm-url only goes with --engine vllm", "add --engine vllm")
    if opts.engine == "vllm" and not opts.vllm_url:
        raise UsageError("--engine vllm needs --vllm-url URL", "e.g. --vllm-url http://gpu-node:8000 (see README)")
    config = load_config(opts.config_path)
    api_key = constants.api_key()
    check_bind(opts.host, api_key, opts.allow_unauthenticated)
    if not (opts.model_dir / "config.json").is_file():
        raise NotFoundError(f"{opts.model_dir} is not a transformers model directory (no config.json)", "pass --model DIR")
    name = served_name(opts, config)
    resolver = PatchResolver(opts.model_dir, config, name=name, trust=TrustStore.coerce(opts.trust), registry=opts.registry,
                             lock_path=opts.lock)
    resolver.check_aliases()
    base = resolver.preload()  # the lock's patches: verified now, or the server does not start
    try:
        import uvicorn

        from patchkit.serve.app import ServerState, asgi
        from patchkit.serve.metrics import Metrics
        from patchkit.serve.runner import DrainingServer
    except ModuleNotFoundError as exc:
        raise MissingExtraError("patchkit serve", [(exc.name or "?").split(".")[0]], "serve") from None
    sock = bind_socket(opts.host, opts.port)
    port = int(sock.getsockname()[1])
    metrics = Metrics()
    engine = _engine(opts, config, metrics)
    state = ServerState(engine=engine, resolver=resolver, config=config, metrics=metrics, name=name, api_key=api_key)
    metrics.patch_sets.set(len(resolver.known()))
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    url = f"http://{host}:{port}"
    uconfig = uvicorn.Config(asgi(state), log_level=opts.log_level, access_log=opts.log_level in ("info", "debug", "trace"),
                             lifespan="on", timeout_graceful_shutdown=5, timeout_keep_alive=5,
                             limit_concurrency=config.limits.max_connections)
    server = DrainingServer(uconfig, state, lambda: _ready_line(opts, name, url, port, base, engine))
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits this way when the app's start-up fails
        raise PatchkitError(f"the server failed to start (uvicorn exit {exc.code}; see the messages above)",
                            "run with --log-level info for details") from None
    finally:
        sock.close()
