"""``appliance capture``: frames of a configured camera saved for calibration."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.capture import run_capture
from appliance.config import parse_config
from appliance.errors import ConfigError

SIM = "sim:corridor-walk?seed=1&realtime=0"


def test_frames_of_a_camera_slot_are_saved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = parse_config({"APPLIANCE_CAMERA_0": "", "APPLIANCE_CAMERA_1": SIM})
    assert run_capture(config, 1, 6, tmp_path / "frames", every=0.0) == 0
    saved = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in saved] == [f"camera1_{i:05d}.png" for i in range(6)]
    image = cv2.imread(str(saved[0]))
    assert image is not None
    assert image.shape == (480, 640, 3)  # the scenario's own resolution
    assert "saved 6 frames of camera 1" in capsys.readouterr().out


def test_frames_are_spaced_by_every(tmp_path: Path) -> None:
    # looping: drawn as fast as it goes, the scenario's 400 frames take 0.4 s on a fast server, less
    # than the 0.6 s this capture needs, and the camera would end first
    config = parse_config({"APPLIANCE_CAMERA_0": f"{SIM}&loop=1"})
    started = time.monotonic()
    assert run_capture(config, 0, 4, tmp_path, every=0.2) == 0
    assert time.monotonic() - started >= 0.6
    assert len(list(tmp_path.glob("*.png"))) == 4


def test_an_empty_slot_names_its_key(tmp_path: Path) -> None:
    config = parse_config({"APPLIANCE_CAMERA_0": SIM, "APPLIANCE_CAMERA_1": ""})
    with pytest.raises(ConfigError, match=r"^APPLIANCE_CAMERA_1: camera slot 1 is empty"):
        run_capture(config, 1, 3, tmp_path, every=0.0)
    assert list(tmp_path.iterdir()) == []


def test_a_camera_that_ends_early_keeps_what_it_saved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), i * 50, np.uint8))
    writer.release()
    config = parse_config({"APPLIANCE_CAMERA_0": f"file:{clip}?realtime=0"})
    assert run_capture(config, 0, 10, tmp_path / "out", every=0.0) == 1
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    assert "camera 0 ended after 3 of 10 frames" in capsys.readouterr().out


def test_the_capture_command_takes_its_camera_from_the_env_file(tmp_path: Path) -> None:
    from appliance.cli import main

    env = tmp_path / "appliance.env"
    env.write_text(f"APPLIANCE_CAMERA_0=\nAPPLIANCE_CAMERA_1={SIM}\n")
    out = tmp_path / "frames"
    args = ["capture", "--env-file", str(env), "--camera", "1", "--frames", "2", "--every", "0", "--out", str(out)]
    assert main(args) == 0
    assert len(list(out.glob("camera1_*.png"))) == 2
    assert main(["capture", "--env-file", str(env), "--camera", "0", "--frames", "1", "--out", str(out)]) == 2
