"""``appliance check``: a healthy models folder, and every way a models folder goes wrong."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.cli import main
from appliance.config import (
    SETTINGS,
    CameraSlot,
    Choice,
    Flag,
    Float,
    Host,
    Int,
    Name,
    OptionalFloat,
    OptionalPath,
    Secret,
    Size,
    Text,
    Words,
)
from appliance.inference.manifest import sha256_of
from tests.conftest import ToyModels


def write_env(folder: Path, models: Path, extra: str = "") -> Path:
    env = folder / "appliance.env"
    env.write_text(f"APPLIANCE_MODELS_DIR={models}\nAPPLIANCE_THREADS=2\n{extra}")
    return env


def run_check(env: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["check", "--env-file", str(env), "--repeat", "2"])
    out, err = capsys.readouterr()
    return status, out, err


def error_line(stderr: str) -> str:
    """The one error line: the last line of stderr, after any progress logs, and no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert [line for line in lines if line.startswith("appliance: ")] == lines[-1:], stderr
    return lines[-1]


def test_check_loads_runs_and_tables_every_model(toy_models: ToyModels, tmp_path: Path) -> None:
    env = write_env(tmp_path, toy_models.folder)
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "check", "--env-file", str(env)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"runtime: ai_edge_litert [\d.]+, 2 threads", lines[0])
    header = next(i for i, line in enumerate(lines) if line.startswith("slot"))
    assert lines[header].split() == ["slot", "file", "input", "shape", "dtype", "ms/invoke"]
    rows = [line.split() for line in lines[header + 1 : header + 5]]
    assert [(r[0], r[1]) for r in rows] == [
        ("detector", "detector.tflite"),
        ("classifier", "classifier.tflite"),
        ("captioner", "captioner_encoder.tflite"),
        ("captioner", "captioner_decoder.tflite"),
    ]
    assert rows[0][2:4] == ["1x128x160x3", "int8"]
    assert rows[1][2:4] == ["1x48x48x3", "int8"]
    assert all(float(row[-1]) > 0 for row in rows)
    assert re.search(r"^detector: [\d.]+ ms per 640x480 frame", result.stdout, re.M)
    captioner = r"^captioner: [\d.]+ ms per caption \(beam width 3, the keyframe and its mirror image\)$"
    assert re.search(captioner, result.stdout, re.M)
    assert "person classes: person; fallen-person classes: none" in lines
    presence = (
        r"^presence: boxes from [\d.]+ count people, from [\d.]+ \(lying where the picture changed\) make one "
        r"present; from the detector's manifest: calibration: .*$"
    )
    assert re.search(presence, result.stdout, re.M)
    assert lines[-1].startswith("ok:")


def test_check_says_which_models_may_speak_about_each_camera(
    models_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The toy models say they were trained on a drawn world: validated for a sim: camera, not a real one,
    where the configured alert labels and words can raise nothing (said, not refused: the demo runs on)."""
    status, out, _ = run_check(write_env(tmp_path, models_copy, "APPLIANCE_CAMERA_1=sim:shop-knife\n"), capsys)
    assert status == 0
    lines = out.splitlines()
    assert (
        "cam0: a real camera; validated: none; not validated (published, marked, never alerting): "
        "detector (synthetic), classifier (synthetic), captioner (synthetic)"
    ) in lines
    assert (
        "cam1: a synthetic camera; validated: detector, classifier, captioner; "
        "not validated (published, marked, never alerting): none"
    ) in lines
    [warning] = [line for line in lines if line.startswith("warning: ")]
    assert warning.startswith(
        "warning: cam0 (real camera): no alert from APPLIANCE_ALERT_LABELS (violence: classifier); "
        "APPLIANCE_ALERT_WORDS (captioner): not validated for a real camera"
    )


def test_check_names_the_presence_scores_in_force_and_where_they_came_from(
    models_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run_check(write_env(tmp_path, models_copy, "APPLIANCE_PRESENCE_SCORE=0.45\n"), capsys)
    assert status == 0
    line = next(line for line in out.splitlines() if line.startswith("presence: "))
    assert line.startswith("presence: boxes from 0.45 count people, from ")
    assert "; from APPLIANCE_PRESENCE_SCORE (else the detector's manifest: calibration: " in line
    # a manifest an older toolchain wrote: one person class by index, no presence scores
    manifest = _manifest(models_copy)
    manifest["slots"]["detector"]["params"] = {"person_class": 0, "coords": "normalized"}
    (models_copy / "manifest.json").write_text(json.dumps(manifest))
    status, out, _ = run_check(write_env(tmp_path, models_copy, "APPLIANCE_PRESENCE_MOTION=0\n"), capsys)
    assert status == 0
    assert "person classes: person; fallen-person classes: none" in out.splitlines()
    expected = (
        "presence: boxes from 0.5 count people, from 0.7 (moving or not) make one present; "
        "from the appliance's defaults (the manifest names none)"
    )
    assert expected in out.splitlines()


def _manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    return data


def _save(folder: Path, data: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(data))


def _rehash(folder: Path, slot: str, section: str, role: str) -> None:
    """Make the manifest agree with a file a test changed, so that a later check is reached."""
    data = _manifest(folder)
    entry = data["slots"][slot][section][role]
    entry["sha256"] = sha256_of(folder / entry["file"])
    _save(folder, data)


def no_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()


def missing_model(folder: Path) -> None:
    (folder / "classifier.tflite").unlink()


def changed_model(folder: Path) -> None:
    with (folder / "detector.tflite").open("ab") as stream:
        stream.write(b"\0")


def truncated_model(folder: Path) -> None:
    path = folder / "captioner_decoder.tflite"
    path.write_bytes(path.read_bytes()[:5000])
    _rehash(folder, "captioner", "models", "decoder")


def random_bytes_model(folder: Path) -> None:
    (folder / "detector.tflite").write_bytes(np.random.default_rng(0).bytes(100_000))
    _rehash(folder, "detector", "models", "model")


def wrong_input_shape(folder: Path) -> None:
    data = _manifest(folder)
    data["slots"]["detector"]["models"]["model"]["inputs"]["images"]["shape"] = [1, 320, 320, 3]
    _save(folder, data)


def unknown_family(folder: Path) -> None:
    data = _manifest(folder)
    data["slots"]["detector"]["family"] = "yolov5"
    _save(folder, data)


def labels_do_not_fit_the_model(folder: Path) -> None:
    with (folder / "detector_labels.txt").open("a") as stream:
        stream.write("car\n")
    _rehash(folder, "detector", "files", "labels")


def manifest_not_json(folder: Path) -> None:
    (folder / "manifest.json").write_text("{ this is not json")


def manifest_without_command(folder: Path) -> None:
    data = _manifest(folder)
    del data["slots"]["classifier"]["command"]
    _save(folder, data)


def unknown_slot(folder: Path) -> None:
    data = _manifest(folder)
    data["slots"]["tracker"] = data["slots"]["detector"]
    _save(folder, data)


def bad_param(folder: Path) -> None:
    data = _manifest(folder)
    data["slots"]["detector"]["params"]["coords"] = "centimetres"
    _save(folder, data)


REGENERATE = r"regenerate it with: toy"  # the command the toy models record (tests/conftest.py)
DAMAGE: list[tuple[Callable[[Path], None], str]] = [
    (no_manifest, r"manifest\.json: no model manifest here; make the models with: python -m tools\.convert --help"),
    (missing_model, rf"classifier\.tflite: missing; {REGENERATE} classifier"),
    (
        changed_model,
        rf"detector\.tflite: SHA-256 is \w+…, the manifest says \w+…: .*changed or is damaged; {REGENERATE}",
    ),
    (truncated_model, rf"captioner_decoder\.tflite: the TFLite runtime cannot load it: .*Flatbuffer.*; {REGENERATE}"),
    (random_bytes_model, rf"detector\.tflite: the TFLite runtime cannot load it: .*; {REGENERATE} detector"),
    (
        wrong_input_shape,
        rf"detector\.tflite: input 'images' is 1x128x160x3 int8, the manifest says 1x320x320x3 int8; {REGENERATE}",
    ),
    (unknown_family, r"manifest\.json: slots\.detector\.family: unknown family 'yolov5'; this appliance knows yolov8"),
    (
        labels_do_not_fit_the_model,
        rf"slots\.detector: detector\.tflite: tensor .* expected \[1, 4 \+ 3 classes .*; {REGENERATE}",
    ),
    (manifest_not_json, r"manifest\.json: not valid JSON"),
    (manifest_without_command, r"manifest\.json: slots\.classifier\.command: expected a string"),
    (unknown_slot, r"manifest\.json: slots\.tracker: unknown slot; the slots are detector, classifier, captioner"),
    (bad_param, rf"slots\.detector: params\.coords is 'centimetres', expected 'normalized' or 'pixels'; {REGENERATE}"),
]


@pytest.mark.parametrize(("damage", "message"), DAMAGE, ids=[d.__name__ for d, _ in DAMAGE])
def test_a_damaged_models_folder_stops_check_with_status_3(
    models_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Callable[[Path], None], message: str
) -> None:
    damage(models_copy)
    status, _, err = run_check(write_env(tmp_path, models_copy), capsys)
    assert status == 3
    assert re.search(message, error_line(err)), err


def test_a_damaged_model_exits_3_from_the_real_process(models_copy: Path, tmp_path: Path) -> None:
    random_bytes_model(models_copy)
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "check", "--env-file", str(write_env(tmp_path, models_copy))],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 3
    assert "detector.tflite: the TFLite runtime cannot load it" in error_line(result.stderr)


def test_an_unknown_detector_label_is_a_config_error(
    toy_models: ToyModels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = write_env(tmp_path, toy_models.folder, "APPLIANCE_DETECT_LABELS=person,persn\n")
    status, _, err = run_check(env, capsys)
    assert status == 2
    expected = r"appliance: APPLIANCE_DETECT_LABELS: persn not among the detector's classes \(person, bag\)"
    assert re.fullmatch(expected, error_line(err))


# --- every bad value `run` would reject or could not use, refused by `check` with its key named


def _fuzz() -> list[tuple[str, str, dict[str, str]]]:
    """(key, bad value, other settings it needs): a bad value for each kind of setting, several forms each,
    and the values the fault-injection run found `check` passing while `run` rejected or could not use them."""
    by_kind: dict[type, list[str]] = {
        Int: ["abc", "1.5", "-1", "99999999", "", "0x10"],
        Float: ["nan", "inf", "-1", "1e12", "x", ""],
        OptionalFloat: ["nan", "-1", "x"],
        Choice: ["maybe", "", "info,debug"],
        Words: [",", "a,,b", ""],
        Flag: ["2", "maybe", ""],
        Name: ["a b", "a/b", "#", "cam+1", "x" * 65, "caméra", ""],
        Host: ["host:1883", "mqtt://host", "", "a b", "host/x", "-bad", "[::1]:1883"],
        CameraSlot: ["usb:0", "rtsp:/x", "sim:no-such-scenario", "sim:shop-knife?view=7", "file:", "picamera2:x"],
        Size: ["640", "641x480", "0x0", "640x480x3", "x"],
    }
    cases: list[tuple[str, str, dict[str, str]]] = []
    for setting in SETTINGS:
        kind = type(setting.kind)
        for value in by_kind.get(kind, []):
            if kind is Words and value == "" and setting.kind.optional:  # type: ignore[attr-defined]
                continue  # empty is a valid list for an optional one
            if kind is Name and value == "" and setting.kind.optional:  # type: ignore[attr-defined]
                continue
            cases.append((setting.key, value, {}))
        if isinstance(setting.kind, Float | OptionalFloat):
            cases.append((setting.key, f"{setting.kind.high * 2:g}", {}))  # above its range (a score of 2)
    under_a_file = "/etc/hostname/appliance"  # not writable even for root: a folder inside a file
    cases += [
        ("APPLIANCE_DATA_DIR", under_a_file, {}),
        ("APPLIANCE_RECORD_DIR", under_a_file, {}),
        ("APPLIANCE_MQTT_CA_FILE", "/nonexistent/ca.crt", {"APPLIANCE_MQTT_TLS": "1"}),
        ("APPLIANCE_MQTT_CERT_FILE", "/nonexistent/client.crt", {"APPLIANCE_MQTT_TLS": "1"}),
        ("APPLIANCE_PRESENCE_HITS", "5", {"APPLIANCE_PRESENCE_WINDOW": "4"}),
        ("APPLIANCE_ALERT_LABELS", "knife", {}),
        ("APPLIANCE_DETECT_LABELS", "car", {}),
        ("APPLIANCE_CAMERA_1", "sim:no-such-scenario", {}),
        ("APPLIANCE_CAMERA_0_NAME", "x" * 300, {}),
    ]
    return cases


FUZZ = _fuzz()


@pytest.mark.parametrize(("key", "value", "more"), FUZZ, ids=[f"{k}={v[:20]!r}" for k, v, _ in FUZZ])
def test_check_refuses_every_bad_value_naming_its_key(
    key: str, value: str, more: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {
        "APPLIANCE_CAMERA_0": "sim:shop-knife",
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_THREADS": "1",
        **more,
        key: value,
    }
    env = tmp_path / "appliance.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    assert main(["check", "--env-file", str(env), "--repeat", "1"]) == 2
    line = error_line(capsys.readouterr().err)
    assert key in line, line


def test_the_fuzz_list_covers_every_setting_that_can_be_wrong() -> None:
    fuzzed = {key for key, _, _ in FUZZ}
    free = {s.key for s in SETTINGS if type(s.kind) in (Text, Secret, OptionalPath)}  # anything goes, or a path
    assert {s.key for s in SETTINGS} - free <= fuzzed
    print(f"{len(FUZZ)} bad values over {len(fuzzed)} settings")
