"""``bundle-runtime``: the device command line (stdlib argparse, no third-party CLI library).

Every failure is one ``error: ...`` line on stderr and an exit code from ``ExitCode``; a
traceback never reaches the user.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edgebundle.runtime import __version__
from edgebundle.runtime.bundle import Limits, open_bundle, read_bundle_file
from edgebundle.runtime.errors import (
    BundleError,
    ChannelUnreachableError,
    FormatError,
    InputError,
    RollbackError,
    StoreError,
)
from edgebundle.runtime.fsio import write_durably
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.monitor import (
    BLOCKS,
    DEFAULT_WINDOW_ROWS,
    REPORT_INTERVAL,
    DriftReport,
    Monitor,
    load_report,
    verdict,
)
from edgebundle.runtime.scoring import DEFAULT_THREADS, Scorer
from edgebundle.runtime.semver import Version
from edgebundle.runtime.serve.capture import DEFAULT_MAX_BYTES, Capture
from edgebundle.runtime.serve.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    ServerConfig,
    ServerLimits,
    read_token,
    serve,
)
from edgebundle.runtime.serve.serving import Watched
from edgebundle.runtime.stats import Baseline, baseline_of
from edgebundle.runtime.store import InstalledVersion, ModelState, Store
from edgebundle.runtime.stream import LineSource, StreamStats, score_csv, score_jsonl


class ExitCode(enum.IntEnum):
    """One meaning per number, whichever command exits with it."""

    OK = 0
    ROW_ERRORS = 1  # score: at least one row got an error record; the others were scored
    USAGE = 2  # bad arguments, a store error, input that cannot be read at all
    REJECTED = 3  # a bundle failed verification or its selftest, or cannot run here
    ROLLBACK_REFUSED = 4  # the store refused the bundle's version (anti-rollback, marked bad)
    CHANNEL_UNREACHABLE = 5  # update: the channel could not be read; an outage, retry later
    CHANNEL_REJECTED = 6  # update: forged, expired or replayed index, or a broken key chain
    INTERRUPTED = 130  # Ctrl-C, by shell convention 128 + SIGINT


# The device's caps; a later --store configuration can make them tunable.
LIMITS = Limits()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help (0) and on usage errors (2)
        return ExitCode.OK if e.code in (0, None) else ExitCode.USAGE
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bundle-runtime", description="Verify signed model bundles and score them."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    score = commands.add_parser(
        "score",
        help="score rows from stdin to stdout",
        description="Verify a bundle (or load a store's active model), then score JSONL or CSV "
        "rows from stdin to stdout, one output record per input record, answering each line as "
        "soon as it arrives.",
    )
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="the .bundle file to score with")
    source.add_argument("--store", type=Path, metavar="DIR", help="score with a store's model")
    score.add_argument(
        "--trust",
        action="append",
        type=Path,
        metavar="FILE",
        help="with --bundle: a trusted Ed25519 public key (PEM; repeat for several), or one "
        "key statement (keys/N.json)",
    )
    score.add_argument(
        "--model", metavar="NAME", help="with --store: which model (default: the only one)"
    )
    score.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="input and output format"
    )
    score.add_argument(
        "--threads",
        type=_threads,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"onnxruntime intra-op threads; 0 lets onnxruntime choose (default {DEFAULT_THREADS}: "
        "answers then never depend on how rows were batched)",
    )
    score.add_argument(
        "--drift-report",
        type=Path,
        metavar="FILE",
        help="when the input ends, write the rows' drift against the bundle's baseline "
        "(read it with `bundle drift FILE`)",
    )
    score.set_defaults(run=_score)
    _add_store_commands(commands)
    _add_serve_command(commands)
    _add_update_command(commands)
    return parser


def _add_update_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    update = commands.add_parser(
        "update",
        help="one pass of over-the-air updates from a channel",
        description="Follow the channel's key chain, fetch its signed index, then download, "
        "verify and install the newest version of each model it lists (a failed selftest "
        "marks it bad). Exit codes: 0 done, 2 usage or store error, 3 a listed bundle was "
        "refused (audited; the pass went on), 5 channel unreachable (retry later), 6 channel "
        "rejected (forged, expired, replayed, broken key chain).",
    )
    _store_option(update)
    update.add_argument(
        "--channel",
        required=True,
        metavar="URL",
        help="the channel: an http:// or https:// URL, a file:// URL or a directory",
    )
    update.set_defaults(run=_update)


def _update(args: argparse.Namespace) -> int:
    try:
        from edgebundle.runtime.ota.updater import update_once  # see _serve

        report = update_once(Store.open(args.store, limits=LIMITS), args.channel)
    except StoreError as e:
        return _fail(str(e), ExitCode.USAGE)
    except ChannelUnreachableError as e:
        return _fail(f"channel unreachable: {e}", ExitCode.CHANNEL_UNREACHABLE)
    except BundleError as e:  # refused bundles are outcomes: what raises is the channel's
        return _fail(f"channel rejected: {e}", ExitCode.CHANNEL_REJECTED)
    for line in report.lines():
        print(line)
    return ExitCode.REJECTED if report.failed else ExitCode.OK


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _score(args: argparse.Namespace) -> int:
    if args.store is not None:
        return _score_store(args)
    if args.model is not None:
        return _fail("--model needs --store", ExitCode.USAGE)
    if not args.trust:
        # Worded as argparse words it, as when --trust was required outright.
        message = "the following arguments are required: --trust (with --bundle)"
        return _fail(message, ExitCode.USAGE)
    # Imported here: a server never loads cryptography (~10 MB); see Store.trust.
    from edgebundle.runtime.ota.keychain import load_trust

    try:
        trusted = load_trust(args.trust).trusted()
        data = read_bundle_file(args.bundle, LIMITS)
    except FormatError as e:  # read, but not an acceptable bundle file (not regular, too big)
        return _fail(str(e), ExitCode.REJECTED)
    except BundleError as e:  # a key or bundle file missing or unreadable, a wrong key type
        return _fail(str(e), ExitCode.USAGE)
    try:
        bundle = open_bundle(data, trusted, LIMITS)
        scorer = Scorer.from_bundle(bundle, args.threads)
        baseline = baseline_of(bundle)
    except BundleError as e:
        return _fail(str(e), ExitCode.REJECTED)
    manifest = bundle.manifest
    watched = _watch(
        args.drift_report, manifest.name, str(manifest.version), manifest.outputs, baseline
    )
    return _stream(scorer, args.format, watched, args.drift_report)


def _watch(
    report: Path | None,
    name: str,
    version: str,
    outputs: Sequence[OutputSpec],
    baseline: Baseline | None,
) -> Watched | None:
    if report is None:
        return None
    # The whole input is one window: counts since start are what the report is for.
    monitor = Monitor(name, version, baseline, window_rows=DEFAULT_WINDOW_ROWS)
    return Watched(monitor, outputs[0].name)


def _score_store(args: argparse.Namespace) -> int:
    if args.trust:
        return _fail("--trust goes with --bundle; a store trusts its own keys", ExitCode.USAGE)
    try:
        store = Store.open(args.store, limits=LIMITS)
        loaded = store.load_active(args.model or store.default_model(), args.threads)
    except StoreError as e:
        return _fail(str(e), ExitCode.USAGE)
    except BundleError as e:  # the kept file changed on disk, or cannot run here any more
        return _fail(str(e), ExitCode.REJECTED)
    outputs = loaded.manifest.outputs
    watched = _watch(args.drift_report, loaded.name, str(loaded.version), outputs, loaded.baseline)
    return _stream(loaded.scorer, args.format, watched, args.drift_report)


# --- store commands ----------------------------------------------------------------------------


def _add_store_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = commands.add_parser(
        "init",
        help="create a model store",
        description="Create a model store in a new or empty directory, trusting the given keys.",
    )
    _store_option(init)
    init.add_argument(
        "--trust",
        required=True,
        action="append",
        type=Path,
        metavar="FILE",
        help="a trusted Ed25519 public key (PEM; repeat for several, any one signs), or one "
        "key statement from the channel (keys/N.json: its keys and threshold)",
    )
    init.set_defaults(run=_init)
    install = commands.add_parser(
        "install",
        help="verify, selftest and activate a bundle in a store",
        description="Verify BUNDLE with the store's keys, refuse older or already-seen versions "
        "(anti-rollback), run its selftest in the real scorer, then make it the active version "
        "of its model; the version it replaces stays as the rollback target.",
    )
    install.add_argument("bundle", type=Path, metavar="BUNDLE", help="the .bundle file")
    _store_option(install)
    install.set_defaults(run=_install)
    status = commands.add_parser(
        "status", help="show a store's models", description="Show each model's versions."
    )
    _store_option(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(run=_status)
    rollback = commands.add_parser(
        "rollback",
        help="switch a model back to its previous version",
        description="Make the previous version active; the active one becomes previous, so a "
        "second rollback undoes the first.",
    )
    _store_option(rollback)
    rollback.add_argument("--model", required=True, metavar="NAME", help="the model to roll back")
    rollback.set_defaults(run=_rollback)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, type=Path, metavar="DIR", help="store directory")


def _init(args: argparse.Namespace) -> int:
    try:
        store = Store.init(args.store, args.trust, limits=LIMITS)
    except BundleError as e:  # a key file or the directory
        return _fail(str(e), ExitCode.USAGE)
    trust = store.trust()
    print(f"initialized store {store.root}, trusting {trust.describe()}")
    for key_id in trust.keyids():
        print(f"trusted key {key_id}")
    return ExitCode.OK


def _install(args: argparse.Namespace) -> int:
    try:
        store = Store.open(args.store, limits=LIMITS)
        data = read_bundle_file(args.bundle, LIMITS)
    except FormatError as e:
        return _fail(str(e), ExitCode.REJECTED)
    except BundleError as e:
        return _fail(str(e), ExitCode.USAGE)
    try:
        result = store.install(data, origin=str(args.bundle.absolute()))
    except RollbackError as e:
        return _fail(str(e), ExitCode.ROLLBACK_REFUSED)
    except StoreError as e:
        return _fail(str(e), ExitCode.USAGE)
    except BundleError as e:  # verification, compatibility or selftest
        return _fail(str(e), ExitCode.REJECTED)
    if result.already_installed:
        print(f"{result.name} {result.version} is already installed and active; nothing changed")
    else:
        print(
            f"installed {result.name} {result.version} (previous: {result.previous or 'none'})"
            f" — selftest passed ({result.selftest.rows} rows)"
        )
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    try:
        store = Store.open(args.store, limits=LIMITS)
        state = store.state()
        trust = store.trust()
    except BundleError as e:
        return _fail(str(e), ExitCode.USAGE)
    reports = {name: _drift_report(store, name, model) for name, model in state.models.items()}
    keys = trust.keyids()
    if args.json:
        drift = {
            name: r.to_dict() if isinstance(r, DriftReport) else {"error": r}
            for name, r in reports.items()
            if r is not None
        }
        key_set = {"version": trust.version, "threshold": trust.threshold, "expires": trust.expires}
        doc = {
            "store": str(store.root),
            "trusted_keys": keys,
            "key_set": key_set,
            **state.to_dict(),
            "drift": drift,
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
        return ExitCode.OK
    print(f"store {store.root}")
    print(f"trust: {trust.describe()}")
    print("trusted keys: " + ", ".join(keys))
    if not state.models:
        print("no models installed")
    for name, model in state.models.items():
        print(name)
        print(*_model_lines(model), *_drift_lines(reports[name]), sep="\n")
    return ExitCode.OK


def _drift_report(store: Store, name: str, model: ModelState) -> DriftReport | str | None:
    """The drift a server last reported for the active version (a report of an older version
    says nothing about the one running now), or why it cannot be read: an unreadable report
    must not hide the rest of the status."""
    try:
        report = load_report(store.root, name)
    except StoreError as e:
        return str(e)
    if report is None or model.active is None or report.version != str(model.active):
        return None
    return report


def _drift_lines(report: DriftReport | str | None) -> list[str]:
    if report is None:
        return [f"  {'drift:':<10}no report yet (a server writes one while it serves)"]
    if isinstance(report, str):
        return [f"  {'drift:':<10}{report}"]
    recent = f"last {report.recent.rows} rows"
    since = f"{report.since_start.rows} rows since {report.started}"
    return [
        f"  {'drift:':<10}reported {report.generated}",
        f"    {recent + ':':<24}{verdict(report.recent, report.baseline)}",
        f"    {since + ':':<24}{verdict(report.since_start, report.baseline)}",
    ]


def _model_lines(model: ModelState) -> list[str]:
    lines = []
    for role, version in (("active", model.active), ("previous", model.previous)):
        record = None if version is None else model.record(version)
        lines.append(f"  {role + ':':<10}{_version_line(version, record)}")
    lines.append(f"  {'highest:':<10}{model.highest_seen} (anti-rollback: nothing lower installs)")
    lines.append(f"  {'bad:':<10}" + (", ".join(map(str, model.bad)) or "none"))
    return lines


def _version_line(version: Version | None, record: InstalledVersion | None) -> str:
    if version is None or record is None:
        return "none"
    outcome = "passed" if record.selftest.passed else "FAILED"
    return (
        f"{version} ({record.precision}, installed {record.installed_at}, "
        f"selftest {outcome}: {record.selftest.detail})"
    )


def _rollback(args: argparse.Namespace) -> int:
    try:
        result = Store.open(args.store, limits=LIMITS).rollback(args.model)
    except StoreError as e:
        return _fail(str(e), ExitCode.USAGE)
    except BundleError as e:  # the previous version's file changed on disk
        return _fail(str(e), ExitCode.REJECTED)
    print(
        f"rolled back {result.name} to {result.active} (previous: {result.previous};"
        " roll back again to undo)"
    )
    return ExitCode.OK


def _stream(
    scorer: Scorer, fmt: str, watched: Watched | None = None, report: Path | None = None
) -> int:
    # Descriptors 0 and 1 rather than sys.stdin/stdout: no Python buffering in between, and
    # they exist even when the interpreter found no usable stdin (then reading fails cleanly).
    source = LineSource(0)
    write = _fd_writer(1)
    stats = StreamStats()
    score = score_csv if fmt == "csv" else score_jsonl
    observe = None if watched is None else watched.observe
    try:
        score(scorer, source, write, stats, observe=observe)
        if watched is not None and report is not None:
            write_durably(report, watched.monitor.report().to_bytes())
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): nobody is left to tell; stop quietly.
        pass
    except (InputError, StoreError) as e:  # unreadable input, an unwritable drift report
        return _fail(str(e), ExitCode.USAGE)
    except BundleError as e:
        return _fail(str(e), ExitCode.REJECTED)
    except OSError as e:
        return _fail(f"cannot write output: {e.strerror}", ExitCode.USAGE)
    return ExitCode.ROW_ERRORS if stats.errors else ExitCode.OK


def _fd_writer(fd: int) -> Callable[[bytes], None]:
    """Unbuffered writes straight to ``fd``.

    Nothing waits in a Python buffer, so every answer is out when ``write`` returns, and a
    closed pipe leaves nothing for the interpreter to flush (and complain about) at exit.
    """

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def _fail(message: str, code: ExitCode) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# --- serve --------------------------------------------------------------------------------------

_LIMIT_FLAGS = (
    ("max_body_bytes", "BYTES", "largest request body; bigger ones are answered 413"),
    ("max_header_bytes", "BYTES", "largest request header section; bigger ones get 431"),
    ("max_rows", "N", "most rows in one request; more are answered 413"),
    ("read_timeout", "SECONDS", "time for a request to arrive whole once it starts"),
    ("idle_timeout", "SECONDS", "time a keep-alive connection may wait for its next request"),
    ("max_inflight", "N", "requests scored at once; more are answered 503 at once"),
    ("max_connections", "N", "open connections; more are answered 503 and closed"),
    ("drain_timeout", "SECONDS", "on SIGTERM, time requests in flight get to finish"),
)


def _add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_parser = commands.add_parser(
        "serve",
        help="serve a store's models over HTTP",
        description="Serve every model in the store over HTTP/1.1: Open Inference Protocol v2, "
        "MLflow-style /invocations and Prometheus /metrics. Installs and rollbacks are picked "
        "up without a restart (SIGHUP reloads at once); SIGTERM drains requests in flight, then "
        "exits.",
    )
    _store_option(serve_parser)
    serve_parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    serve_parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one, printed at start)",
    )
    serve_parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="require 'Authorization: Bearer TOKEN' (TOKEN from FILE, which other users must "
        "not be able to read) on every endpoint but the health checks",
    )
    serve_parser.add_argument(
        "--threads",
        type=_threads,
        default=DEFAULT_THREADS,
        metavar="N",
        help=f"onnxruntime intra-op threads per model (default {DEFAULT_THREADS})",
    )
    defaults = ServerLimits()
    for name, metavar, text in _LIMIT_FLAGS:
        default = getattr(defaults, name)
        serve_parser.add_argument(
            "--" + name.replace("_", "-"),
            type=_positive_int if isinstance(default, int) else _positive_float,
            default=default,
            metavar=metavar,
            help=f"{text} (default {default})",
        )
    serve_parser.add_argument(
        "--channel",
        metavar="URL",
        help="poll this OTA channel (http://, https://, file:// or a directory) and install "
        "updates",
    )
    serve_parser.add_argument(
        "--poll",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="with --channel: mean seconds between polls, each drawn from 0.5-1.5x; after "
        "failures a random wait up to SECONDS doubled per failure, at most an hour "
        "(default 300)",
    )
    serve_parser.add_argument(
        "--monitor-window",
        type=_at_least(BLOCKS),
        default=DEFAULT_WINDOW_ROWS,
        metavar="ROWS",
        help="drift monitoring's recent window, in rows, besides the count since the model "
        f"was loaded (default {DEFAULT_WINDOW_ROWS})",
    )
    serve_parser.add_argument(
        "--no-monitor", action="store_true", help="do not count rows for drift monitoring"
    )
    serve_parser.add_argument(
        "--report-interval",
        type=_positive_float,
        default=REPORT_INTERVAL,
        metavar="SECONDS",
        help="seconds between the drift reports left in the store for `status` "
        f"(default {REPORT_INTERVAL:g}; also written at shutdown)",
    )
    serve_parser.add_argument(
        "--capture",
        type=Path,
        metavar="DIR",
        help="write a sample of scored rows (inputs and outputs) to rotating JSONL files in "
        "DIR, for debugging; off by default",
    )
    serve_parser.add_argument(
        "--capture-rate",
        type=_fraction,
        default=0.01,
        metavar="P",
        help="with --capture: the share of rows written, 0 < P <= 1 (default 0.01)",
    )
    serve_parser.add_argument(
        "--capture-max-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"with --capture: the oldest files go beyond N bytes (default {DEFAULT_MAX_BYTES})",
    )
    serve_parser.set_defaults(run=_serve)


def _port(text: str) -> int:
    value = _threads(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {value}")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _threads(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}")
        return value

    return parse


_positive_int = _at_least(1)


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be <= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _capture(args: argparse.Namespace) -> Capture | None:
    if args.capture is None:
        return None
    return Capture(args.capture, args.capture_rate, args.capture_max_bytes)


def _serve(args: argparse.Namespace) -> int:
    limits = ServerLimits(**{name: getattr(args, name) for name, _, _ in _LIMIT_FLAGS})
    try:
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
        )
        poller = None
        if args.channel is not None:
            # Imported only for a channel: urllib.request brings http.client, email and ssl,
            # ~7 MB of resident memory a server that polls nothing should not carry.
            from edgebundle.runtime.ota.fetch import channel_url
            from edgebundle.runtime.ota.updater import Poller

            try:
                channel = channel_url(args.channel)
            except ChannelUnreachableError:  # a directory not mounted yet: each pass retries
                channel = args.channel
            poller = Poller(store_root=store.root, channel=channel, interval=args.poll)
            poller.start()
        try:
            return serve(store, config)
        finally:
            if poller is not None:
                poller.stop()
    except BundleError as e:  # the store or the token file
        return _fail(str(e), ExitCode.USAGE)
    except OSError as e:  # the address: in use, not local, not permitted
        return _fail(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}", ExitCode.USAGE)
