"""Measurements in fresh processes.

``python -m bench.probe KIND PATH ROWS.npy THREADS`` prints one JSON object. KIND is
``bundle`` (the device path: read + verify + onnxruntime session through the runtime's
Scorer), ``xgboost`` (Booster.load_model + inplace_predict, the native baseline) or ``empty``
(a one-op model of PATH features through the same scorer: the fixed cost of any session):
import and load time and resident memory of that one model alone. KIND ``latency`` takes a
JSON object of such models by name as PATH and times them in one process, one call of each in
turn; ``monitor`` times a bundle's single rows with and without drift counting.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def rss_mb() -> tuple[float, float]:
    """Current and peak resident set size from the kernel, in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _bundle(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    """Through the public API, as a user scores: ``Model.predict``."""
    from edgebundle.runtime import api

    return api.load(path, trust=path.parent / "signing.pub", threads=threads).predict


def _cwalk(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    from bench.anchors import CWalk

    del threads  # one thread, as the runtime's default
    return CWalk(Path(__file__).resolve().parent / "work" / "walk.so", path).predict


def _tl2cgen(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    from bench.anchors import tl2cgen_loader

    return tl2cgen_loader(path, threads)


def _empty(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    """A one-op model through the same scorer: what any session costs, whatever its model."""
    import onnx
    from onnx import TensorProto, helper

    from edgebundle.runtime.manifest import OutputSpec
    from edgebundle.runtime.scoring import Scorer

    # ArgMax: an op the runtime's graph check allows (it refuses ops edgebundle never writes)
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["input"], ["label"], axis=1, keepdims=0)],
        "empty",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", int(path.name)])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    spec = OutputSpec(name="label", dtype="int64", shape=(-1,))
    features = [f"f{i}" for i in range(int(path.name))]
    return Scorer(onnx.ModelProto.SerializeToString(model), features, [spec], threads).predict


def _xgboost(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(path))
    booster.set_param({"nthread": threads})
    return lambda x: booster.inplace_predict(x)


def _import(kind: str) -> None:
    # Imports are timed apart from the model load: they are paid once per process either way.
    if kind in ("bundle", "empty"):
        import onnxruntime  # noqa: F401

        import edgebundle.runtime.api
        import edgebundle.runtime.ota.keychain  # noqa: F401

        if kind == "empty":
            import onnx  # noqa: F401
    elif kind == "tl2cgen":
        import tl2cgen  # noqa: F401
    else:
        import xgboost  # noqa: F401


_LOADERS = {
    "bundle": _bundle,
    "empty": _empty,
    "xgboost": _xgboost,
    "cwalk": _cwalk,
    "tl2cgen": _tl2cgen,
}


def footprint(kind: str, path: Path, rows: np.ndarray, threads: int) -> dict[str, float]:
    """Import and load time, and resident memory after loading, after scoring a batch and at
    the peak."""
    started = time.perf_counter()
    _import(kind)
    import_ms = (time.perf_counter() - started) * 1e3
    rss_before, _ = rss_mb()
    started = time.perf_counter()
    predict = _LOADERS[kind](path, threads)
    predict(rows[:1])
    load_ms = (time.perf_counter() - started) * 1e3
    rss_loaded, _ = rss_mb()
    predict(rows)
    rss_scored, peak = rss_mb()
    return {
        "import_ms": import_ms,
        "load_ms": load_ms,
        "rss_after_load_mb": rss_loaded,
        "model_rss_mb": rss_loaded - rss_before,
        # what stays resident once a batch is scored: a device's steady state
        "model_rss_after_batch_mb": rss_scored - rss_before,
        "peak_rss_mb": peak,
    }


def latency(models: dict[str, tuple[str, Path]], rows: np.ndarray, threads: int) -> dict[str, Any]:
    """Median single-row and whole-batch latency of each model, all loaded in this process and
    timed in turn, block after block, so the machine's noise falls on each alike (measured in
    separate processes minutes apart, the int8/float ratio swung by ±0.2 between runs). Blocks
    of calls, not single calls in turn: a model called right after another runs with the other
    one's data in the caches, which a device serving one model never does."""
    predicts = {name: _LOADERS[kind](path, threads) for name, (kind, path) in models.items()}
    one_row: dict[str, list[float]] = {name: [] for name in predicts}
    batch: dict[str, list[float]] = {name: [] for name in predicts}
    for block in range(_BLOCKS):
        for name, predict in predicts.items():
            for i in range(block * _BLOCK_ROWS, (block + 1) * _BLOCK_ROWS):
                row = rows[i % len(rows)][None, :]
                t = time.perf_counter()
                predict(row)
                one_row[name].append(time.perf_counter() - t)
    for _ in range(5):
        for name, predict in predicts.items():
            t = time.perf_counter()
            predict(rows)
            batch[name].append(time.perf_counter() - t)
    return {
        name: {
            "one_row_us": statistics.median(one_row[name]) * 1e6,
            "batch_ms": statistics.median(batch[name]) * 1e3,
        }
        for name in predicts
    }


_BLOCKS = 15
_BLOCK_ROWS = 200  # the first few calls of a block warm the caches; the median is warm


def monitor_overhead(path: Path, rows: np.ndarray) -> dict[str, float]:
    """Single-row scoring with and without drift counting, interleaved call by call so the
    machine's noise falls on both alike, with the queued rows counted on another thread as the
    server counts them; the bundle must carry a baseline."""
    from edgebundle.runtime.bundle import open_bundle, read_bundle_file
    from edgebundle.runtime.monitor.counting import Monitor
    from edgebundle.runtime.scoring import Scorer
    from edgebundle.runtime.serve.serving import RELOAD_INTERVAL
    from edgebundle.runtime.signing import TrustedKeys, load_public_key
    from edgebundle.runtime.stats import baseline_of

    trusted = TrustedKeys([load_public_key(path.parent / "signing.pub")])
    bundle = open_bundle(read_bundle_file(path), trusted)
    scorer = Scorer.from_bundle(bundle)
    output = bundle.manifest.outputs[0].name
    monitor = Monitor("bench", "1.0.0", baseline_of(bundle))
    stop = threading.Event()
    # as in the server: the queued rows are counted every half second off the request path
    flusher = threading.Thread(target=_flush_every, args=(monitor, stop, RELOAD_INTERVAL))
    flusher.start()
    plain, counted = [], []
    for i in range(6000):
        row = rows[i % len(rows)][None, :]
        t = time.perf_counter()
        outputs = scorer.predict(row)
        if i % 2:
            monitor.observe(row, outputs[output])
            counted.append(time.perf_counter() - t)
        else:
            plain.append(time.perf_counter() - t)
    stop.set()
    flusher.join()
    return {
        "one_row_us": statistics.median(plain) * 1e6,
        "one_row_counted_us": statistics.median(counted) * 1e6,
        "mean_us": statistics.fmean(plain) * 1e6,
        "mean_counted_us": statistics.fmean(counted) * 1e6,
    }


def _flush_every(monitor: Any, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        monitor.flush()


def main() -> None:
    kind, path, rows_path, threads = sys.argv[1:5]
    rows = np.load(rows_path).astype(np.float32)
    if kind == "monitor":
        print(json.dumps(monitor_overhead(Path(path), rows)))
    elif kind == "latency":
        models = {name: (k, Path(p)) for name, (k, p) in json.loads(path).items()}
        print(json.dumps(latency(models, rows, int(threads))))
    else:
        print(json.dumps(footprint(kind, Path(path), rows, int(threads))))


if __name__ == "__main__":
    main()
