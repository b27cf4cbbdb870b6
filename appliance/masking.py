"""Secrets out of everything the appliance says: one mask for logs, MQTT topics, `config` and `check`.

Camera URIs carry passwords in two places: the userinfo (``rtsp://admin:pa/ss@host/...``; a
password may hold ``/``, ``:`` or ``@``, so the userinfo runs to the last ``@`` of the URI) and the
query (``http://cam/video.cgi?user=admin&pwd=...``, common for MJPEG cameras). Both are masked
wherever a URI appears in a text: in a log line, an error message, a retained state topic that
every user of the broker may read.
"""

from __future__ import annotations

import re

MASK = "***"
# Query parameters that name a login or a secret, as cameras and services spell them.
SECRET_PARAMETERS = (
    "user",
    "username",
    "usr",
    "login",
    "pass",
    "passwd",
    "password",
    "pwd",
    "token",
    "key",
    "apikey",
    "api_key",
    "auth",
    "secret",
    "sig",
    "signature",
)
_URI = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]+)")
_PARAMETER = re.compile(r"(?P<name>[?&;](?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&;#\s'\"<>]*", re.IGNORECASE)


def _userinfo(match: re.Match[str]) -> str:
    rest = match.group("rest")
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = (f"{user}:{MASK}" if colon else MASK) + rest[at:]
    return match.group("scheme") + _PARAMETER.sub(lambda m: m.group("name") + MASK, rest)


def mask_secrets(text: str) -> str:
    """``text`` with every URI's password (its userinfo's, or a whole userinfo that is a token) and every
    secret-looking query parameter replaced by ``***``."""
    return _URI.sub(_userinfo, text)
