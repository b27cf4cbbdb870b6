"""Download pinned upstream artifacts (pretrained weights) and check them against their SHA-256.

The list (``artifacts.json`` beside this file, or ``--list FILE``) gives each file's URL, size and
SHA-256. A download goes to ``NAME.part`` first and is renamed only once its size and hash match;
an interrupted download is resumed with an HTTP Range request (the server may answer with the
whole file instead, which starts it over). A file whose hash differs is deleted and refused.
An entry not pinned yet (``sha256`` null) is fetched only with ``record``, which writes the size
and hash it got into the list, so the next fetch checks them.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.inference.manifest import sha256_of
from tools.convert import ConvertError
from tools.convert.progress import progress

DEFAULT_LIST = Path(__file__).with_name("artifacts.json")
CHUNK = 1 << 16
ATTEMPTS = 3  # a connection that drops mid-file is resumed this many times in one fetch


@dataclass(frozen=True)
class Artifact:
    name: str
    url: str
    size: int | None
    sha256: str | None
    use: str = ""


def read_artifacts(path: Path) -> dict[str, Artifact]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries: dict[str, dict[str, Any]] = data["artifacts"]
        return {
            name: Artifact(name, str(e["url"]), e.get("size"), e.get("sha256"), str(e.get("use", "")))
            for name, e in entries.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConvertError(f"{path}: not a list of artifacts (url, size, sha256 per name): {error}") from None


def _record(path: Path, artifact: Artifact, size: int, digest: str) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["artifacts"][artifact.name].update(size=size, sha256=digest)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


class _InterruptedError(Exception):
    """The connection closed before the whole file came; what came is kept in the .part file."""


class _RangeNotSatisfiableError(Exception):
    """The server has no bytes after the .part's end: the .part may be the whole file."""


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": "appliance-tools-convert"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # the .part holds the whole file already (or more)
            raise _RangeNotSatisfiableError from None
        raise ConvertError(f"{url}: the server answered HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = error.reason if isinstance(error.reason, str) else getattr(error.reason, "strerror", error.reason)
        raise ConvertError(
            f"{url}: cannot connect ({reason}); this machine looks offline: fetch on a machine with internet and "
            "copy the file over, or pass the file to the command directly"
        ) from None
    except (TimeoutError, ConnectionError) as error:
        raise ConvertError(f"{url}: cannot connect ({error}); this machine looks offline") from None
    return response


def _transfer(artifact: Artifact, part: Path, timeout: float) -> None:
    """Append the rest of the file to ``part`` (or write it anew when the server ignores the Range)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(artifact.url, offset, timeout)
    except _RangeNotSatisfiableError:
        return  # the hash check decides whether what is there is the file
    with response:
        resumed = response.status == 206
        length = response.headers.get("Content-Length")
        total = (offset if resumed else 0) + int(length) if length is not None else artifact.size
        mode = "ab" if resumed else "wb"
        done = offset if resumed else 0
        with (
            part.open(mode) as out,
            progress(total=total, initial=done, unit="B", unit_scale=True, desc=f"fetching {artifact.name}") as bar,
        ):
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
                    raise _InterruptedError(str(error)) from None
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
                done += len(block)
    if total is not None and done < total:
        raise _InterruptedError(f"{done} of {total} bytes")


def fetch(
    artifact: Artifact,
    folder: Path,
    record_in: Path | None = None,
    timeout: float = 30.0,
    say: Callable[[str], None] = print,
) -> Path:
    """``folder/NAME``, downloaded (or resumed) and verified; raises ConvertError on any mismatch."""
    target, part = folder / artifact.name, folder / f"{artifact.name}.part"
    if artifact.sha256 is None and record_in is None:
        raise ConvertError(
            f"{artifact.name}: no pinned SHA-256 in the list; fetch it with --record to pin what it downloads"
        )
    if target.exists() and artifact.sha256 is not None and sha256_of(target) == artifact.sha256:
        say(f"{target}: already here, SHA-256 matches")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if part.exists():
        say(f"{part}: resuming after {part.stat().st_size} bytes")
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _transfer(artifact, part, timeout)
            break
        except _InterruptedError as error:
            if attempt == ATTEMPTS:
                raise ConvertError(
                    f"{artifact.url}: the download broke off ({error}) {ATTEMPTS} times; {part} is kept: "
                    "run the same command again to resume"
                ) from None
            say(f"{artifact.name}: the connection dropped ({error}); resuming")
    return _verify(artifact, part, target, record_in, say)


def _verify(artifact: Artifact, part: Path, target: Path, record_in: Path | None, say: Callable[[str], None]) -> Path:
    size = part.stat().st_size
    if artifact.size is not None and size != artifact.size:
        part.unlink()
        raise ConvertError(
            f"{artifact.url}: got {size} bytes, the list says {artifact.size}; refused and deleted, "
            "the server holds another file than the one pinned"
        )
    digest = sha256_of(part)
    if artifact.sha256 is not None and digest != artifact.sha256:
        part.unlink()
        raise ConvertError(
            f"{artifact.url}: SHA-256 is {digest}, the list pins {artifact.sha256}; refused and deleted "
            "(a damaged or replaced file)"
        )
    os.replace(part, target)
    if artifact.sha256 is None and record_in is not None:
        _record(record_in, artifact, size, digest)
        say(f"{artifact.name}: pinned size {size} and SHA-256 {digest} in {record_in}")
    say(f"{target}: {size} bytes, SHA-256 {digest} verified")
    return target


def fetch_all(names: list[str], folder: Path, listing: Path, record: bool, timeout: float = 30.0) -> list[Path]:
    artifacts = read_artifacts(listing)
    unknown = [name for name in names if name not in artifacts]
    if unknown:
        raise ConvertError(f"{listing}: no artifact {', '.join(unknown)}; it lists {', '.join(artifacts)}")
    return [fetch(artifacts[name], folder, listing if record else None, timeout) for name in names]


def describe(listing: Path) -> str:
    lines = []
    for artifact in read_artifacts(listing).values():
        pinned = f"SHA-256 {artifact.sha256[:12]}…" if artifact.sha256 else "not pinned (use --record)"
        size = f"{artifact.size} bytes" if artifact.size else "size unknown"
        lines.append(f"{artifact.name}: {size}, {pinned}\n    {artifact.url}\n    then: {artifact.use}")
    return "\n".join(lines)
