"""``bundle-runtime serve``: a store's models over HTTP, optionally following an OTA channel."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from edgebundle.runtime.cli.exits import ARGUMENTS, ExitCode, blame, usage
from edgebundle.runtime.cli.fleet import add_fleet_options, device_id, fleet_companion
from edgebundle.runtime.cli.help import document
from edgebundle.runtime.cli.options import LIMITS, add_store_option, non_negative_int
from edgebundle.runtime.errors import ChannelUnreachableError
from edgebundle.runtime.monitor.counting import DEFAULT_WINDOW_ROWS
from edgebundle.runtime.monitor.report import BLOCKS
from edgebundle.runtime.monitor.saved import REPORT_INTERVAL
from edgebundle.runtime.scoring import DEFAULT_THREADS
from edgebundle.runtime.serve.capture import DEFAULT_MAX_BYTES, Capture
from edgebundle.runtime.serve.config import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServerConfig,
    ServerLimits,
    TlsFiles,
    read_token,
)
from edgebundle.runtime.serve.server import serve
from edgebundle.runtime.store import Store

_LIMIT_FLAGS = (
    ("max_body_bytes", "BYTES", "largest request body; bigger ones are answered 413"),
    ("max_header_bytes", "BYTES", "largest request header section; bigger ones get 431"),
    ("max_rows", "N", "most rows in one request; more are answered 413"),
    ("read_timeout", "SECONDS", "time for a request to arrive whole once it starts"),
    ("idle_timeout", "SECONDS", "time a keep-alive connection may wait for its next request"),
    ("max_inflight", "N", "requests scored at once; more are answered 503 at once"),
    ("max_connections", "N", "open connections; when all are taken, a new one closes the one "
     "that waited longest without a request (503 if none)"),
    ("max_connections_per_peer", "N", "open connections from one client address; more are "
     "answered 503"),
    ("busy_first_byte_timeout", "SECONDS", "time a new connection has to start its first request "
     "while half of --max-connections or more are open"),
    ("drain_timeout", "SECONDS", "on SIGTERM, time requests in flight get to finish"),
)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = non_negative_int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}")
        return value

    return parse


_positive_int = _at_least(1)


def _port(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be <= 1, got {text}")
    return value


def add_serve(parser: argparse.ArgumentParser) -> None:
    document(
        parser,
        "Serve every model in the store over HTTP/1.1: Open Inference Protocol v2, "
        "MLflow-style /invocations and Prometheus /metrics. Installs and rollbacks are picked "
        "up without a restart (SIGHUP reloads at once); SIGTERM drains requests in flight, then "
        "exits.",
        examples=[
            "bundle-runtime serve --store /var/lib/edgebundle --port 8080",
            "bundle-runtime serve --store /var/lib/edgebundle --host 0.0.0.0 "
            "--token-file /etc/edgebundle/token --channel https://models.example.com/stable/",
            "bundle-runtime serve --store /var/lib/edgebundle --host 0.0.0.0 "
            "--tls-cert device.pem --tls-key device.key --tls-client-ca ca.pem "
            "--access-log /var/log/edgebundle/access.log",
            "bundle-runtime serve --store /var/lib/edgebundle --channel "
            "https://models.example.com/stable/ --fleet mqtts://broker.example.com/shops "
            "--device-id shop-17 --fleet-ca ca.pem --fleet-cert shop-17.pem --fleet-key "
            "shop-17.key",
        ],
        exits={
            ExitCode.OK: "stopped by SIGTERM or SIGINT after answering the requests in flight",
            ExitCode.USAGE: "bad arguments, or the address, the store, the TLS files or the "
            "access log cannot be used",
        },
    )
    add_store_option(parser)
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one, printed at start)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="require 'Authorization: Bearer TOKEN' (TOKEN from FILE, which other users must "
        "not be able to read) on every endpoint but the health checks",
    )
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"onnxruntime intra-op threads per model (default {DEFAULT_THREADS})",
    )
    _add_tls_options(parser)
    _add_limit_options(parser)
    _add_channel_options(parser)
    _add_monitoring_options(parser)
    add_fleet_options(parser, _positive_float, _positive_int)
    parser.set_defaults(run=_serve)


COMMANDS = {"serve": add_serve}


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve HTTPS (TLS 1.2+) with this PEM certificate chain; with --tls-key. Both are "
        "re-read when they change, for rotation without a restart",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="with --tls-cert: require a client certificate signed by a CA in this PEM file "
        "(mutual TLS)",
    )
    parser.add_argument(
        "--access-log",
        metavar="FILE",
        help="append one line per request (time, client, method, path, status, bytes, "
        "seconds) to FILE; - for standard output",
    )


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    defaults = ServerLimits()
    for name, metavar, text in _LIMIT_FLAGS:
        default = getattr(defaults, name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=_positive_int if isinstance(default, int) else _positive_float,
            default=default,
            metavar=metavar,
            help=f"{text} (default {default})",
        )


def _add_channel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel",
        metavar="URL",
        help="poll this OTA channel (http://, https://, file:// or a directory) and install "
        "updates",
    )
    parser.add_argument(
        "--poll",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="with --channel: mean seconds between polls, each drawn from 0.5-1.5x; after "
        "failures a random wait up to SECONDS doubled per failure, at most an hour "
        "(default 300)",
    )


def _add_monitoring_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--monitor-window",
        type=_at_least(BLOCKS),
        default=DEFAULT_WINDOW_ROWS,
        metavar="ROWS",
        help="drift monitoring's recent window, in rows, besides the count since the model "
        f"was loaded (default {DEFAULT_WINDOW_ROWS})",
    )
    parser.add_argument(
        "--no-monitor", action="store_true", help="do not count rows for drift monitoring"
    )
    parser.add_argument(
        "--report-interval",
        type=_positive_float,
        default=REPORT_INTERVAL,
        metavar="SECONDS",
        help="seconds between the drift reports left in the store for `status` "
        f"(default {REPORT_INTERVAL:g}; also written at shutdown)",
    )
    parser.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="write a sample of scored rows (inputs and outputs) to rotating JSONL files in "
        "DIR, for debugging; off by default",
    )
    parser.add_argument(
        "--capture-rate",
        type=_fraction,
        default=0.01,
        metavar="P",
        help="with --capture: the share of rows written, 0 < P <= 1 (default 0.01)",
    )
    parser.add_argument(
        "--capture-max-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"with --capture: the oldest files go beyond N bytes (default {DEFAULT_MAX_BYTES})",
    )


def _serve(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except OSError as e:  # the address: in use, not local, not permitted
        raise usage(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None


def _run(args: argparse.Namespace) -> int:
    limits = ServerLimits(**{name: getattr(args, name) for name, _, _ in _LIMIT_FLAGS})
    tls = _tls_files(args)
    token = None if args.token_file is None else read_token(args.token_file)
    store = Store.open(args.store, limits=LIMITS)
    config = ServerConfig(
        host=args.host,
        port=args.port,
        token=token,
        threads=args.threads,
        limits=limits,
        monitor_window=None if args.no_monitor else args.monitor_window,
        report_interval=args.report_interval,
        capture=_capture(args),
        tls=tls,
        access_log=args.access_log,
    )
    if args.channel is None:
        companion = None if args.fleet is None else fleet_companion(args, store, None)
        return serve(store, config, companion=companion)
    # Imported only for a channel: urllib.request brings http.client, email and ssl,
    # ~7 MB of resident memory a server that polls nothing should not carry.
    from edgebundle.runtime.ota.updater import Poller

    poller = Poller(
        store_root=store.root,
        channel=_channel(args.channel),
        interval=args.poll,
        device=device_id(args),
    )
    companion = None if args.fleet is None else fleet_companion(args, store, poller)
    poller.start()
    try:
        return serve(store, config, companion=companion)
    finally:
        poller.stop()


def _channel(text: str) -> str:
    from edgebundle.runtime.ota.fetch import channel_url  # see _run

    with blame(ARGUMENTS):
        try:
            return channel_url(text)
        except ChannelUnreachableError:  # a directory not mounted yet: each pass retries
            return text


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise usage("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        if args.tls_client_ca is not None:
            raise usage("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca)


def _capture(args: argparse.Namespace) -> Capture | None:
    if args.capture is None:
        return None
    return Capture(args.capture, args.capture_rate, args.capture_max_bytes)
