"""Secrets never reach a terminal, a log or a `--json` reason.

`HF_ENDPOINT` may carry `user:password@` and `HF_TOKEN` a token; either can surface inside an
exception text (httpx puts the URL in its messages). Every error message passes through
`redact` before it is shown.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from patchkit import constants

_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]*@)")
_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")


def strip_userinfo(url: str) -> str:
    """The URL without `user:password@`: what patchkit shows and what keys its state."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO_RE.sub(r"\g<scheme>", url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(text: str) -> str:
    """Replace URL credentials, the configured HF_TOKEN and anything shaped like a Hub token."""
    out = _USERINFO_RE.sub(r"\g<scheme>***@", text)
    token = constants.hf_token()
    if token and len(token) >= 4:
        out = out.replace(token, "***")
    return _TOKEN_RE.sub("hf_***", out)


__all__ = ["redact", "strip_userinfo"]
