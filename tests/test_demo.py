"""`appliance demo`: a newcomer's first minute needs nothing but the checkout and mosquitto.

The demo runs as a user starts it: a process of its own, no APPLIANCE_* settings, the committed
reference models, a private broker it starts and ends itself, and a temporary folder it removes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.mqtt.private_broker import accepts
from tests.broker import in_clock_order
from tests.parts import need
from tests.service_process import ROOT, service_environ

FIRST_CAPTION_WAIT = 90.0  # seconds; the README promises captions within a minute


def start_demo(tmp_path: Path, *args: str, **extra: str) -> tuple[subprocess.Popen[str], Path]:
    """The demo started in an empty folder with its own TMPDIR; the process and that TMPDIR."""
    temp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    temp.mkdir()
    cwd.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "demo", *args],
        env=service_environ(TMPDIR=str(temp), PYTHONPATH=str(ROOT), **extra),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, temp


def test_the_demo_starts_its_own_broker_prints_captions_and_leaves_nothing_behind(tmp_path: Path) -> None:
    need("mosquitto")
    started = time.monotonic()
    process, temp = start_demo(tmp_path, "--seconds", "300")
    lines: list[str] = []
    first_caption: list[float] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if " caption " in line and not first_caption:
                first_caption.append(time.monotonic() - started)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + FIRST_CAPTION_WAIT
        while not first_caption and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first_caption, f"no caption in {FIRST_CAPTION_WAIT:g} s:\n" + "\n".join(lines)
        time.sleep(5)  # a few more lines, then Ctrl-C as a user would
        process.send_signal(signal.SIGINT)
        process.wait(timeout=40)  # stdout is the reader's alone: communicate() would take half its lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    assert process.stderr is not None
    stderr = process.stderr.read()  # a few warnings at most: the pipe never filled
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    print(f"first caption {first_caption[0]:.1f} s after the start")  # the README's figure

    broker = re.fullmatch(r"-- a private mosquitto on 127\.0\.0\.1:(\d+), for this demo only", lines[0])
    assert broker, lines[:3]
    assert lines[1] == f"-- watching appliance/+/... on 127.0.0.1:{broker[1]}"
    body = [line for line in lines if not line.startswith("--")]
    assert any(" event    start " in line for line in body)
    captions = [line for line in body if " caption " in line]
    assert all(re.search(r"  \[keyframe \d\d:\d\d:\d\d\]$", line) for line in captions), captions
    arrivals = [line[:8] for line in body]
    assert in_clock_order(arrivals), "lines in the order they arrived"
    assert not accepts(int(broker[1])), "the private broker was ended"
    assert list(temp.iterdir()) == [], "the temporary folder was removed"
    assert list((tmp_path / "cwd").iterdir()) == [], "nothing written where it was started"


def test_without_mosquitto_and_without_a_broker_the_demo_says_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    process, _ = start_demo(tmp_path, "--seconds", "5", PATH=str(empty))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert stderr.strip() == (
        "appliance: no broker configured (APPLIANCE_MQTT_HOST) and mosquitto is not installed: "
        "apt-get install mosquitto, or set APPLIANCE_MQTT_HOST"
    )


def test_a_scenario_that_does_not_exist_ends_the_demo_naming_the_camera_key(tmp_path: Path) -> None:
    need("mosquitto")
    process, temp = start_demo(tmp_path, "--scenario", "no-such-scenario", "--seconds", "60")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert stderr.strip().splitlines()[-1].startswith("appliance: APPLIANCE_CAMERA_0: ")
    assert "no-such-scenario" in stderr
    assert list(temp.iterdir()) == []
    assert os.listdir(tmp_path / "cwd") == []


@pytest.mark.parametrize("seconds", ["0", "-5", "soon", "nan", "inf"])
def test_a_duration_that_is_no_positive_number_is_refused_naming_the_flag(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["demo", "--seconds", seconds])
    assert ended.value.code == 2
    assert f"argument --seconds: expected a number of seconds above 0, got {seconds!r}" in capsys.readouterr().err
