"""Camera URIs: which source a camera slot opens, parsed without touching any device.

``picamera2:N``, ``v4l2:/dev/videoN`` (or ``v4l2:N``), ``rtsp://…``, ``rtsps://…``, ``http://…``,
``https://…``, ``file:PATH[?loop=1&realtime=0]``, ``sim:SCENARIO[?seed=N&view=K&realtime=0]``.
Parsing is pure, so the configuration can check a URI at start-up; opening is the source's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from appliance.errors import InvalidValueError

SCHEMES = ("picamera2", "v4l2", "rtsp", "rtsps", "http", "https", "file", "sim")
# Query parameters each scheme accepts, with what each must be ("int" or "flag": 0 or 1).
_PARAMETERS: dict[str, dict[str, str]] = {
    "file": {"loop": "flag", "realtime": "flag"},
    "sim": {"seed": "int", "view": "int", "realtime": "flag", "loop": "flag"},
}
NETWORK = ("rtsp", "rtsps", "http", "https")


@dataclass(frozen=True)
class CameraUri:
    """A parsed camera URI: ``scheme``, ``target`` (what follows the scheme) and integer ``options``."""

    text: str
    scheme: str
    target: str
    options: dict[str, int] = field(default_factory=dict)

    def option(self, name: str, default: int) -> int:
        return self.options.get(name, default)

    @classmethod
    def parse(cls, text: str) -> CameraUri:
        """The URI ``text``; raises InvalidValueError saying what is wrong."""
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in SCHEMES:
            raise InvalidValueError(f"unknown camera kind {scheme!r}")
        if scheme in NETWORK:
            if not rest.startswith("//") or len(rest) <= 2:
                raise InvalidValueError(f"{scheme} needs {scheme}://HOST/...")
            return cls(text, scheme, text)
        target, _, query = rest.partition("?")
        if not target:
            raise InvalidValueError(f"{scheme}: needs what to open after the colon")
        if scheme == "picamera2" and not target.isdigit():
            raise InvalidValueError("picamera2 needs a camera number, as in picamera2:0")
        if scheme == "v4l2" and not (target.isdigit() or target.startswith("/dev/")):
            raise InvalidValueError("v4l2 needs a device, as in v4l2:/dev/video0")
        allowed = _PARAMETERS.get(scheme, {})
        options: dict[str, int] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name not in allowed:
                accepted = ", ".join(allowed) or "none"
                raise InvalidValueError(f"{scheme}: unknown option {name!r} (accepted: {accepted})")
            if not value.isdigit() or (allowed[name] == "flag" and value not in ("0", "1")):
                wanted = "0 or 1" if allowed[name] == "flag" else "an integer"
                raise InvalidValueError(f"{scheme}: option {name} must be {wanted}")
            options[name] = int(value)
        return cls(text, scheme, target, options)


def describe_accepted() -> str:
    return "empty, or a camera URI: picamera2:N, v4l2:/dev/videoN, rtsp://..., http://..., file:PATH, sim:SCENARIO"
