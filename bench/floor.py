"""The memory floor: what each import of the device path costs, and `serve` against Flask.

``python -m bench.floor BUNDLE`` imports the device path step by step in a fresh process and
prints the resident memory each step adds, as JSON. ``serve_rss`` starts our server and the
Flask + XGBoost one on the same model, sends each the same requests, and reads their RSS.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Nothing here imports numpy or the runtime at module level: the floor is measured from a bare
# interpreter.


def floor(bundle: Path) -> dict[str, float]:
    """RSS after each step of loading a bundle through the public API, in MiB."""
    steps: dict[str, float] = {"python": _rss("self")}
    import numpy

    steps["numpy"] = _rss("self")
    import onnxruntime  # noqa: F401

    steps["onnxruntime"] = _rss("self")
    from edgebundle.runtime import api

    steps["edgebundle runtime"] = _rss("self")
    from edgebundle.runtime.ota import keychain  # noqa: F401  (cryptography: verifying)

    steps["cryptography (verify)"] = _rss("self")
    model = api.load(bundle, trust=bundle.parent / "signing.pub")
    model.predict(numpy.zeros((1, len(model.features)), numpy.float32))
    steps["model session"] = _rss("self")
    names = list(steps)
    deltas = {"python": steps["python"]}
    deltas |= {name: steps[name] - steps[before] for before, name in itertools.pairwise(names)}
    deltas["total"] = steps[names[-1]]
    return deltas


def serve_rss(bundle: Path, source: Path, pub: Path, row: list[float | None]) -> dict[str, Any]:
    """Resident memory of `bundle-runtime serve` and of the Flask + XGBoost server after the
    same 200 single-row requests, on the same model."""
    from bench.serving import BIN, free_port, post, start

    body = json.dumps({"instances": [row]}).encode()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        runtime = str(BIN / "bundle-runtime")
        subprocess.run([runtime, "init", "--store", str(store), "--trust", str(pub)],
                       check=True, capture_output=True)
        subprocess.run([runtime, "install", str(bundle), "--store", str(store)],
                       check=True, capture_output=True)
        ours, flask = free_port(), free_port()
        servers = {
            "bundle-runtime serve": (
                [runtime, "serve", "--store", str(store), "--port", str(ours)],
                f"http://127.0.0.1:{ours}/invocations",
            ),
            "flask + xgboost": (
                [sys.executable, "-m", "bench.flask_app", str(source), str(flask)],
                f"http://127.0.0.1:{flask}/predict",
            ),
        }
        result: dict[str, Any] = {}
        for name, (command, url) in servers.items():
            proc, _ = start(command, url, body)
            try:
                for _ in range(200):
                    post(url, body)
                time.sleep(0.2)
                result[name] = _rss(proc.pid)
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    result["ratio"] = result["bundle-runtime serve"] / result["flask + xgboost"]
    return result


def _rss(pid: int | str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


if __name__ == "__main__":
    print(json.dumps(floor(Path(sys.argv[1]))))
