"""Print the commented default ``appliance.env`` that the image puts on the boot partition.

It is written from ``appliance.config.SETTINGS``, so the file always names exactly the keys the
appliance accepts, with their defaults and help: ``python image-build/appliance_env.py > FILE``.

Every setting is written commented out, showing its default: the file as shipped sets nothing, so
what the appliance runs with is its declared defaults, and a line the user uncomments is a change
they made. Two details keep the file safe for systemd's ``EnvironmentFile=`` parser as well as the
appliance's own: the first line holds no ``=`` (a byte-order mark that Notepad may add then only
spoils a comment), and no line ends with a backslash (systemd would continue it on the next line).
"""

from __future__ import annotations

import sys
import textwrap

from appliance.config import SETTINGS

WIDTH = 100

HEADER = """\
# Settings of the camera appliance, read by the appliance each time it starts.
#
# This file lives on the SD card's boot partition: edit it on any computer, put the card back in
# the Raspberry Pi and power it on (or run "sudo systemctl restart appliance" on the Pi).
# Each setting below is shown with its default value, commented out. To change one, remove the
# '#' in front of it and edit the value after '='. One setting a line; quotes around a value are
# optional; no comment after a value on the same line.
#
# A wrong key or value stops the appliance with one line naming it and what it accepts: see
# "journalctl -u appliance" on the Pi, or check the file there with
# "sudo appliance check --env-file /boot/firmware/appliance.env".
# The host name and the password of the MQTT broker on the Pi are in appliance-device.env, beside
# this file.
"""


def _comment(text: str) -> list[str]:
    # The README's help is Markdown; here it is plain text.
    plain = text.replace("`", "")
    return ["# " + line for line in textwrap.wrap(plain, WIDTH - 2, break_on_hyphens=False)]


def default_env() -> str:
    """The whole file, LF line ends."""
    lines = HEADER.splitlines()
    for s in SETTINGS:
        lines.append("")
        lines += _comment(s.help)
        lines += _comment(f"Accepts {s.kind.accepts}.")
        lines.append(f"#{s.key}={s.default}")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(default_env())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
