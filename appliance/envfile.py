"""The env file as systemd reads it (``EnvironmentFile=``): one parser for the appliance and the first-boot setup.

systemd's rules (src/basic/env-file.c), followed here to the letter: a line is ``KEY=value``;
blank lines, and lines whose first non-blank character is ``#`` or ``;``, are skipped (a comment
ending in a backslash goes on to the next line). Blanks around the key and after ``=`` are
dropped. An unquoted value loses its trailing blanks, and a backslash takes the next character as
it is (``pa\\ss`` is ``pass``), or, at the end of a line, joins the next line. In single quotes
every character stands for itself; in double quotes a backslash escapes ``"``, ``\\``, ````` and
``$`` and joins a line at its end, and stands for itself before anything else. Quoted and
unquoted pieces run together (``'a'"b"c`` is ``abc``); there are no inline comments.

Where systemd would still read something, but not what the writer likely meant, the line is
refused instead, with its number: a line without ``=`` (systemd drops it silently), a key that is
not a variable name, and a quote not closed on its line (systemd runs the value on over the
following lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEWLINE = "\n\r"
WHITESPACE = " \t\n\r"
DOUBLE_QUOTE_ESCAPES = '"\\`$'  # systemd's SHELL_NEED_ESCAPE
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Assignment:
    line: int  # where the assignment starts, from 1
    key: str
    value: str


@dataclass(frozen=True)
class Refused:
    line: int
    text: str  # the line as written
    why: str


def parse(text: str) -> list[Assignment | Refused]:
    """The assignments of ``text`` in order, and the lines refused (see the module's docstring)."""
    lines = text.replace("\r\n", "\n").split("\n")
    found: list[Assignment | Refused] = []
    number = 0
    while number < len(lines):
        start = number
        raw = lines[number].lstrip(WHITESPACE)
        number += 1
        if not raw:
            continue
        if raw[0] in "#;":
            while raw.endswith("\\") and number < len(lines):  # an escaped newline goes on with the comment
                raw = lines[number]
                number += 1
            continue
        key, equals, rest = raw.partition("=")
        key = key.rstrip(WHITESPACE)
        if not equals or not key:
            found.append(Refused(start + 1, lines[start], "expected KEY=value"))
            continue
        if not _KEY.fullmatch(key):
            found.append(Refused(start + 1, lines[start], f"{key!r} is not a variable name"))
            continue
        value, number, problem = _value(rest, lines, number)
        if problem is not None:
            found.append(Refused(start + 1, lines[start], problem))
            continue
        found.append(Assignment(start + 1, key, value))
    return found


def _value(rest: str, lines: list[str], number: int) -> tuple[str, int, str | None]:
    """The value that starts with ``rest`` (joining continued lines), the next line's index, and why it is
    refused (or None)."""
    out: list[str] = []
    i = 0
    trailing = 0  # unquoted blanks at the end of ``out``, dropped at the end of the value
    rest = rest.lstrip(" \t")
    while True:
        if i >= len(rest):
            return "".join(out[: len(out) - trailing]), number, None
        c = rest[i]
        if c == "\\":
            if i + 1 == len(rest):  # a backslash at the end of the line joins the next
                if number >= len(lines):
                    return "".join(out[: len(out) - trailing]), number, None
                rest, i, number = lines[number], 0, number + 1
                trailing = 0
                continue
            out.append(rest[i + 1])
            i, trailing = i + 2, 0
        elif c in "'\"":
            closing = rest.find(c, i + 1) if c == "'" else _closing_double_quote(rest, i + 1)
            if closing < 0:
                return "", number, f"the {'single' if c == chr(39) else 'double'} quote is not closed on its line"
            inner = rest[i + 1 : closing]
            out.extend(inner if c == "'" else _unescape_double(inner))
            i, trailing = closing + 1, 0
            while i < len(rest) and rest[i] in " \t":  # after a quote, blanks before more value are dropped
                i += 1
        else:
            out.append(c)
            trailing = trailing + 1 if c in " \t" else 0
            i += 1


def _closing_double_quote(text: str, start: int) -> int:
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i
        else:
            i += 1
    return -1


def _unescape_double(inner: str) -> str:
    out, i = [], 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner) and inner[i + 1] in DOUBLE_QUOTE_ESCAPES:
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(inner[i])
            i += 1
    return "".join(out)


def quote(value: str) -> str:
    """``value`` written so that systemd reads it back exactly: in double quotes, its escapes escaped."""
    return '"' + "".join("\\" + c if c in DOUBLE_QUOTE_ESCAPES else c for c in value) + '"'
