"""`patchkit root …`: a namespace's root of trust (TUF): create it, change its keys, show it.

The root keys are offline (k of n): they alone decide which online keys sign the namespace's
patches. These commands are the vendor's; customers pin the root.json `init` writes with
`patchkit trust add root.json --scope NS/*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from patchkit.cli._common import JsonOpt, PassphraseEnvOpt, RegistryOpt, emit, group

root_app = group("root", "A namespace's root of trust (offline root keys delegate to online signing keys).")

NamespaceArg = Annotated[str, typer.Argument(metavar="NS", help="The namespace, e.g. acme.")]
RootKeyOpt = Annotated[list[Path], typer.Option("--root-key", metavar="PRIVATE_PEM",
                                                help="An offline root key (repeatable; as many as the threshold).")]
OutOpt = Annotated[Path | None, typer.Option("--out", metavar="FILE", help="Write the new root.json here (for customers).")]
ExpiresOpt = Annotated[int, typer.Option("--expires-days", metavar="DAYS",
                                         help="Days until the online metadata (timestamp, snapshot) expires.")]


def _summary(r: Any, verb: str) -> str:
    lines = [f"{verb} the root of trust of {r.namespace} in {r.registry}: root v{r.root_version}, "
             f"{r.threshold} of {len(r.root_keys)} root key(s), online key(s) {', '.join(k[:16] + '…' for k in r.online_keys)}"]
    for name, rep in sorted(r.names.items()):
        if "kept" in rep:
            dropped = "; ".join(f"{v} ({why})" for v, why in sorted(rep["dropped"].items()))
            lines.append(f"  {name}: kept and re-signed {', '.join(rep['kept']) or 'nothing'}"
                         + (f"; dropped {dropped}" if dropped else "") + f" (index v{rep['index_version']})")
        else:
            lines.append(f"  {name}: listed (index v{rep['index_version']})")
    if r.root_file:
        lines.append(f"wrote {r.root_file}: customers pin it with `patchkit trust add {r.root_file} --scope '{r.namespace}/*'`")
    return "\n".join(lines)


@root_app.command("init")
def init(
    namespace: NamespaceArg,
    root_key: RootKeyOpt,
    online_key: Annotated[Path, typer.Option("--online-key", metavar="PRIVATE_PEM",
                                             help="The online signing key (publishes, yanks; signs snapshot and timestamp).")],
    threshold: Annotated[int, typer.Option("--threshold", metavar="K", help="Root keys needed to change the root.")] = 1,
    name: Annotated[list[str] | None, typer.Option("--name", metavar="NS/NAME",
                                                   help="An already published name to list now (migration; repeatable).")] = None,
    out: OutOpt = None,
    registry: RegistryOpt = None,
    expires_days: ExpiresOpt = 30,
    passphrase_env: PassphraseEnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create NS's root of trust in the registry (and migrate its published names given with --name)."""
    from patchkit.registry.rootkeys import init as do_init

    r = do_init(namespace, root_key, online_key, threshold=threshold, registry=registry, out=out, expires_days=expires_days,
                passphrase_env=passphrase_env, names=name or [])
    emit(json_, r.to_dict(), _summary(r, "created"))


@root_app.command("rotate-key")
def rotate_key(
    namespace: NamespaceArg,
    root_key: RootKeyOpt,
    new: Annotated[Path, typer.Option("--new", metavar="PRIVATE_PEM", help="The online key that takes over.")],
    old: Annotated[str | None, typer.Option("--old", metavar="KEYID", help="The online key being replaced (checked).")] = None,
    compromised_since: Annotated[str | None, typer.Option(
        "--compromised-since", metavar="TIME",
        help="The old key leaked at TIME (UTC): keep only versions this machine published before it (or --vouch).")] = None,
    vouch: Annotated[list[str] | None, typer.Option("--vouch", metavar="NS/NAME@X.Y.Z=sha256:HEX",
                                                    help="A version you published, by digest (repeatable).")] = None,
    out: OutOpt = None,
    registry: RegistryOpt = None,
    expires_days: ExpiresOpt = 30,
    passphrase_env: PassphraseEnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Replace NS's online key (root keys sign); every kept version is re-signed by the new key.

    After a leak, add --compromised-since: the stolen key, any key it "rotated" to, and every version
    not vouched for are gone for every customer at their next refresh."""
    from patchkit.registry.rootkeys import rotate_key as do_rotate

    r = do_rotate(namespace, root_key, new, old=old, compromised_since=compromised_since, vouch=vouch or [],
                  registry=registry, expires_days=expires_days, passphrase_env=passphrase_env, out=out)
    emit(json_, r.to_dict(), _summary(r, "rotated the online key of"))


@root_app.command("rotate-root")
def rotate_root(
    namespace: NamespaceArg,
    root_key: RootKeyOpt,
    new_root_key: Annotated[list[Path], typer.Option("--new-root-key", metavar="PRIVATE_PEM",
                                                     help="A new root key (repeatable).")],
    online_key: Annotated[Path, typer.Option("--online-key", metavar="PRIVATE_PEM", help="The current online key.")],
    threshold: Annotated[int, typer.Option("--threshold", metavar="K", help="New root keys needed from now on.")] = 1,
    out: OutOpt = None,
    registry: RegistryOpt = None,
    expires_days: ExpiresOpt = 30,
    passphrase_env: PassphraseEnvOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Replace NS's root keys: the new root is signed by the old root's threshold and by the new keys."""
    from patchkit.registry.rootkeys import rotate_root as do_rotate_root

    r = do_rotate_root(namespace, root_key, new_root_key, online_key, threshold=threshold, registry=registry, out=out,
                       expires_days=expires_days, passphrase_env=passphrase_env)
    emit(json_, r.to_dict(), _summary(r, "rotated the root keys of"))


@root_app.command("show")
def show(namespace: NamespaceArg, registry: RegistryOpt = None, json_: JsonOpt = False) -> None:
    """Show NS's root of trust as the registry holds it (signatures checked; expiry shown, not judged)."""
    from patchkit.registry.rootkeys import show as do_show

    r = do_show(namespace, registry=registry)
    emit(json_, r, "\n".join([
        f"{r['namespace']} in {r['registry']}: root v{r['root_version']} (expires {r['root_expires']}), "
        f"{r['threshold']} of {len(r['root_keys'])} root key(s)",
        f"online key(s): {', '.join(k[:16] + '…' for k in r['online_keys'])}; metadata valid until {r['expires']}",
        f"names: {', '.join(r['names']) or 'none yet'}",
    ]))


def register(app: typer.Typer) -> None:
    app.add_typer(root_app, name="root")
