"""The Hugging Face Hub backend, through `huggingface_hub` (imported lazily: it costs start-up).

API calls (repos, commits, tags, refs) go through `HfApi`; downloads stream through the
library's HTTP session so the client can cut a download off at the size the index states,
which `hf_hub_download` cannot do. The artifact's README.md sits at the repo root, so the
Hub shows the patch's model card as the repo's card.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from patchkit import constants
from patchkit.errors import NotFoundError, PatchkitError, RegistryError, UsageError
from patchkit.registry.backends import CHUNK, Refs, Registry, Stream

TIMEOUT_S = 30.0


class HubRegistry(Registry):
    def __init__(self, url: str) -> None:
        rest = url[len("hf://"):].strip("/")
        if rest:
            raise UsageError(f"registry URL {url!r}: hf:// takes no host", "set HF_ENDPOINT to choose the Hub server")
        self.url = "hf://"
        self.endpoint = constants.hf_endpoint()
        self.token = constants.hf_token()
        self.ident = f"hf:{self.endpoint}"
        self._api_obj: Any = None

    # -- plumbing --------------------------------------------------------------------------------
    def _api(self) -> Any:
        if constants.hf_offline():
            raise RegistryError(f"cannot reach the Hub at {self.endpoint}: HF_HUB_OFFLINE is set",
                                "unset HF_HUB_OFFLINE, or use a local registry (--registry local)")
        if self._api_obj is None:
            from huggingface_hub import HfApi

            self._api_obj = HfApi(endpoint=self.endpoint, token=self.token or False)
        return self._api_obj

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        import httpx2
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
            raise NotFoundError(f"{what}: not found on the Hub at {self.endpoint}", "check the name and version") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status == 404:
                raise NotFoundError(f"{what}: not found on the Hub at {self.endpoint}", "check the name and version") from None
            if status in (409, 412):
                raise RegistryError(f"{what}: the repo changed meanwhile (HTTP {status})", "run the command again") from None
            if status in (401, 403):
                raise RegistryError(f"{what}: the Hub refused access (HTTP {status})", "set HF_TOKEN to a token with access") from None
            raise RegistryError(f"{what}: the Hub answered HTTP {status}", "try again later") from None
        except (OfflineModeIsEnabled, httpx2.HTTPError, OSError) as exc:
            raise RegistryError(f"{what}: network failure talking to {self.endpoint}: {type(exc).__name__}: {exc}",
                                "check the connection and HF_ENDPOINT, then retry") from None

    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils._headers import build_hf_headers

        return dict(build_hf_headers(token=self.token or False, library_name="patchkit"))

    # -- Registry --------------------------------------------------------------------------------
    def refs(self, name: str) -> Refs | None:
        api = self._api()
        try:
            with self._errors(f"refs of {name}"):
                r = api.list_repo_refs(name, repo_type="model")
        except NotFoundError:
            return None
        main = next((b.target_commit for b in r.branches if b.name == "main"), None)
        return Refs(main, {t.name: t.target_commit for t in r.tags})

    @contextlib.contextmanager
    def stream(self, name: str, rev: str, filename: str) -> Iterator[Stream]:
        self._api()
        from huggingface_hub import get_session

        url = f"{self.endpoint}/{name}/resolve/{quote(rev, safe='')}/{quote(filename)}"
        what = f"{name}/{filename}@{rev}"
        with self._errors(what), get_session().stream("GET", url, headers=self._headers(), timeout=TIMEOUT_S,
                                                      follow_redirects=True) as resp:
            if resp.status_code == 404:
                raise NotFoundError(f"{what}: not found on the Hub at {self.endpoint}", "check the name and version")
            if resp.status_code >= 400:
                raise RegistryError(f"{what}: the Hub answered HTTP {resp.status_code}", "try again later")
            raw_len = resp.headers.get("content-length")
            length = int(raw_len) if raw_len and raw_len.isdigit() else None

            def chunks() -> Iterator[bytes]:
                with self._errors(f"download of {what}"):
                    yield from resp.iter_bytes(CHUNK)

            yield Stream(length, chunks())

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
        return str(info.oid)

    def tag(self, name: str, tag: str, commit: str) -> None:
        api = self._api()
        with self._errors(f"tag {tag} on {name}"):
            api.create_tag(name, tag=tag, revision=commit, repo_type="model")


__all__ = ["HubRegistry"]
