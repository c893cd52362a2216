"""``serve --fleet``'s settings (no paho, no onnxruntime: the CLI reads them at start)."""

from __future__ import annotations

from dataclasses import dataclass

from edgebundle.runtime.fleet.address import BrokerAddress, Credentials, check_level

DEFAULT_TELEMETRY_INTERVAL = 60.0
DEFAULT_NOTICE_JITTER = 2.0
DEFAULT_MAX_REPORTS = 1440  # a day of reports at the default interval


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetConfig:
    address: BrokerAddress
    credentials: Credentials
    device: str
    telemetry_interval: float = DEFAULT_TELEMETRY_INTERVAL
    notice_jitter: float = DEFAULT_NOTICE_JITTER
    max_reports: int = DEFAULT_MAX_REPORTS  # the outbox's bound

    def __post_init__(self) -> None:
        check_level(self.device, "device id")
