"""Train the demo model: a credit-scoring-like classifier on data generated with numpy.

``python -m edgebundle.builder.example --out demo`` writes ``model.json`` (XGBoost),
``data.csv`` (held-out rows with an ``id`` column, for ``bundle build --data`` and CSV
scoring), ``rows.jsonl`` (a few rows as JSON objects, some with missing values, for
``bundle-runtime score``) and ``live.csv`` (later applicants whose incomes rose and whose
employment is often unreported: the drift ``bundle drift`` should find); ``--serve-demo demo``
scores rows over HTTP from the store ``make demo`` installs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import numpy.typing as npt
import xgboost as xgb

FEATURES = (
    "age",
    "annual_income",
    "debt_to_income",
    "credit_lines",
    "late_payments_2y",
    "months_employed",
    "card_utilization",
    "loan_amount",
    "home_owner",
)


def make_data(rows: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Applicants with plausible marginals, some missing income/employment, and a default
    probability that depends non-linearly on them."""
    rng = np.random.default_rng(seed)
    age = rng.integers(19, 80, rows).astype(float)
    income = np.round(rng.lognormal(10.6, 0.5, rows), -2)
    dti = np.clip(rng.beta(2, 5, rows) * 0.9, 0, None)
    lines = rng.poisson(4, rows).astype(float)
    late = rng.poisson(0.4, rows).astype(float)
    employed = np.minimum(rng.exponential(60, rows), 12 * (age - 18)).round()
    utilization = rng.beta(2, 3, rows)
    loan = np.round(rng.lognormal(9.2, 0.7, rows), -1)
    owner = (rng.random(rows) < 0.45).astype(float)
    logit = (
        -2.2
        + 3.0 * dti
        + 0.9 * late
        + 2.0 * (utilization - 0.4)
        - 0.5 * np.log(income / 40000)
        + 0.4 * np.log(loan / 10000)
        - 0.012 * (age - 40)
        - 0.004 * employed
        - 0.3 * owner
    )
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    x = np.stack([age, income, dti, lines, late, employed, utilization, loan, owner], axis=1)
    x[rng.random(rows) < 0.06, 1] = np.nan  # income not reported
    x[rng.random(rows) < 0.10, 5] = np.nan  # employment unknown
    return x, y


def train(x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], rounds: int) -> xgb.Booster:
    dtrain = xgb.DMatrix(x, label=y, feature_names=list(FEATURES))
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": 5,
        "eta": 0.1,
        "subsample": 0.9,
        "eval_metric": "auc",
        "seed": 7,
        "nthread": 1,
    }
    return xgb.train(params, dtrain, num_boost_round=rounds)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def write_example(out: Path, rounds: int = 150) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y = make_data(6000, seed=1)
    train(x[:5000], y[:5000], rounds).save_model(out / "model.json")
    held_out = x[5000:]
    _write_csv(out / "data.csv", held_out, "applicant")
    _write_csv(out / "live.csv", later_applicants(1000), "later")
    with (out / "rows.jsonl").open("w") as handle:
        for i, row in enumerate(held_out[:5]):
            record: dict[str, str | float | None] = {"id": f"applicant-{i}"}
            record.update(
                {n: None if math.isnan(v) else float(v) for n, v in zip(FEATURES, row, strict=True)}
            )
            handle.write(json.dumps(record) + "\n")


def later_applicants(rows: int) -> npt.NDArray[np.float64]:
    """The same population a year on: incomes up 50%, employment unreported three times as
    often (a form field made optional)."""
    x, _ = make_data(rows, seed=2)
    income, employed = FEATURES.index("annual_income"), FEATURES.index("months_employed")
    x[:, income] = np.round(x[:, income] * 1.5, -2)
    x[np.random.default_rng(3).random(rows) < 0.2, employed] = np.nan
    return x


def _write_csv(path: Path, x: npt.NDArray[np.float64], prefix: str) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", *FEATURES])
        for i, row in enumerate(x):
            writer.writerow([f"{prefix}-{i}", *(_cell(v) for v in row)])


def serve_demo(demo: Path, interactive: bool) -> None:
    """Start `bundle-runtime serve` on the demo store, send the example rows over HTTP
    (MLflow-style and Open Inference Protocol v2) and print the answers. ``interactive`` (a
    person at a terminal): the server stays up, with curl commands to try, until Ctrl-C;
    otherwise (CI) it stops, and the commands printed start one first."""
    runtime = _tool("bundle-runtime")
    command = [runtime, "serve", "--store", str(demo / "store"), "--port", "0"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = _wait_until_serving(server)
        print(f"serving on {url}")
        rows = [json.loads(line) for line in (demo / "rows.jsonl").read_text().splitlines()]
        print("POST /invocations →", _post(f"{url}/invocations", {"instances": rows[:2]}))
        features = [[r[name] for name in FEATURES] for r in rows[:2]]
        v2 = {
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [2, len(FEATURES)], "data": features}
            ]
        }
        print(
            "POST /v2/models/credit-score/infer →", _post(f"{url}/v2/models/credit-score/infer", v2)
        )
        if interactive:
            print(f"--- the server stays up: try it (Ctrl-C stops it)\n{_try_lines(url)}")
            _echo_stderr(server)
            server.wait()
        else:
            port_url = "http://127.0.0.1:8080"
            print(
                "--- to try it yourself, start a server:\n"
                f"  {runtime} serve --store {demo / 'store'} --port 8080\n"
                f"then, in another terminal:\n{_try_lines(port_url)}"
            )
    except KeyboardInterrupt:
        print()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def _wait_until_serving(server: subprocess.Popen[str]) -> str:
    assert server.stderr is not None
    for line in server.stderr:  # the server logs its models, then its address
        match = re.search(r"serving on (http://[\d.]+:\d+)", line)
        if match is not None:
            return match.group(1)
    raise SystemExit("bundle-runtime serve did not start")


def _echo_stderr(server: subprocess.Popen[str]) -> None:
    """Copy the server's further log lines to ours, so its pipe never fills and blocks it."""
    stream = server.stderr
    if stream is not None:
        threading.Thread(target=lambda: sys.stderr.writelines(stream), daemon=True).start()


def _try_lines(url: str) -> str:
    # absent features are missing values, so a short row scores
    body = json.dumps({"instances": [{"age": 41, "annual_income": 52000, "debt_to_income": 0.31}]})
    return "\n".join(
        [
            f"  curl -s {url}/invocations -H 'Content-Type: application/json' -d '{body}'",
            f"  curl -s {url}/v2/models/credit-score",
            f"  curl -s {url}/v2/models/credit-score/stats > stats.json && "
            f"{_tool('bundle')} drift stats.json",
        ]
    )


def _tool(name: str) -> str:
    """The venv's console script, relative to where make runs when it is below it."""
    path = Path(sys.executable).parent / name
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def _post(url: str, body: object) -> str:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="write the example model and data here")
    parser.add_argument("--rounds", type=int, default=150, help="boosting rounds")
    parser.add_argument(
        "--serve-demo",
        type=Path,
        metavar="DIR",
        help="score the example rows over HTTP from DIR/store",
    )
    args = parser.parse_args()
    if args.serve_demo is not None:
        serve_demo(args.serve_demo, sys.stdin.isatty() and sys.stdout.isatty())
    elif args.out is not None:
        write_example(args.out, args.rounds)
    else:
        parser.error("give --out or --serve-demo")


if __name__ == "__main__":
    main()
