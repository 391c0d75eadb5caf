"""Shared option aliases and output helpers for every command module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from patchkit._internal.jsonio import dumps_line
from patchkit.constants import PATCHKIT_VERSION as __version__

if TYPE_CHECKING:
    from patchkit.artifact.verify import VerificationPolicy
    from patchkit.trust.store import TrustStore

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else there.")]
TrustOpt = Annotated[
    Path | None,
    typer.Option("--trust", metavar="FILE", help="Trust store file (default: $PATCHKIT_HOME/trust.toml).", show_default=False),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        metavar="URL",
        help="file:///path, hf:// (the Hub at HF_ENDPOINT) or local (default; also PATCHKIT_REGISTRY, "
             "or `patchkit config set registry`).",
        show_default=False,
    ),
]
KeyOpt = Annotated[Path, typer.Option("--key", metavar="PRIVATE_PEM", help="Private key PEM (from `patchkit keys generate`).")]
PassphraseEnvOpt = Annotated[
    str | None,
    typer.Option("--passphrase-env", metavar="VAR", help="Name of the environment variable holding the key's passphrase."),
]
ModelOpt = Annotated[Path, typer.Option("--model", metavar="DIR", help="Local transformers model directory.")]
CertificateChainOpt = Annotated[
    Path | None,
    typer.Option("--certificate-chain", metavar="CHAIN_PEM",
                 help="Sign as an organisation: the X.509 leaf issued for --key, then its intermediates (PEM)."),
]
RequireOpt = Annotated[
    list[str] | None,
    typer.Option("--require", metavar="RULE", help="A policy rule the signed manifest must meet, e.g. "
                                                   "'harmfulness.refusal_rate>=0.9' or 'domain in {harmfulness,toxicity}' "
                                                   "(repeatable; exit 9 if not met)."),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", metavar="FILE", help="Policy file (default: policy.toml beside the trust store, if any).",
                 show_default=False),
]


def err(message: str) -> None:
    """Messages go to stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


def emit(json_mode: bool, payload: dict[str, Any], human: str | None = None) -> None:
    """One JSON object (always with `ok`) on stdout, or the human text."""
    if json_mode:
        sys.stdout.write(dumps_line({"ok": True, **payload}, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()
    elif human is not None:
        print(human, flush=True)


def trust_store(path: Path | None) -> TrustStore:
    """The trust store a command runs with: --trust FILE, else $PATCHKIT_HOME/trust.toml (read once)."""
    from patchkit.trust.store import TrustStore

    return TrustStore.coerce(path)


def policy_for(trust: Path | None, **settings: Any) -> VerificationPolicy:
    """The one verification policy a command passes down (built here, at the edge): the trust store,
    and the policy.toml beside it (or `policy_file=`) plus `require=`."""
    from patchkit.artifact.verify import VerificationPolicy

    return VerificationPolicy.load(trust, **settings)


def warn(messages: list[str]) -> None:
    for m in messages:
        err(f"patchkit: WARNING: {m}")


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 patch`, `2 patches`."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def show_group(ctx: typer.Context, json_mode: bool) -> None:
    """A bare group prints its help (stdout, exit 0); with --json, its commands as JSON."""
    if json_mode:
        group: Any = ctx.command
        names = group.list_commands(ctx) if hasattr(group, "list_commands") else []
        emit(True, {"ok": True, "command": ctx.command_path, "version": __version__,
                    "commands": [{"name": n, "help": (group.get_command(ctx, n).get_short_help_str(100) or "")}
                                 for n in names]})
    else:
        print(ctx.get_help())
    raise typer.Exit(0)


def group(name: str, help_text: str) -> typer.Typer:
    """A command group that prints its help when run bare and answers --json too."""
    sub = typer.Typer(name=name, no_args_is_help=False, help=help_text, add_completion=False, rich_markup_mode="rich",
                      context_settings={"help_option_names": ["-h", "--help"]})

    @sub.callback(invoke_without_command=True)
    def _bare(ctx: typer.Context, json_: JsonOpt = False) -> None:
        if ctx.invoked_subcommand is None:
            show_group(ctx, json_)

    return sub


