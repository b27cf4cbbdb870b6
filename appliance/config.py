"""Configuration: every ``APPLIANCE_*`` key is declared once here.

Each field of :class:`Config` is one key (``APPLIANCE_`` + the field name in upper case) with its
kind (type and accepted values), its default as it would be written in the env file, and one
line of help. The README's table is produced from these declarations (``appliance config
--table``) and a test keeps the two equal.

Values come from an env file of ``KEY=value`` lines (``--env-file``) overlaid by the process
environment (where systemd's ``EnvironmentFile=`` puts them). Validation is pure: reading the
file is the only I/O and happens before it.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from appliance.errors import ConfigError

PREFIX = "APPLIANCE_"

T = TypeVar("T")


class Kind(ABC, Generic[T]):
    """How a setting's text becomes a value, and what text it accepts."""

    @property
    @abstractmethod
    def accepts(self) -> str:
        """What the setting accepts, as the end of the sentence 'expected ...'."""

    @abstractmethod
    def parse(self, text: str) -> T:
        """The value of ``text``; raises ValueError when it is not accepted."""


@dataclass(frozen=True)
class Int(Kind[int]):
    low: int
    high: int

    @property
    def accepts(self) -> str:
        return f"an integer from {self.low} to {self.high}"

    def parse(self, text: str) -> int:
        value = int(text.strip())
        if not self.low <= value <= self.high:
            raise ValueError("out of range")
        return value


@dataclass(frozen=True)
class Float(Kind[float]):
    low: float
    high: float

    @property
    def accepts(self) -> str:
        return f"a number from {self.low:g} to {self.high:g}"

    def parse(self, text: str) -> float:
        value = float(text.strip())
        if not self.low <= value <= self.high:  # also rejects nan
            raise ValueError("out of range")
        return value


@dataclass(frozen=True)
class Choice(Kind[str]):
    options: tuple[str, ...]

    @property
    def accepts(self) -> str:
        return "one of " + ", ".join(self.options)

    def parse(self, text: str) -> str:
        value = text.strip().lower()
        if value not in self.options:
            raise ValueError("not an option")
        return value


@dataclass(frozen=True)
class Words(Kind[tuple[str, ...]]):
    """A comma-separated list of non-empty words."""

    @property
    def accepts(self) -> str:
        return "a comma-separated list of one or more names"

    def parse(self, text: str) -> tuple[str, ...]:
        words = tuple(word.strip() for word in text.split(","))
        if not all(words):
            raise ValueError("empty name")
        return words


@dataclass(frozen=True)
class OptionalPath(Kind["Path | None"]):
    @property
    def accepts(self) -> str:
        return "a path, or nothing for the default"

    def parse(self, text: str) -> Path | None:
        text = text.strip()
        return Path(text) if text else None


@dataclass(frozen=True)
class Declaration:
    kind: Kind[Any]
    default: str
    help: str


def setting(kind: Kind[T], default: str, help: str) -> T:
    """Declare one key of :class:`Config`; its default is the parsed ``default`` text."""
    declaration = Declaration(kind, default, help)
    value: T = field(default=kind.parse(default), metadata={"setting": declaration})
    return value


@dataclass(frozen=True)
class Config:
    """The appliance's settings. Field ``foo_bar`` is the key ``APPLIANCE_FOO_BAR``."""

    log_level: str = setting(
        Choice(("debug", "info", "warning", "error")),
        "info",
        "Least severe log message written to stderr (the journal).",
    )
    models_dir: Path | None = setting(
        OptionalPath(),
        "",
        "Folder holding `manifest.json` and the model files; empty: the `models/` shipped with the appliance.",
    )
    threads: int = setting(Int(0, 64), "0", "Threads per TFLite interpreter (XNNPACK); 0: one per CPU core.")
    detect_labels: tuple[str, ...] = setting(
        Words(), "person", "Detector classes to report, by name from the detector's labels file."
    )
    detect_score: float = setting(Float(0.01, 1.0), "0.4", "Least detector score for a box to count.")
    detect_iou: float = setting(
        Float(0.05, 1.0), "0.45", "Overlap (IoU) above which non-maximum suppression merges two boxes."
    )
    caption_beam: int = setting(Int(1, 16), "3", "Beam width of the captioner's search; 1 is greedy decoding.")
    caption_length_penalty: float = setting(
        Float(0.0, 2.0), "0.7", "Beam search ranks captions by log-probability / length^this; 0 favours short captions."
    )


@dataclass(frozen=True)
class Setting:
    """One declared key: its full name and its declaration."""

    key: str
    field: str
    kind: Kind[Any]
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(PREFIX + f.name.upper(), f.name, d.kind, d.default, d.help)
    for f in fields(Config)
    for d in [cast(Declaration, f.metadata["setting"])]
)
_BY_KEY = {s.key: s for s in SETTINGS}


def parse_config(values: Mapping[str, str]) -> Config:
    """Validate ``values`` (``APPLIANCE_*`` keys only) into a Config; no I/O.

    Raises ConfigError with one line that names every bad key and what it accepts.
    """
    problems: list[str] = []
    for key in values:
        if key not in _BY_KEY:
            # Compare without the common prefix, which would make every key look alike.
            names = [known.removeprefix(PREFIX) for known in _BY_KEY]
            near = difflib.get_close_matches(key.removeprefix(PREFIX), names, n=1)
            hint = f" (did you mean {PREFIX}{near[0]}?)" if near else " (see the settings table in the README)"
            problems.append(f"{key}: unknown setting{hint}")
    parsed: dict[str, Any] = {}
    for s in SETTINGS:
        if s.key not in values:
            continue
        text = values[s.key]
        try:
            parsed[s.field] = s.kind.parse(text)
        except ValueError:
            problems.append(f"{s.key}={text!r} is not valid: expected {s.kind.accepts}")
    if problems:
        raise ConfigError("; ".join(problems))
    return Config(**parsed)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``APPLIANCE_*`` assignments of an env file, in systemd's ``EnvironmentFile=`` syntax.

    Lines are ``KEY=value``; blank lines and lines starting with ``#`` or ``;`` are skipped; one
    pair of surrounding quotes is removed. A byte-order mark and CRLF line ends (the file lives on
    the FAT boot partition and may be edited with Notepad) are accepted.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read the env file: it is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the env file: {error.strerror or error}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise ConfigError(f"{path}:{number}: expected KEY=value, found {line!r}")
        if not key.startswith(PREFIX):
            raise ConfigError(f"{path}:{number}: {key} is not an appliance setting (every key starts with {PREFIX})")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


def load_config(environ: Mapping[str, str], env_file: Path | None = None) -> Config:
    """The config from ``env_file`` (when given) overlaid by ``APPLIANCE_*`` keys of ``environ``."""
    values = read_env_file(env_file) if env_file is not None else {}
    values.update({key: value for key, value in environ.items() if key.startswith(PREFIX)})
    return parse_config(values)


def as_env(config: Config) -> str:
    """``config`` written as an env file that loads back to the same config."""
    lines = []
    for s in SETTINGS:
        value = getattr(config, s.field)
        if isinstance(value, tuple):
            text = ",".join(value)
        elif value is None:
            text = ""
        else:
            text = str(value)
        lines.append(f"{s.key}={text}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| Key | Default | Accepts | Meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.key}` | {default} | {s.kind.accepts} | {s.help} |")
    return "\n".join(rows) + "\n"
