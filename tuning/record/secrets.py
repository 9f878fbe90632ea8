"""Secrets kept out of what the project prints, logs and stores: the password of a URL
(``scheme://user:password@host``) is masked wherever a URL or a command line leaves the
process; the real URL stays in memory where a connection needs it."""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@ (the user may be empty; the password runs up to the last '@' before the host)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*):(?P<password>[^\s'\"/]*)@")


def mask(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)


def has_password(url: str) -> bool:
    """Whether ``url`` carries a password (``scheme://user:password@host``)."""
    return any(m["password"] and m["password"] != MASK for m in _USERINFO.finditer(url))


def is_masked(url: str) -> bool:
    """Whether ``url`` is one ``mask`` wrote (its password is ``***``)."""
    return any(m["password"] == MASK for m in _USERINFO.finditer(url))


def without_password(url: str) -> str:
    """``url`` without its password (``scheme://user@host``): a database client then takes the
    password from its own sources (PostgreSQL: $PGPASSWORD or ~/.pgpass)."""
    return _USERINFO.sub(lambda m: f"{m['head']}@", url)
