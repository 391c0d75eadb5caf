"""The Hugging Face Hub backend, through `huggingface_hub` (imported lazily: it costs start-up).

Writes (repos, commits, tags) go through the public `HfApi`. Reads, the client's whole path,
go through the library's configured HTTP session (`huggingface_hub.get_session()`, so proxies
and user settings apply) but with patchkit's own rules, since a Hub is hostile until its
answers are verified:
- every answer is read to a byte bound, and every request has a whole-request deadline
  (`PATCHKIT_DOWNLOAD_TIMEOUT`), so neither endless data nor a one-byte-a-second drip hangs us;
- redirects are followed by hand: at most 5, http(s) only, never https -> http, and the token
  is not sent to another host;
- refs are parsed here, and every commit id is checked (40 hex) where it enters.
The endpoint's `user:password@`, if any, never appears in a message or a state key.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from patchkit import constants
from patchkit._internal.jsonio import Malformed, expect_list, loads_strict, require
from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.errors import (
    EndlessDataError,
    InvalidInputError,
    NotFoundError,
    PatchkitError,
    RegistryError,
    UsageError,
    redact,
    strip_userinfo,
)
from patchkit.registry.base import Refs, Registry, Stream
from patchkit.registry.ids import commit_id

MAX_API_BYTES = 4 * 1024 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class HubRegistry(Registry):
    def __init__(self, url: str) -> None:
        rest = url[len("hf://"):].strip("/")
        if rest:
            raise UsageError(f"registry URL {url!r}: hf:// takes no host", "set HF_ENDPOINT to choose the Hub server")
        self.url = "hf://"
        self.endpoint = constants.hf_endpoint()  # may carry credentials: never shown, never stored
        self.shown = strip_userinfo(self.endpoint)
        self.token = constants.hf_token()
        self.ident = f"hf:{self.shown}"
        self._api_obj: Any = None

    # -- plumbing --------------------------------------------------------------------------------
    def _check_online(self) -> None:
        if constants.hf_offline():
            raise RegistryError(f"cannot reach the Hub at {self.shown}: HF_HUB_OFFLINE is set",
                                "unset HF_HUB_OFFLINE, or use a local registry (--registry local)")

    def _api(self) -> Any:
        self._check_online()
        if self._api_obj is None:
            from huggingface_hub import HfApi

            self._api_obj = HfApi(endpoint=self.endpoint, token=self.token or False)
        return self._api_obj

    def _net_errors(self) -> tuple[type[BaseException], ...]:
        """The HTTP library's exception types (httpx for huggingface_hub 1.x, httpx2 for 2.x)."""
        from huggingface_hub import get_session

        module = importlib.import_module(type(get_session()).__module__.split(".")[0])
        names = ("HTTPError", "InvalidURL", "StreamError", "CookieConflict")
        return (OSError, *(t for n in names if isinstance(t := getattr(module, n, None), type)))

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Map huggingface_hub and HTTP failures to patchkit's classes, with secrets redacted."""
        from huggingface_hub.errors import (
            HfHubHTTPError,
            OfflineModeIsEnabled,
            RemoteEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            yield
        except PatchkitError:
            raise
        except (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError):
            raise NotFoundError(f"{what}: not found on the Hub at {self.shown}", "check the name and version") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise self._status_error(what, status) from None
        except OfflineModeIsEnabled:
            raise RegistryError(f"{what}: HF_HUB_OFFLINE is set", "unset HF_HUB_OFFLINE to reach the Hub") from None
        except self._net_errors() as exc:
            raise RegistryError(redact(f"{what}: network failure talking to {self.shown}: {type(exc).__name__}: {exc}"),
                                "check the connection and HF_ENDPOINT, then retry") from None

    def _status_error(self, what: str, status: int) -> PatchkitError:
        if status == 404:
            return NotFoundError(f"{what}: not found on the Hub at {self.shown}", "check the name and version")
        if status in (409, 412):
            return RegistryError(f"{what}: the repo changed meanwhile (HTTP {status})", "run the command again")
        if status in (401, 403):
            return RegistryError(f"{what}: the Hub refused access (HTTP {status})", "set HF_TOKEN to a token with access")
        return RegistryError(f"{what}: the Hub answered HTTP {status}", "try again later")

    def _headers(self) -> dict[str, str]:
        headers = {"user-agent": f"patchkit/{__version__}"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    @contextlib.contextmanager
    def _get(self, path: str, what: str) -> Iterator[tuple[Any, float]]:
        """GET `endpoint + path`, following redirects by hand; yields (response, deadline)."""
        self._check_online()
        from huggingface_hub import get_session

        session = get_session()
        deadline = time.monotonic() + constants.download_timeout()
        url = self.endpoint + path
        headers = self._headers()
        origin = urlsplit(url)
        with self._errors(what):
            for _ in range(MAX_REDIRECTS + 1):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RegistryError(f"{what}: no answer within {constants.download_timeout():g} s",
                                        "the Hub is too slow; retry later, or raise PATCHKIT_DOWNLOAD_TIMEOUT")
                with session.stream("GET", url, headers=headers, timeout=min(30.0, remaining),
                                    follow_redirects=False) as resp:
                    if resp.status_code in _REDIRECTS:
                        url, headers = self._redirect(url, resp.headers.get("location"), headers, origin, what)
                        continue
                    if resp.status_code >= 400:
                        raise self._status_error(what, resp.status_code)
                    yield resp, deadline
                    return
            raise RegistryError(f"{what}: more than {MAX_REDIRECTS} redirects", "the Hub is misconfigured or hostile")

    def _redirect(self, url: str, location: str | None, headers: dict[str, str], origin: Any,
                  what: str) -> tuple[str, dict[str, str]]:
        if not location:
            raise RegistryError(f"{what}: a redirect without a Location", "the Hub is misbehaving")
        target = urljoin(url, location)
        new = urlsplit(target)
        if new.scheme not in ("http", "https"):
            raise RegistryError(f"{what}: refusing a redirect to a {new.scheme or 'schemeless'} URL", "the Hub is hostile")
        if urlsplit(url).scheme == "https" and new.scheme == "http":
            raise RegistryError(f"{what}: refusing a redirect from https to http", "the Hub is hostile")
        if (new.hostname, new.port) != (origin.hostname, origin.port):
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        return target, headers

    def _chunks(self, resp: Any, deadline: float, what: str) -> Iterator[bytes]:
        with self._errors(f"download of {what}"):
            # No chunk size: each piece is yielded as it arrives, so the deadline is checked while a
            # server drips, not only once a whole megabyte has accumulated.
            for chunk in resp.iter_bytes():
                if time.monotonic() > deadline:
                    raise RegistryError(f"{what}: the download did not finish within {constants.download_timeout():g} s",
                                        "the Hub is too slow (or dripping data); retry later, or raise PATCHKIT_DOWNLOAD_TIMEOUT")
                yield chunk

    def _get_json(self, path: str, what: str) -> Any:
        with self._get(path, what) as (resp, deadline):
            buf = bytearray()
            for chunk in self._chunks(resp, deadline, what):
                buf += chunk
                if len(buf) > MAX_API_BYTES:
                    raise EndlessDataError(f"{what}: the Hub's answer exceeds {MAX_API_BYTES} bytes",
                                           "the Hub is misbehaving; refusing endless data")
        try:
            return loads_strict(bytes(buf), what=what)
        except InvalidInputError:
            raise RegistryError(f"{what}: the Hub's answer is not JSON", "the Hub is misbehaving; retry later") from None

    # -- Registry --------------------------------------------------------------------------------
    def refs(self, name: str) -> Refs | None:
        what = f"refs of {name}"
        try:
            raw = self._get_json(f"/api/models/{quote(name, safe='/')}/refs", what)
        except NotFoundError:
            return None
        return parse_refs(raw, where=f"{self.shown} {what}")

    @contextlib.contextmanager
    def stream(self, name: str, rev: str, filename: str) -> Iterator[Stream]:
        what = f"{name}/{filename}@{rev}"
        with self._get(f"/{quote(name, safe='/')}/resolve/{quote(rev, safe='')}/{quote(filename)}", what) as (resp, deadline):
            raw_len = resp.headers.get("content-length")
            length = int(raw_len) if raw_len and raw_len.isdigit() else None
            yield Stream(length, self._chunks(resp, deadline, what))

    def ensure_repo(self, name: str) -> None:
        api = self._api()
        with self._errors(f"create repo {name}"):
            api.create_repo(name, repo_type="model", exist_ok=True)

    def commit(self, name: str, files: Mapping[str, bytes], message: str, *, parent: str | None,
               delete: Sequence[str] = ()) -> str:
        api = self._api()
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        ops: list[Any] = [CommitOperationDelete(path_in_repo=f) for f in delete if f not in files]
        ops += [CommitOperationAdd(path_in_repo=f, path_or_fileobj=data) for f, data in sorted(files.items())]
        with self._errors(f"commit to {name}"):
            info = api.create_commit(name, ops, commit_message=message, revision="main", parent_commit=parent,
                                     repo_type="model")
        # Checked before anything (a tag, the index) is built on it.
        return commit_id(getattr(info, "oid", None), where=f"{self.shown}: the commit to {name}")

    def tag(self, name: str, tag: str, commit: str) -> None:
        api = self._api()
        with self._errors(f"tag {tag} on {name}"):
            api.create_tag(name, tag=tag, revision=commit, repo_type="model")


def parse_refs(raw: Any, *, where: str) -> Refs:
    """`{"branches": [...], "tags": [...]}` as the Hub's refs route answers; anything else is refused."""
    try:
        branches, tags = require(raw, "branches"), require(raw, "tags")
        branches, tags = expect_list(branches, "branches"), expect_list(tags, "tags")
        pairs = {kind: [(str(require(r, "name")), require(r, "targetCommit")) for r in items]
                 for kind, items in (("branches", branches), ("tags", tags))}
    except Malformed:
        raise RegistryError(f"{where}: the answer does not have the shape of Hub refs",
                            "the Hub is misbehaving or is not a Hugging Face Hub; check HF_ENDPOINT") from None
    main = next((commit_id(t, where=f"{where}: branch main") for n, t in pairs["branches"] if n == "main"), None)
    return Refs(main, {n: commit_id(t, where=f"{where}: tag {n[:40]!r}") for n, t in pairs["tags"]})


__all__ = ["HubRegistry", "parse_refs"]
