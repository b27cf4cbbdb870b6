"""The configuration: declared keys, the env file, and the errors a user gets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import SETTINGS, Config, as_env, load_config, markdown_table, parse_config, read_env_file
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_every_key_is_prefixed_documented_and_its_default_is_valid() -> None:
    for setting in SETTINGS:
        assert setting.key.startswith("APPLIANCE_")
        assert setting.help.endswith(".")
        setting.kind.parse(setting.default)
    assert parse_config({}) == Config()


def test_readme_table_is_the_declared_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's settings table is stale: paste `appliance config --table` into it"


def test_env_file_syntax_of_systemd_environmentfile(tmp_path: Path) -> None:
    env = tmp_path / "appliance.env"
    text = (
        "\ufeff# edited on a PC\r\n"
        "; another comment\r\n"
        "\r\n"
        "APPLIANCE_THREADS = 3\r\n"
        'APPLIANCE_DETECT_LABELS="person, bag"\r\n'
        "APPLIANCE_LOG_LEVEL='DEBUG'\r\n"
    )
    env.write_bytes(text.encode("utf-8"))
    assert read_env_file(env) == {
        "APPLIANCE_THREADS": "3",
        "APPLIANCE_DETECT_LABELS": "person, bag",
        "APPLIANCE_LOG_LEVEL": "DEBUG",
    }
    config = load_config({}, env)
    assert (config.threads, config.detect_labels, config.log_level) == (3, ("person", "bag"), "debug")


def test_environment_overrides_the_file_and_other_variables_are_ignored(tmp_path: Path) -> None:
    env = tmp_path / "appliance.env"
    env.write_text("APPLIANCE_THREADS=3\nAPPLIANCE_DETECT_SCORE=0.5\n")
    config = load_config({"APPLIANCE_THREADS": "1", "PATH": "/bin", "HOME": "/root"}, env)
    assert (config.threads, config.detect_score) == (1, 0.5)


def test_as_env_loads_back_to_the_same_config() -> None:
    config = parse_config({"APPLIANCE_DETECT_LABELS": "person,bag", "APPLIANCE_MODELS_DIR": "/opt/models"})
    values = dict(line.split("=", 1) for line in as_env(config).splitlines())
    assert parse_config(values) == config
    assert parse_config(dict(line.split("=", 1) for line in as_env(Config()).splitlines())) == Config()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"APPLIANCE_THREADS": "four"}, r"APPLIANCE_THREADS='four' is not valid: expected an integer from 0 to 64"),
        ({"APPLIANCE_THREADS": "65"}, r"APPLIANCE_THREADS='65' .* from 0 to 64"),
        ({"APPLIANCE_DETECT_SCORE": "nan"}, r"APPLIANCE_DETECT_SCORE='nan' .* a number from 0.01 to 1"),
        ({"APPLIANCE_LOG_LEVEL": "loud"}, r"APPLIANCE_LOG_LEVEL='loud' .* one of debug, info, warning, error"),
        ({"APPLIANCE_DETECT_LABELS": "person,,bag"}, r"APPLIANCE_DETECT_LABELS=.* comma-separated list"),
        ({"APPLIANCE_THREAD": "2"}, r"APPLIANCE_THREAD: unknown setting \(did you mean APPLIANCE_THREADS\?\)"),
        ({"APPLIANCE_COLOUR": "red"}, r"APPLIANCE_COLOUR: unknown setting \(see the settings table in the README\)"),
        (
            {"APPLIANCE_CAMERA_0": "webcam:0"},
            r"APPLIANCE_CAMERA_0='webcam:0' is not valid \(unknown camera kind 'webcam'\): expected",
        ),
        ({"APPLIANCE_CAMERA_1": "sim:room-fight?speed=2"}, r"APPLIANCE_CAMERA_1=.*unknown option 'speed'"),
        ({"APPLIANCE_CAMERA_1": "file:a.mp4?loop=yes"}, r"APPLIANCE_CAMERA_1=.*option loop must be 0 or 1"),
        ({"APPLIANCE_CAMERA_0": "picamera2:front"}, r"APPLIANCE_CAMERA_0=.*picamera2 needs a camera number"),
        ({"APPLIANCE_CAMERA_0": "rtsp:cam"}, r"APPLIANCE_CAMERA_0=.*rtsp needs rtsp://HOST"),
        ({"APPLIANCE_CAMERA_0_NAME": "front door"}, r"APPLIANCE_CAMERA_0_NAME=.*letters, digits"),
        ({"APPLIANCE_CAMERA_SIZE": "641x480"}, r"APPLIANCE_CAMERA_SIZE=.*WIDTHxHEIGHT"),
        ({"APPLIANCE_RECORD": "maybe"}, r"APPLIANCE_RECORD='maybe' .* 1 or 0"),
        ({"APPLIANCE_TRIGGER": "all"}, r"APPLIANCE_TRIGGER='all' .* one of any, both"),
    ],
)
def test_bad_values_name_the_key_and_what_it_accepts(values: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config(values)


def test_all_problems_are_reported_together_on_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"APPLIANCE_THREADS": "x", "APPLIANCE_CAPTION_BEAM": "0", "APPLIANCE_NOPE": "1"})
    message = str(caught.value)
    assert "\n" not in message
    for key in ("APPLIANCE_THREADS", "APPLIANCE_CAPTION_BEAM", "APPLIANCE_NOPE"):
        assert key in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"APPLIANCE_THREADS=2\nthreads 4\n", r"appliance\.env:2: expected KEY=value, found 'threads 4'"),
        (b"MQTT_HOST=broker\n", r"appliance\.env:1: MQTT_HOST is not an appliance setting"),
        (b"=3\n", r"appliance\.env:1: expected KEY=value"),
        (b"APPLIANCE_THREADS=\xff\xfe\n", r"appliance\.env: cannot read the env file: it is not UTF-8 text"),
    ],
)
def test_bad_env_files_name_the_file_and_line(tmp_path: Path, content: bytes, expected: str) -> None:
    env = tmp_path / "appliance.env"
    env.write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        load_config({}, env)


def test_a_missing_env_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.env: cannot read the env file: No such file or directory"):
        load_config({}, tmp_path / "nowhere.env")


def _appliance(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("env_text", "key"),
    [("APPLIANCE_CAPTION_BEAM=0\n", "APPLIANCE_CAPTION_BEAM"), ("APPLIANCE_MODEL_DIR=/x\n", "APPLIANCE_MODEL_DIR")],
)
def test_check_stops_on_a_config_error_with_status_2_and_one_line(tmp_path: Path, env_text: str, key: str) -> None:
    env = tmp_path / "appliance.env"
    env.write_text(env_text)
    result = _appliance("check", "--env-file", str(env))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("appliance: ")
    assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_check_stops_on_an_unreadable_env_file_with_status_2(tmp_path: Path) -> None:
    result = _appliance("check", "--env-file", str(tmp_path / "missing.env"))
    assert result.returncode == 2
    assert re.fullmatch(
        r"appliance: .*missing\.env: cannot read the env file: No such file or directory\n", result.stderr
    )


def test_config_command_prints_a_loadable_env_file(tmp_path: Path) -> None:
    env = tmp_path / "appliance.env"
    env.write_text("APPLIANCE_THREADS=3\n")
    result = _appliance("config", "--env-file", str(env))
    assert result.returncode == 0, result.stderr
    assert "APPLIANCE_THREADS=3\n" in result.stdout
    (tmp_path / "printed.env").write_text(result.stdout)
    assert load_config({}, tmp_path / "printed.env") == load_config({}, env)


def test_config_table_command_prints_the_readme_table() -> None:
    result = _appliance("config", "--table")
    assert result.returncode == 0
    assert result.stdout == markdown_table()


def test_camera_uris_and_flags_load_back_from_the_env_file() -> None:
    values = {
        "APPLIANCE_CAMERA_0": "sim:two-angles?view=1&seed=3",
        "APPLIANCE_CAMERA_1": "rtsp://viewer:secret@127.0.0.1:8554/stream",
        "APPLIANCE_RECORD": "off",
        "APPLIANCE_CAMERA_SIZE": "1280x720",
    }
    config = parse_config(values)
    assert config.camera_0 is not None
    assert (config.camera_0.scheme, config.camera_0.target) == ("sim", "two-angles")
    assert (config.camera_0.option("view", 0), config.camera_0.option("seed", 0)) == (1, 3)
    assert config.camera_1 is not None
    assert config.camera_1.scheme == "rtsp"
    assert config.record is False
    assert config.camera_size == (1280, 720)
    assert parse_config(dict(line.split("=", 1) for line in as_env(config).splitlines())) == config


def test_run_stops_with_status_2_naming_the_camera_key(tmp_path: Path) -> None:
    env = tmp_path / "appliance.env"
    env.write_text("APPLIANCE_CAMERA_0=\nAPPLIANCE_CAMERA_1=\n")
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--env-file", str(env)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "appliance: APPLIANCE_CAMERA_0 and APPLIANCE_CAMERA_1 are both empty: configure at least one camera"
    )
