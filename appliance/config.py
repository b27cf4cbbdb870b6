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
import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from appliance import envfile
from appliance.cameras.uri import CameraUri, describe_accepted
from appliance.errors import ConfigError, InvalidValueError
from appliance.masking import MASK, mask_secrets

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

    def format(self, value: T) -> str:
        """``value`` as the env file writes it; parses back to ``value``."""
        return str(value)


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
class OptionalFloat(Kind["float | None"]):
    """A number in a range, or nothing for a value that comes from elsewhere (``what``)."""

    low: float
    high: float
    what: str

    @property
    def accepts(self) -> str:
        return f"a number from {self.low:g} to {self.high:g}, or nothing for {self.what}"

    def parse(self, text: str) -> float | None:
        return Float(self.low, self.high).parse(text) if text.strip() else None

    def format(self, value: float | None) -> str:
        return "" if value is None else str(value)


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
    """A comma-separated list of non-empty words; empty (no words) when ``optional``."""

    optional: bool = False

    @property
    def accepts(self) -> str:
        names = "a comma-separated list of one or more names"
        return f"nothing, or {names}" if self.optional else names

    def parse(self, text: str) -> tuple[str, ...]:
        if self.optional and not text.strip():
            return ()
        words = tuple(word.strip() for word in text.split(","))
        if not all(words):
            raise ValueError("empty name")
        return words

    def format(self, value: tuple[str, ...]) -> str:
        return ",".join(value)


@dataclass(frozen=True)
class OptionalPath(Kind["Path | None"]):
    @property
    def accepts(self) -> str:
        return "a path, or nothing for the default"

    def parse(self, text: str) -> Path | None:
        text = text.strip()
        return Path(text) if text else None


@dataclass(frozen=True)
class Flag(Kind[bool]):
    @property
    def accepts(self) -> str:
        return "1 or 0 (also yes/no, true/false, on/off)"

    def parse(self, text: str) -> bool:
        value = text.strip().lower()
        if value in ("1", "yes", "true", "on"):
            return True
        if value in ("0", "no", "false", "off"):
            return False
        raise ValueError("not a flag")

    def format(self, value: bool) -> str:
        return "1" if value else "0"


@dataclass(frozen=True)
class Text(Kind[str]):
    """Any text, possibly empty; surrounding blanks are removed."""

    @property
    def accepts(self) -> str:
        return "any text, or nothing"

    def parse(self, text: str) -> str:
        return text.strip()


@dataclass(frozen=True)
class Secret(Text):
    """Text that is never shown: `appliance config` prints ``***`` for it unless asked."""


NAME_LENGTH = 64  # a topic level, a Home Assistant id and a clip's file name are made of names


@dataclass(frozen=True)
class Name(Kind[str]):
    """A word fit for an MQTT topic level, a Home Assistant id and a file name; empty when ``optional``."""

    optional: bool = False

    @property
    def accepts(self) -> str:
        word = f"up to {NAME_LENGTH} letters, digits, '-' and '_' (no spaces, '/', '+' or '#')"
        return f"nothing, or {word}" if self.optional else word

    def parse(self, text: str) -> str:
        value = text.strip()
        if not value and self.optional:
            return value
        if not value or len(value) > NAME_LENGTH or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
            raise ValueError("not a name")
        return value


@dataclass(frozen=True)
class Host(Kind[str]):
    """A host name or an IP address: no scheme, port, path or blank (each would never connect)."""

    @property
    def accepts(self) -> str:
        return "a host name or IP address, without a scheme or a port (the port is APPLIANCE_MQTT_PORT)"

    def parse(self, text: str) -> str:
        value = text.strip()
        if value.startswith("[") and value.endswith("]"):  # an IPv6 address in brackets, as URLs write it
            value = value[1:-1]
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        if "://" in value:
            raise InvalidValueError("a scheme: give the host alone")
        if re.fullmatch(r".+:\d+", value):
            raise InvalidValueError("a port: give it as APPLIANCE_MQTT_PORT")
        labels = value.rstrip(".").split(".")
        if not value or len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError("not a host name")
        return value


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@dataclass(frozen=True)
class CameraSlot(Kind["CameraUri | None"]):
    @property
    def accepts(self) -> str:
        return describe_accepted()

    def parse(self, text: str) -> CameraUri | None:
        return CameraUri.parse(text) if text.strip() else None

    def format(self, value: CameraUri | None) -> str:
        return value.text if value is not None else ""


@dataclass(frozen=True)
class Size(Kind[tuple[int, int]]):
    @property
    def accepts(self) -> str:
        return "WIDTHxHEIGHT, each from 64 to 4096 and even, as in 640x480"

    def parse(self, text: str) -> tuple[int, int]:
        width, x, height = text.strip().lower().partition("x")
        size = (int(width), int(height)) if x else (0, 0)
        if not all(64 <= v <= 4096 and v % 2 == 0 for v in size):
            raise ValueError("not a size")
        return size

    def format(self, value: tuple[int, int]) -> str:
        return f"{value[0]}x{value[1]}"


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
        Words(optional=True),
        "",
        "Detector classes to report, by name from the detector's labels file; empty: the model's person classes.",
    )
    detect_score: float | None = setting(
        OptionalFloat(0.01, 1.0, "the presence score in force"),
        "",
        "Least detector score for a box to be reported; empty: the presence score (a box below it counts for nothing).",
    )
    detect_iou: float = setting(
        Float(0.05, 1.0),
        "0.3",
        "Overlap (IoU) with a better box above which soft NMS scales a box's score by 1 - IoU.",
    )
    detect_nested: float = setting(
        Float(0.05, 1.0),
        "0.8",
        "Share of the smaller of two boxes inside the other above which only the better one is kept; 1: off.",
    )
    caption_beam: int = setting(Int(1, 16), "3", "Beam width of the captioner's search; 1 is greedy decoding.")
    caption_length_penalty: float = setting(
        Float(0.0, 2.0), "0.7", "Beam search ranks captions by log-probability / length^this; 0 favours short captions."
    )
    caption_mirror: bool = setting(
        Flag(), "1", "Also read the mirrored keyframe; words are chosen on both readings (twice the caption time)."
    )

    camera_0: CameraUri | None = setting(
        CameraSlot(), "picamera2:0", "Camera 0 (see Cameras); empty: no camera in this slot."
    )
    camera_1: CameraUri | None = setting(CameraSlot(), "", "Camera 1, as camera 0; empty: no second camera.")
    camera_0_name: str = setting(Name(), "cam0", "Camera 0's name in MQTT topics, clip names and Home Assistant.")
    camera_1_name: str = setting(Name(), "cam1", "Camera 1's name, as camera 0's.")
    camera_size: tuple[int, int] = setting(
        Size(), "640x480", "Frame size asked of picamera2 and V4L2 cameras (files, streams and sim keep their own)."
    )
    camera_fps: float = setting(
        Float(1.0, 60.0), "10", "Frame rate asked of picamera2 and V4L2 cameras, and of recorded clips."
    )
    detect_fps: float = setting(
        Float(0.2, 60.0), "8", "Detections per second, all cameras together (round robin between them)."
    )
    idle_detect_every: float = setting(
        Float(0.5, 600.0), "5", "Seconds between detections on a camera whose scene is still and empty."
    )
    motion_share: float = setting(
        Float(0.0, 1.0), "0.004", "Share of a camera's tiny grey image that must change for motion; 0: always detect."
    )
    presence_hits: int = setting(Int(1, 30), "2", "A person is present after this many sure detections ...")
    presence_window: int = setting(Int(1, 30), "4", "... among this many latest detections of the camera ...")
    presence_confirm: float | None = setting(
        OptionalFloat(0.01, 1.0, "the detector's own"),
        "",
        "... sure: with a person box of at least this score (PRESENCE_SCORE keeps them present).",
    )
    presence_motion: bool = setting(
        Flag(),
        "1",
        "... that lies where the picture changed since the camera's previous detection (a still picture never "
        "starts an event); 0: any sure box.",
    )
    presence_hold: float = setting(
        Float(0.5, 600.0), "6", "Seconds without a person after which the camera's person is absent."
    )
    presence_score: float | None = setting(
        OptionalFloat(0.01, 1.0, "the detector's own"),
        "",
        "Least detector score of a box that counts a person and keeps one present.",
    )
    presence_min_area: float = setting(
        Float(0.0, 1.0), "0.001", "Least box area, as a share of the frame, that makes a person present."
    )
    trigger: str = setting(
        Choice(("any", "both")),
        "any",
        "`any`: each camera's person starts its own event; `both`: events start only while both cameras see a person.",
    )
    keyframe_every: float = setting(
        Float(0.5, 600.0), "4", "Seconds between captions (and classifications) during an event."
    )
    alert_labels: tuple[str, ...] = setting(
        Words(), "violence", "Classifier labels that raise an alert when their smoothed score passes the threshold."
    )
    alert_score: float = setting(
        Float(0.01, 1.0), "0.6", "Smoothed classifier score of an alert label that raises an alert."
    )
    alert_words: tuple[str, ...] = setting(
        Words(), "knife,gun,weapon,fight,fighting,blood,fire", "Words that raise an alert when a caption holds one."
    )
    alert_fall: bool = setting(
        Flag(), "1", "Raise an alert when someone is down (the detector's fall class, or a validated classifier's)."
    )
    alert_hold: float = setting(
        Float(0.0, 60.0),
        "3",
        "Seconds someone must stay down, or a classifier label stay over the score, before it alerts.",
    )
    held_objects: tuple[str, ...] = setting(
        Words(optional=True),
        "knife,scissors,gun,bag,backpack,handbag,suitcase,phone,cell phone",
        "Detector classes reported as held when their box lies on a person's; those among the alert words alert.",
    )
    language: str = setting(
        Choice(("en", "ko")), "en", "Language of composed descriptions and alert texts: `en` or `ko`."
    )
    record: bool = setting(Flag(), "1", "Record clips of events; 0: text only.")
    data_dir: Path | None = setting(
        OptionalPath(),
        "",
        "Folder for the outbox and clips; empty: systemd's `$STATE_DIRECTORY`, else `~/.local/state/appliance`.",
    )
    record_dir: Path | None = setting(OptionalPath(), "", "Folder for clips; empty: `clips` in the data folder.")
    preroll: float = setting(Float(0.0, 30.0), "3", "Seconds of video kept from before a person appears.")
    postroll: float = setting(Float(0.0, 120.0), "5", "Seconds of video kept after the person has gone.")
    record_max_gb: float | None = setting(
        OptionalFloat(0.01, 10000.0, "no quota but the free space below"),
        "",
        "Clips take at most this many GB; the oldest are deleted first.",
    )
    record_min_free_percent: float = setting(
        Float(1.0, 90.0),
        "10",
        "Share of the clips' disk kept free for the outbox and the system; the oldest clips are deleted first.",
    )
    record_max_days: float = setting(Float(0.0, 3650.0), "14", "Clips older than this many days are deleted; 0: never.")
    device_id: str = setting(Name(optional=True), "", "This appliance's id in MQTT topics; empty: the host name.")
    mqtt_host: str = setting(Host(), "localhost", "MQTT broker host name or address.")
    mqtt_port: int = setting(Int(1, 65535), "1883", "MQTT broker port (8883 is usual with TLS).")
    mqtt_user: str = setting(Text(), "", "MQTT user name; empty: connect without one.")
    mqtt_password: str = setting(Secret(), "", "MQTT password (never printed by `appliance config` unless asked).")
    mqtt_tls: bool = setting(Flag(), "0", "Connect with TLS.")
    mqtt_ca_file: Path | None = setting(
        OptionalPath(), "", "CA certificate file for TLS; empty: the system's certificates."
    )
    mqtt_cert_file: Path | None = setting(OptionalPath(), "", "Client certificate file for TLS; empty: none.")
    mqtt_key_file: Path | None = setting(OptionalPath(), "", "Client key file for TLS, with the certificate.")
    mqtt_client_id: str = setting(Name(optional=True), "", "MQTT client id; empty: `appliance-` and the device id.")
    mqtt_prefix: str = setting(Name(), "appliance", "First level of every topic: PREFIX/DEVICE/...")
    mqtt_outbox_max: int = setting(
        Int(10, 1_000_000), "10000", "Messages kept on disk while the broker is away; beyond it the oldest go."
    )
    stats_every: float = setting(Float(1.0, 86400.0), "60", "Seconds between stats messages.")
    ha_discovery: bool = setting(Flag(), "1", "Publish Home Assistant MQTT discovery for the sensors.")
    ha_prefix: str = setting(Name(), "homeassistant", "Home Assistant's discovery prefix.")


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
        except ValueError as error:
            why = f" ({error})" if isinstance(error, InvalidValueError) else ""
            problems.append(f"{s.key}={text!r} is not valid{why}: expected {s.kind.accepts}")
    if problems:
        raise ConfigError("; ".join(problems))
    config = Config(**parsed)
    if config.presence_hits > config.presence_window:
        raise ConfigError(
            f"APPLIANCE_PRESENCE_HITS={config.presence_hits} is more than APPLIANCE_PRESENCE_WINDOW="
            f"{config.presence_window}: no window of detections could hold that many, so no event would ever start"
        )
    return config


def read_env_file(path: Path) -> dict[str, str]:
    """The ``APPLIANCE_*`` assignments of an env file, read exactly as systemd's ``EnvironmentFile=``
    reads it (``appliance.envfile``), or refused with the line's number where that reading is
    ambiguous. A byte-order mark and CRLF line ends (the file lives on the FAT boot partition and may
    be edited with Notepad) are accepted.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read the env file: it is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the env file: {error.strerror or error}") from None
    values: dict[str, str] = {}
    for entry in envfile.parse(text):
        if isinstance(entry, envfile.Refused):
            raise ConfigError(f"{path}:{entry.line}: {entry.why}, found {mask_secrets(entry.text.strip())!r}")
        if not entry.key.startswith(PREFIX):
            raise ConfigError(
                f"{path}:{entry.line}: {entry.key} is not an appliance setting (every key starts with {PREFIX})"
            )
        values[entry.key] = entry.value
    return values


def given_values(environ: Mapping[str, str], env_file: Path | None = None) -> dict[str, str]:
    """The settings given: ``env_file``'s (when given) overlaid by the ``APPLIANCE_*`` keys of ``environ``."""
    values = read_env_file(env_file) if env_file is not None else {}
    values.update({key: value for key, value in environ.items() if key.startswith(PREFIX)})
    return values


def load_config(environ: Mapping[str, str], env_file: Path | None = None) -> Config:
    """The config from ``env_file`` (when given) overlaid by ``APPLIANCE_*`` keys of ``environ``."""
    return parse_config(given_values(environ, env_file))


def as_env(config: Config, reveal: bool = True) -> str:
    """``config`` written as an env file that loads back to the same config; without ``reveal``, with
    every secret masked (a Secret setting's value, and the passwords in URIs)."""
    lines = []
    for s in SETTINGS:
        value = getattr(config, s.field)
        text = "" if value is None else s.kind.format(value)
        if not reveal:
            text = MASK if isinstance(s.kind, Secret) and text else mask_secrets(text)
        lines.append(f"{s.key}={text}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| Key | Default | Accepts | Meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.key}` | {default} | {s.kind.accepts} | {s.help} |")
    return "\n".join(rows) + "\n"
