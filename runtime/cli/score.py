"""``bundle-runtime score``: rows from stdin scored to stdout, each answered as it arrives."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from edgebundle.runtime.bundle import open_bundle, read_bundle_file
from edgebundle.runtime.cli.exits import STORED_BUNDLE, ExitCode, Failure, blame, usage
from edgebundle.runtime.cli.help import MEANINGS, document
from edgebundle.runtime.cli.options import LIMITS, non_negative_int
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.scoring import DEFAULT_THREADS, Scorer
from edgebundle.runtime.stream import (
    LineSource,
    StreamStats,
    score_csv,
    score_jsonl,
    score_npy,
)

# Only what scoring stdin needs is imported up front; the store, drift monitoring and what
# writes its report load when asked for (README "Performance": what `score` imports).
if TYPE_CHECKING:
    from edgebundle.runtime.serve.serving import Watched
    from edgebundle.runtime.stats import Baseline


def add_score(score: argparse.ArgumentParser) -> None:
    document(
        score,
        "Verify a bundle (or load a store's active model), then score JSONL, CSV or .npy rows "
        "from stdin to stdout, one output record per input record, answering each line as soon as "
        "it arrives. A row that cannot be scored gets an error record; the others go on.",
        examples=[
            "bundle-runtime score --bundle credit-score-1.4.0.bundle --trust signing.pub "
            "< rows.jsonl",
            "bundle-runtime score --store /var/lib/edgebundle --format csv < applicants.csv",
        ],
        exits={
            ExitCode.ROW_ERRORS: MEANINGS[ExitCode.ROW_ERRORS],
            ExitCode.USAGE: "bad arguments, output that cannot be written, or a store that "
            "cannot be used",
            ExitCode.REJECTED: MEANINGS[ExitCode.REJECTED],
        },
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
        "--format",
        choices=("jsonl", "csv", "npy"),
        default="jsonl",
        help="input and output format; npy: .npy arrays [N, F] of numbers in feature order "
        "(numpy.save, several may follow each other), answered as JSONL",
    )
    score.add_argument(
        "--threads",
        type=non_negative_int,
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


COMMANDS = {"score": add_score}


def _score(args: argparse.Namespace) -> int:
    if args.store is not None:
        return _score_store(args)
    if args.model is not None:
        raise usage("--model needs --store")
    if not args.trust:
        # Worded as argparse words it, as when --trust was required outright.
        raise usage("the following arguments are required: --trust (with --bundle)")
    # Imported here: a server never loads cryptography (~10 MB); see Store.trust.
    from edgebundle.runtime.ota.keychain import load_trust

    trusted = load_trust(args.trust).trusted()
    bundle = open_bundle(read_bundle_file(args.bundle, LIMITS), trusted, LIMITS)
    scorer = Scorer.from_bundle(bundle, args.threads)
    manifest = bundle.manifest
    watched = None
    if args.drift_report is not None:
        from edgebundle.runtime.stats import baseline_of

        baseline = baseline_of(bundle)
        watched = _watch(manifest.name, str(manifest.version), manifest.outputs, baseline)
    return _stream(scorer, args.format, watched, args.drift_report)


def _score_store(args: argparse.Namespace) -> int:
    if args.trust:
        raise usage("--trust goes with --bundle; a store trusts its own keys")
    from edgebundle.runtime.store import Store

    with blame(STORED_BUNDLE):
        store = Store.open(args.store, limits=LIMITS)
        loaded = store.load_active(args.model or store.default_model(), args.threads)
    outputs = loaded.manifest.outputs
    watched = None
    if args.drift_report is not None:
        watched = _watch(loaded.name, str(loaded.version), outputs, loaded.baseline)
    return _stream(loaded.scorer, args.format, watched, args.drift_report)


def _watch(
    name: str, version: str, outputs: Sequence[OutputSpec], baseline: Baseline | None
) -> Watched:
    from edgebundle.runtime.monitor.counting import DEFAULT_WINDOW_ROWS, Monitor
    from edgebundle.runtime.serve.serving import Watched

    # The whole input is one window: counts since start are what the report is for.
    monitor = Monitor(name, version, baseline, window_rows=DEFAULT_WINDOW_ROWS)
    return Watched(monitor, outputs[0].name)


def _stream(
    scorer: Scorer, fmt: str, watched: Watched | None = None, report: Path | None = None
) -> int:
    # Descriptors 0 and 1 rather than sys.stdin/stdout: no Python buffering in between, and
    # they exist even when the interpreter found no usable stdin (then reading fails cleanly).
    write = _fd_writer(1)
    stats = StreamStats()
    observe = None if watched is None else watched.observe
    try:
        if fmt == "npy":
            # Buffered: a slice of rows is one read of its exact size.
            with io.BufferedReader(io.FileIO(0, "rb", closefd=False), 1 << 16) as binary:
                score_npy(scorer, binary, write, stats, observe=observe)
        elif fmt == "csv":
            score_csv(scorer, LineSource(0), write, stats, observe=observe, note=_note)
        else:
            score_jsonl(scorer, LineSource(0), write, stats, observe=observe)
        if watched is not None and report is not None:
            from edgebundle.runtime.fsio import write_durably

            write_durably(report, watched.monitor.report().to_bytes())
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): nobody is left to tell; stop quietly.
        pass
    except OSError as e:
        raise Failure(ExitCode.USAGE, f"cannot write output: {e.strerror}") from None
    return ExitCode.ROW_ERRORS if stats.errors else ExitCode.OK


def _note(line: str) -> None:
    print(f"note: {line}", file=sys.stderr, flush=True)


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
