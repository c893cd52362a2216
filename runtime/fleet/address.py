"""Where a fleet's broker is and how to log in to it: ``mqtt://HOST[:PORT][/FLEET]`` or
``mqtts://`` (TLS), and the fleet's topics.

A password never travels in a URL or on a command line (both show up in ``ps`` and shell
history): it is read from a file or an environment variable.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from edgebundle.runtime.errors import FleetError

DEFAULT_FLEET = "default"
PASSWORD_ENV = "EDGEBUNDLE_FLEET_PASSWORD"
_PORTS = {"mqtt": 1883, "mqtts": 8883}
# One topic level: no wildcards (+ #), no separator, nothing MQTT forbids.
_LEVEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROOT = "edgebundle"


def check_level(text: str, what: str) -> str:
    if not _LEVEL.fullmatch(text):
        raise FleetError(
            f"{what} {text!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return text


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """TLS files and a login; all optional (a broker may allow anonymous clients)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerAddress:
    tls: bool
    host: str
    port: int
    fleet: str
    username: str | None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in _PORTS:
            raise FleetError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
        if parts.password is not None:
            raise FleetError(
                "a broker URL must not hold a password (it would show in `ps`): use "
                f"--fleet-password-file or ${PASSWORD_ENV}"
            )
        if parts.query or parts.fragment or not parts.hostname:
            raise FleetError(f"broker URL {url!r} must be mqtt[s]://HOST[:PORT][/FLEET]")
        try:
            port = parts.port or _PORTS[parts.scheme]
        except ValueError:
            raise FleetError(f"broker URL {url!r} has a bad port") from None
        path = parts.path.strip("/")
        fleet = check_level(path, "fleet name") if path else DEFAULT_FLEET
        return cls(
            tls=parts.scheme == "mqtts",
            host=parts.hostname,
            port=port,
            fleet=fleet,
            username=None if parts.username is None else urllib.parse.unquote(parts.username),
        )

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.fleet}"


@dataclass(frozen=True, slots=True)
class Topics:
    """The fleet's topics: one retained status and a telemetry stream per device, and the
    channel's update notices."""

    fleet: str

    @property
    def prefix(self) -> str:
        return f"{ROOT}/{self.fleet}"

    @property
    def channel(self) -> str:
        return f"{self.prefix}/channel"

    def status(self, device: str) -> str:
        return f"{self.prefix}/devices/{device}/status"

    def telemetry(self, device: str) -> str:
        return f"{self.prefix}/devices/{device}/telemetry"

    @property
    def all_status(self) -> str:
        return f"{self.prefix}/devices/+/status"

    @property
    def all_telemetry(self) -> str:
        return f"{self.prefix}/devices/+/telemetry"

    def device_of(self, topic: str) -> str | None:
        """The device id in one of this fleet's device topics."""
        parts = topic.split("/")
        if len(parts) == 5 and "/".join(parts[:3]) == f"{self.prefix}/devices":
            return parts[3]
        return None


def read_password(file: Path | None) -> str | None:
    """The broker password from ``file`` (first line) or ``$EDGEBUNDLE_FLEET_PASSWORD``."""
    if file is None:
        return os.environ.get(PASSWORD_ENV) or None
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        detail = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise FleetError(f"cannot read the broker password file {file}: {detail}") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise FleetError(f"the broker password file {file} is empty")
    return lines[0]
