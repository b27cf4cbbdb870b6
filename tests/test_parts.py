"""A real part the tests need is there, or its tests fail naming it; only TEST_WITHOUT skips them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import parts


def test_a_missing_part_fails_naming_what_installs_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(parts.OPT_OUT, raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        parts.need("mosquitto")
    assert str(failed.value) == (
        "missing mosquitto, mosquitto_passwd, mosquitto_pub (a real MQTT broker for the service and MQTT tests): "
        "apt-get install mosquitto mosquitto-clients, or opt out with TEST_WITHOUT=mosquitto"
    )


def test_only_an_explicit_opt_out_skips_and_it_is_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(parts.OPT_OUT, "image, mosquitto")
    with pytest.raises(pytest.skip.Exception, match=r"without mosquitto \(TEST_WITHOUT=image, mosquitto\)"):
        parts.need("mosquitto")
    assert parts.opted_out() == ["image", "mosquitto"]


def test_an_unknown_part_in_the_opt_out_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parts.OPT_OUT, "mosquito")
    with pytest.raises(SystemExit, match="TEST_WITHOUT: unknown part mosquito; the parts are mosquitto, systemd"):
        parts.opted_out()


def test_every_part_says_how_to_get_it() -> None:
    for part in parts.PARTS.values():
        assert part.install().startswith(("apt-get install ", "python -m tools.convert fetch ", "run as root"))
