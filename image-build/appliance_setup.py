#!/opt/appliance/bin/python3
"""appliance-setup: apply the device settings from the boot partition, at every boot.

The image installs this file as ``/usr/local/sbin/appliance-setup``; ``appliance-setup.service``
runs it as root before the network, the MQTT broker and the appliance start. It does two things:

1. ``HOSTNAME`` from ``/boot/firmware/appliance-device.env`` becomes the host name (``/etc/hostname``,
   ``/etc/hosts`` and the running system). Empty: the host name stays as it is, for example as
   Raspberry Pi Imager's OS customisation set it.
2. The local Mosquitto broker accepts only users with a password (``/etc/mosquitto/appliance.passwd``,
   hashed): ``MQTT_USER`` / ``MQTT_PASSWORD`` from the device file, for subscribers on the network,
   and, while the appliance publishes to this broker, the appliance itself. The appliance's own
   password is made once on the device and handed to it in ``/run/appliance-setup/mqtt.env``,
   which ``appliance.service`` reads before ``appliance.env`` (so settings there win).

It also removes a byte-order mark from ``appliance.env``, which systemd would not skip. Device
settings are a file of their own because the appliance rejects any key it does not know in
``appliance.env``. Running at every boot, not only the first, means an edit of either file on a PC
takes effect at the next power-on. Problems are logged (the journal) and give exit status 1; what
can still be applied is applied.
"""

from __future__ import annotations

import argparse
import codecs
import grp
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from appliance import envfile
from appliance.config import Config, read_env_file
from appliance.errors import ConfigError

DEVICE_DEFAULTS = {
    "HOSTNAME": "",
    "MQTT_USER": "mqtt",
    "MQTT_PASSWORD": "",
    "MQTT_TLS_CERT_FILE": "",
    "MQTT_TLS_KEY_FILE": "",
}
TLS_PORT = 8883
APPLIANCE_USER = "appliance"  # the appliance's own login to the local broker
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
MQTT_USER_RE = re.compile(r"[^\s:]{1,64}")  # the password file separates user and hash with ':'


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.boot = root / "boot/firmware"
        self.problems = 0

    def log(self, message: str) -> None:
        print(f"appliance-setup: {message}", file=sys.stderr, flush=True)

    def problem(self, message: str) -> None:
        self.problems += 1
        self.log(message)

    def device_settings(self) -> dict[str, str]:
        """The device file over the defaults; a bad line or key is reported and skipped."""
        path = self.boot / "appliance-device.env"
        settings = dict(DEVICE_DEFAULTS)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            self.log(f"{path} is missing: using the defaults")
            return settings
        except (OSError, UnicodeDecodeError) as error:
            self.problem(f"{path}: cannot read it ({error}): using the defaults")
            return settings
        # The syntax of appliance.env (systemd's EnvironmentFile=), read as systemd reads it; keys without a prefix.
        known = ", ".join(DEVICE_DEFAULTS)
        for entry in envfile.parse(text):
            if isinstance(entry, envfile.Refused) or entry.key not in DEVICE_DEFAULTS:
                line = text.splitlines()[entry.line - 1].strip()
                self.problem(f"{path}:{entry.line}: expected one of {known} as KEY=value, found {line!r}")
            else:
                settings[entry.key] = entry.value
        return settings

    def apply_hostname(self, name: str, running: bool) -> None:
        if not name:
            return
        if not HOSTNAME_RE.fullmatch(name):
            self.problem(
                f"HOSTNAME={name!r} is not valid: expected letters, digits and '-' (not first or last), "
                "at most 63: keeping the host name"
            )
            return
        hostname = self.root / "etc/hostname"
        if hostname.exists() and hostname.read_text().strip() == name:
            return
        hostname.write_text(name + "\n")
        hosts = self.root / "etc/hosts"
        lines = hosts.read_text().splitlines() if hosts.exists() else ["127.0.0.1\tlocalhost"]
        # Debian and Raspberry Pi OS name the host on 127.0.1.1 (so that it resolves without DNS).
        kept = [line for line in lines if not line.startswith("127.0.1.1")]
        hosts.write_text("\n".join([*kept, f"127.0.1.1\t{name}"]) + "\n")
        if running:
            socket.sethostname(name)
        self.log(f"host name set to {name}")

    def appliance_password(self) -> str:
        """The appliance's own password for the local broker: made on the first boot, then kept."""
        path = self.root / "etc/appliance/mqtt-password"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(password + "\n")
        return password

    def appliance_settings(self) -> dict[str, str]:
        path = self.boot / "appliance.env"
        try:
            return read_env_file(path)
        except ConfigError as error:
            # The appliance reports the same problem and will not start; the broker still must.
            self.problem(f"{error} (the appliance will not start until it is fixed)")
            return {}

    def apply_broker(self, device: Mapping[str, str]) -> None:
        users: dict[str, str] = {}
        user, password = device["MQTT_USER"], device["MQTT_PASSWORD"]
        if not MQTT_USER_RE.fullmatch(user) or user == APPLIANCE_USER:
            self.problem(
                f"MQTT_USER={user!r} is not valid: expected a name without spaces or ':' "
                f"(and not {APPLIANCE_USER!r}, the appliance's own)"
            )
        elif not password:
            self.log("MQTT_PASSWORD is empty: nobody on the network can use the MQTT broker on this device")
        else:
            users[user] = password

        values = self.appliance_settings()
        host = values.get("APPLIANCE_MQTT_HOST", Config().mqtt_host).strip().lower()
        handed: dict[str, str] = {}
        if host in LOCAL_HOSTS:
            if "APPLIANCE_MQTT_USER" in values:
                # appliance.env names the appliance's login: the broker must know it.
                own_user, own_password = values["APPLIANCE_MQTT_USER"], values.get("APPLIANCE_MQTT_PASSWORD", "")
                if MQTT_USER_RE.fullmatch(own_user) and own_password:
                    users.setdefault(own_user, own_password)
                else:
                    self.problem(
                        "appliance.env sets APPLIANCE_MQTT_USER for the local broker, which needs a user name "
                        "and APPLIANCE_MQTT_PASSWORD: the appliance will be refused"
                    )
            else:
                users[APPLIANCE_USER] = self.appliance_password()
                handed = {"APPLIANCE_MQTT_USER": APPLIANCE_USER, "APPLIANCE_MQTT_PASSWORD": users[APPLIANCE_USER]}
        self.write_handed(handed)
        self.write_password_file(users)
        appliance = handed.get("APPLIANCE_MQTT_USER") or values.get("APPLIANCE_MQTT_USER")
        self.write_acl(appliance, [name for name in users if name != appliance], values)
        self.apply_tls(device["MQTT_TLS_CERT_FILE"], device["MQTT_TLS_KEY_FILE"])

    def write_acl(self, appliance: str | None, subscribers: list[str], values: Mapping[str, str]) -> None:
        """Who may do what on the broker: the appliance writes its own prefix and the discovery prefix;
        subscribers read, and may say Home Assistant's birth on its status topic; nobody else anything.
        (Before, any logged-in user could publish fake alerts, overwrite the retained status and person
        states, or inject Home Assistant entities.)"""
        defaults = Config()
        prefix = values.get("APPLIANCE_MQTT_PREFIX", defaults.mqtt_prefix).strip() or defaults.mqtt_prefix
        discovery = values.get("APPLIANCE_HA_PREFIX", defaults.ha_prefix).strip() or defaults.ha_prefix
        lines = ["# Written by appliance-setup at every boot, from the boot partition's two env files."]
        if appliance is not None:
            lines += [f"user {appliance}", f"topic readwrite {prefix}/#", f"topic readwrite {discovery}/#"]
        for user in sorted(subscribers):
            lines += [f"user {user}", "topic read #", f"topic readwrite {discovery}/status"]
        self.broker_file(self.root / "etc/mosquitto/appliance.acl", "\n".join(lines) + "\n")

    def broker_file(self, target: Path, text: str) -> None:
        """A file the broker reads after giving up root: its group may read it, nobody else."""
        staging = target.with_name(target.name + ".new")
        private_file(staging, text)
        try:
            os.chown(staging, 0, grp.getgrnam("mosquitto").gr_gid)
            os.chmod(staging, 0o640)
        except KeyError:
            self.problem("there is no group 'mosquitto': is mosquitto installed?")
        staging.replace(target)

    def apply_tls(self, cert: str, key: str) -> None:
        """A TLS listener on TLS_PORT when the device file names a certificate and its key (copied where the
        broker may read them); none otherwise. The plain listener stays, for the appliance on this Pi."""
        listener = self.root / "etc/mosquitto/conf.d/appliance-tls.conf"
        if not cert and not key:
            listener.unlink(missing_ok=True)
            return
        files = {}
        for name, given in (("appliance-tls.crt", cert), ("appliance-tls.key", key)):
            source = self.root / given.lstrip("/") if given else None
            try:
                if source is None:
                    raise FileNotFoundError("not set")
                files[name] = source.read_text()
            except (OSError, UnicodeDecodeError) as error:
                self.problem(f"MQTT_TLS_CERT_FILE / MQTT_TLS_KEY_FILE: cannot read {given or name}: {error}; no TLS")
                listener.unlink(missing_ok=True)
                return
        folder = self.root / "etc/mosquitto/certs"
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            self.broker_file(folder / name, text)
        config = (
            "# Written by appliance-setup: MQTT_TLS_CERT_FILE and MQTT_TLS_KEY_FILE in appliance-device.env.\n"
            f"listener {TLS_PORT}\ncertfile /etc/mosquitto/certs/appliance-tls.crt\n"
            "keyfile /etc/mosquitto/certs/appliance-tls.key\n"
        )
        listener.parent.mkdir(parents=True, exist_ok=True)
        listener.write_text(config)
        self.log(f"MQTT broker: a TLS listener on port {TLS_PORT}")

    def write_handed(self, values: Mapping[str, str]) -> None:
        folder = self.root / "run/appliance-setup"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # read by systemd (EnvironmentFile=) before appliance.env: quoted so that it reads the value back exactly
        private_file(folder / "mqtt.env", "".join(f"{key}={envfile.quote(value)}\n" for key, value in values.items()))

    def write_password_file(self, users: Mapping[str, str]) -> None:
        target = self.root / "etc/mosquitto/appliance.passwd"
        staging = target.with_name(target.name + ".plain")
        private_file(staging, "".join(f"{user}:{password}\n" for user, password in users.items()))
        done = subprocess.run(["mosquitto_passwd", "-U", str(staging)], capture_output=True, text=True, check=False)
        hashed = staging.read_text() if done.returncode == 0 else None
        staging.unlink()
        if hashed is None:
            self.problem(f"mosquitto_passwd failed: {done.stderr.strip() or done.stdout.strip()}")
            return
        self.broker_file(target, hashed)
        self.log(f"MQTT broker users: {', '.join(sorted(users)) or 'none'}")

    def strip_byte_order_mark(self) -> None:
        """Remove a UTF-8 byte-order mark from appliance.env (as older Notepads write one).

        The appliance's own reader skips it, but systemd's ``EnvironmentFile=`` does not: it would
        glue it onto the first key, and a setting on the first line would be silently lost.
        """
        path = self.boot / "appliance.env"
        try:
            data = path.read_bytes()
        except OSError:
            return  # the appliance reports a missing or unreadable file
        if data.startswith(codecs.BOM_UTF8):
            path.write_bytes(data[len(codecs.BOM_UTF8) :])
            self.log(f"{path}: removed the byte-order mark, which systemd would read as part of the first key")

    def run(self, running: bool) -> int:
        self.strip_byte_order_mark()
        device = self.device_settings()
        self.apply_hostname(device["HOSTNAME"], running)
        self.apply_broker(device)
        return 1 if self.problems else 0


def private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by root only from the moment it exists."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as stream:
        stream.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance-setup", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="the file system to set up (default /); other than /, the running host name is left alone",
    )
    args = parser.parse_args(argv)
    return Setup(args.root).run(running=args.root.resolve() == Path("/"))


if __name__ == "__main__":
    raise SystemExit(main())
