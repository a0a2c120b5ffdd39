"""The one way a store URL is shown: its secrets masked, wherever it is printed, logged or tagged.

A URL may carry a password in its userinfo (``postgresql://user:pw@host/db``) or as a query
parameter (``?password=pw``, ``?sslpassword=``, ``?token=`` ...). :func:`mask_url` replaces each
with ``***``; :func:`redact` does the same to any text that may quote the URL or its password
(a driver's error message).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
# query parameters that hold a secret: password, passwd, pass, pwd, sslpassword, secret, token,
# access_token, api_key, apikey ...
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|api[_-]?key", re.IGNORECASE)


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """``(scheme://, userinfo, rest after @)``; the userinfo ends at the last ``@`` before the
    query, so an unencoded ``@`` or ``/`` inside a password stays inside it."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, _ = re.split(r"[?#]", rest, maxsplit=1)[0].rpartition("@")
    if not sep or not at:
        return None
    return scheme + sep, userinfo, rest[len(userinfo) + 1:]


def _query_secrets(query: str) -> list[tuple[str, str]]:
    pairs = (item.partition("=") for item in query.split("&"))
    return [(key, value) for key, eq, value in pairs if eq and value and _SECRET_PARAM.search(unquote(key))]


def secrets(url: str) -> list[str]:
    """The secret values ``url`` carries (as written and percent-decoded), longest first."""
    found = [value for _, value in _query_secrets(url.partition("?")[2].partition("#")[0])]
    parts = _userinfo(url)
    if parts and ":" in parts[1]:
        found.append(parts[1].partition(":")[2])
    found += [unquote(v) for v in found]
    return sorted({v for v in found if v}, key=len, reverse=True)


def mask_url(url: str) -> str:
    """``url`` with the password of its userinfo and every secret query parameter replaced by
    ``***`` (``postgresql://u:***@db/x?sslmode=require&password=***``)."""
    parts = _userinfo(url)
    if parts and ":" in parts[1]:
        url = f"{parts[0]}{parts[1].partition(':')[0]}:{MASK}@{parts[2]}"
    head, sep, query = url.partition("?")
    for key, value in _query_secrets(query.partition("#")[0]):
        query = query.replace(f"{key}={value}", f"{key}={MASK}")
    return head + sep + query


def redact(text: str, *urls: str) -> str:
    """``text`` with every secret of ``urls`` replaced by ``***`` (each URL itself masked first)."""
    for url in urls:
        text = text.replace(url, mask_url(url))
        for secret in secrets(url):
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return text


def without_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``(url without user:password@, (user, password))``, or ``(url, None)`` when it has none."""
    parts = _userinfo(url)
    if parts is None:
        return url, None
    user, _, password = parts[1].partition(":")
    return parts[0] + parts[2], (unquote(user), unquote(password))
