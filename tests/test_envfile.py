"""The env file is read as systemd's EnvironmentFile= reads it (src/basic/env-file.c), or refused by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import envfile
from appliance.config import read_env_file
from appliance.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("A=plain", "plain"),
        ("A=  spaced out  ", "spaced out"),  # blanks after = and at the end go
        ("A=pa\\ss", "pass"),  # a backslash takes the next character as it is
        ("A=pa\\\\ss", "pa\\ss"),
        ("A=end\\ ", "end "),  # an escaped blank is kept
        ("A='single $quoted \\n'", "single $quoted \\n"),  # nothing is special in single quotes
        ('A="double \\"quoted\\" \\$HOME \\\\ \\n"', 'double "quoted" $HOME \\ \\n'),  # only "\\`$ escape
        ("A='a'\"b\"c", "abc"),  # pieces run together
        ('A="x"  y', "xy"),  # blanks after a quote are dropped
        ("A=#not a comment", "#not a comment"),  # no inline comments
        ("A=x # still the value", "x # still the value"),
        ("A=", ""),
        ("  A  =  v", "v"),
        ("A=first\\\nsecond", "firstsecond"),  # a trailing backslash joins the next line
        ("A=first\\\n  second", "first  second"),
        ("A=crlf\r\n", "crlf"),
    ],
)
def test_values_read_as_systemd_reads_them(text: str, value: str) -> None:
    (entry,) = envfile.parse(text)
    assert entry == envfile.Assignment(1, "A", value)


def test_comments_blank_lines_and_continued_comments_are_skipped() -> None:
    text = "# a comment\n; another\n\n   # indented\n# goes on \\\nA=still comment\nB=1\n"
    assert envfile.parse(text) == [envfile.Assignment(7, "B", "1")]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("JUSTAKEY", "expected KEY=value"),  # systemd drops it without a word
        ("1A=x", "'1A' is not a variable name"),
        ("A B=x", "'A B' is not a variable name"),
        ('A="opened\nB=2"', "the double quote is not closed on its line"),  # systemd would run on to B
        ("A='opened", "the single quote is not closed on its line"),
    ],
)
def test_what_systemd_reads_otherwise_than_meant_is_refused_with_its_line(text: str, why: str) -> None:
    entry = envfile.parse("# first\n" + text)[0]
    assert isinstance(entry, envfile.Refused)
    assert (entry.line, entry.why) == (2, why)


@given(st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00")))
def test_a_quoted_value_reads_back_exactly(value: str) -> None:
    assert envfile.parse(f"A={envfile.quote(value)}") == [envfile.Assignment(1, "A", value)]


def test_the_appliance_reads_a_backslash_as_systemd_does(tmp_path: Path) -> None:
    """`APPLIANCE_MQTT_PASSWORD=pa\\ss` was `pa\\ss` to the appliance and `pass` to systemd."""
    env = tmp_path / "appliance.env"
    env.write_text("APPLIANCE_MQTT_PASSWORD=pa\\ss\nAPPLIANCE_CAMERA_0='sim:shop-knife?view=1&loop=1'\n")
    assert read_env_file(env) == {
        "APPLIANCE_MQTT_PASSWORD": "pass",
        "APPLIANCE_CAMERA_0": "sim:shop-knife?view=1&loop=1",
    }
    env.write_text('APPLIANCE_MQTT_PASSWORD="unclosed\n')
    with pytest.raises(ConfigError, match=r"appliance\.env:1: the double quote is not closed on its line"):
        read_env_file(env)
