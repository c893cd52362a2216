"""``bundle-runtime``: the device command line (stdlib argparse, no third-party CLI library).

Every failure is one ``error: ...`` line on stderr and an exit code from ``ExitCode``; a
traceback never reaches the user.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runtime import __version__
from runtime.bundle import Limits, open_bundle, read_bundle_file
from runtime.errors import BundleError, FormatError, InputError
from runtime.scoring import DEFAULT_THREADS, Scorer
from runtime.signing import TrustedKeys
from runtime.stream import LineSource, StreamStats, score_csv, score_jsonl


class ExitCode(enum.IntEnum):
    OK = 0  # every row scored
    ROW_ERRORS = 1  # at least one row got an error record; the others were scored
    USAGE = 2  # bad arguments, or input that cannot be read at all (e.g. a bad CSV header)
    REJECTED = 3  # the bundle failed verification or cannot run here
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
        description="Verify a bundle, then score JSONL or CSV rows from stdin to stdout, one "
        "output record per input record, answering each line as soon as it arrives.",
    )
    score.add_argument("--bundle", required=True, type=Path, help="the .bundle file to score with")
    score.add_argument(
        "--trust",
        required=True,
        action="append",
        type=Path,
        metavar="PUB",
        help="a trusted Ed25519 public key (PEM); repeat for several",
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
    score.set_defaults(run=_score)
    return parser


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _score(args: argparse.Namespace) -> int:
    try:
        trusted = TrustedKeys.from_paths(args.trust)
        data = read_bundle_file(args.bundle, LIMITS)
    except FormatError as e:  # read, but not an acceptable bundle file (not regular, too big)
        return _fail(str(e), ExitCode.REJECTED)
    except BundleError as e:  # a key or bundle file missing or unreadable, a wrong key type
        return _fail(str(e), ExitCode.USAGE)
    try:
        scorer = Scorer.from_bundle(open_bundle(data, trusted, LIMITS), args.threads)
    except BundleError as e:
        return _fail(str(e), ExitCode.REJECTED)
    return _stream(scorer, args.format)


def _stream(scorer: Scorer, fmt: str) -> int:
    # Descriptors 0 and 1 rather than sys.stdin/stdout: no Python buffering in between, and
    # they exist even when the interpreter found no usable stdin (then reading fails cleanly).
    source = LineSource(0)
    write = _fd_writer(1)
    stats = StreamStats()
    score = score_csv if fmt == "csv" else score_jsonl
    try:
        score(scorer, source, write, stats)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): nobody is left to tell; stop quietly.
        pass
    except InputError as e:
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
