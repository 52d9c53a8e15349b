"""Credentials out of what is stored, logged or shown: a database URL's password becomes ``***``."""

from __future__ import annotations

import re


def redact_url(url: str | None) -> str | None:
    """A database URL with its password replaced by ``***`` (``postgresql://user:***@host/db``)."""
    if not url or "@" not in url or "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}{at}{location}"


def redact_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (e.g. a command line)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


_URL_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.-]*://[^\s:/@]+:)[^\s]*@(?=[^\s@]*$|[^\s@]*\s)")
