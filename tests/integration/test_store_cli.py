"""`bundle-runtime init/install/status/rollback/score --store` as a device operator runs them:
real bundles from `bundle build`, real processes, exact messages and exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgebundle.runtime.cli import ExitCode, main
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import keyid, load_public_key
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.store_helpers import (
    Spec,
    audit_events,
    build_bundles,
    snapshot,
    with_wrong_selftest,
)
from tests.support.xgbmodels import BIN, Trained, json_lines, run, train

V100 = Spec("credit", "1.0.0")
V110 = Spec("credit", "1.1.0")
FRAUD = Spec("fraud", "2.0.0")
FOREIGN = Spec("credit", "1.2.0", signer="other_keys")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=8)


@pytest.fixture(scope="module")
def bundles(
    trained: Trained, keys: KeyFiles, other_keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory
) -> dict[Spec, Path]:
    return build_bundles(
        trained.path,
        [V100, V110, FRAUD, FOREIGN],
        {"keys": keys, "other_keys": other_keys},
        tmp_path_factory.mktemp("out"),
    )


@pytest.fixture
def store(tmp_path: Path, keys: KeyFiles) -> Path:
    root = tmp_path / "store"
    proc = cli(["init", "--store", str(root), "--trust", str(keys.public)])
    assert proc.returncode == 0, proc.stderr
    return root


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def runtime(args: list[str], stdin: str = "") -> Any:
    """A real `bundle-runtime` process."""
    return run("bundle-runtime", args, stdin=stdin)


def cli(args: list[str]) -> Result:
    """``main(argv)`` in this process: the same code without a 1 s interpreter start; for the
    commands that do not stream on file descriptors 0 and 1."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return Result(code, out.getvalue(), err.getvalue())


def install(store: Path, bundle: Path) -> Result:
    return cli(["install", str(bundle), "--store", str(store)])


def records(stdout: str) -> list[Any]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_init_install_status_score(
    tmp_path: Path, keys: KeyFiles, bundles: dict[Spec, Path], trained: Trained
) -> None:
    root = tmp_path / "device" / "store"
    proc = runtime(["init", "--store", str(root), "--trust", str(keys.public)])
    key_id = keyid(load_public_key(keys.public))
    assert (proc.returncode, proc.stderr) == (0, "")
    trust = "trusting provisioned keys: 1 of 1 key(s) must sign"
    assert proc.stdout == f"initialized store {root}, {trust}\ntrusted key {key_id}\n"

    first = runtime(["install", str(bundles[V100]), "--store", str(root)])
    second = runtime(["install", str(bundles[V110]), "--store", str(root)])
    rows = Store.open(root).state().models["credit"].installed["1.1.0"].selftest.rows
    assert (first.returncode, second.returncode) == (0, 0)
    assert first.stdout.startswith("installed credit 1.0.0 (previous: none) — selftest passed (")
    assert (
        second.stdout
        == f"installed credit 1.1.0 (previous: 1.0.0) — selftest passed ({rows} rows)\n"
    )

    status = runtime(["status", "--store", str(root)])
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[:4] == [
        f"store {root}",
        "trust: provisioned keys: 1 of 1 key(s) must sign",
        f"trusted keys: {key_id}",
        "credit",
    ]
    assert lines[4].startswith("  active:   1.1.0 (int8, installed 20")
    assert lines[4].endswith(f"selftest passed: {rows} rows match (max abs error 0))")
    assert lines[5].startswith("  previous: 1.0.0 (int8, installed ")
    assert lines[6:] == [
        "  highest:  1.1.0 (anti-rollback: nothing lower installs)",
        "  bad:      none",
        "  drift:    no report yet (a server writes one while it serves)",
    ]

    doc = json.loads(runtime(["status", "--store", str(root), "--json"]).stdout)
    assert doc["store"] == str(root) and doc["trusted_keys"] == [key_id]
    assert doc["key_set"] == {"version": 0, "threshold": 1, "expires": None}
    credit = doc["models"]["credit"]
    assert (credit["active"], credit["previous"], credit["bad"]) == ("1.1.0", "1.0.0", [])
    assert credit["installed"]["1.1.0"]["selftest"]["passed"] is True

    stdin = json_lines(trained.x_test[:20])
    scored = runtime(["score", "--store", str(root)], stdin)
    direct = runtime(["score", "--bundle", str(bundles[V110]), "--trust", str(keys.public)], stdin)
    assert (scored.returncode, scored.stderr) == (0, "")
    assert records(scored.stdout) == records(direct.stdout)
    assert len(records(scored.stdout)) == 20


def test_init_refuses_a_directory_that_is_not_a_store(tmp_path: Path, keys: KeyFiles) -> None:
    (tmp_path / "data.csv").write_text("a,b\n")
    before = snapshot(tmp_path)
    proc = cli(["init", "--store", str(tmp_path), "--trust", str(keys.public)])
    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: {tmp_path} is not empty and is not an edgebundle store; "
        "give a new or empty directory\n"
    )
    assert snapshot(tmp_path) == before


def test_init_twice_is_refused(store: Path, keys: KeyFiles) -> None:
    before = snapshot(store)
    proc = cli(["init", "--store", str(store), "--trust", str(keys.public)])
    assert (proc.returncode, proc.stderr) == (2, f"error: {store} is already an edgebundle store\n")
    assert snapshot(store) == before


def test_install_same_bundle_twice_exits_0(store: Path, bundles: dict[Spec, Path]) -> None:
    install(store, bundles[V100])
    before = snapshot(store)
    proc = install(store, bundles[V100])
    assert proc.returncode == 0
    assert proc.stdout == "credit 1.0.0 is already installed and active; nothing changed\n"
    assert snapshot(store) == before


def test_install_lower_version_exits_4(store: Path, bundles: dict[Spec, Path]) -> None:
    install(store, bundles[V110])
    before = snapshot(store)
    proc = install(store, bundles[V100])
    assert proc.returncode == 4
    assert proc.stderr == (
        "error: refusing credit 1.0.0: version 1.1.0 was already installed (anti-rollback)\n"
    )
    assert snapshot(store) == before


def test_install_untrusted_bundle_exits_3(store: Path, bundles: dict[Spec, Path]) -> None:
    before = snapshot(store)
    proc = install(store, bundles[FOREIGN])
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: no valid signature by a trusted key (signed by: ")
    assert snapshot(store) == before
    assert audit_events(store)[-1].event == "refused"


def test_install_failing_selftest_exits_3_and_keeps_the_old_version(
    store: Path, bundles: dict[Spec, Path], keys: KeyFiles, tmp_path: Path
) -> None:
    install(store, bundles[V100])
    broken = tmp_path / "credit-1.5.0.bundle"
    broken.write_bytes(with_wrong_selftest(bundles[V100].read_bytes(), keys, "1.5.0"))
    before = snapshot(store)
    proc = install(store, broken)
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: selftest failed for credit 1.5.0: output 'probability'")
    assert len(proc.stderr.splitlines()) == 1
    assert snapshot(store) == before
    assert Store.open(store).load_active("credit").version == Version.parse("1.0.0")


def test_install_into_a_non_store_exits_2(tmp_path: Path, bundles: dict[Spec, Path]) -> None:
    proc = install(tmp_path, bundles[V100])
    assert proc.returncode == 2
    assert (
        proc.stderr == f"error: {tmp_path} is not an edgebundle store (run bundle-runtime init)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_install_missing_file_exits_2(store: Path, tmp_path: Path) -> None:
    proc = install(store, tmp_path / "nope.bundle")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot read ") and "No such file" in proc.stderr


def test_rollback_twice_and_without_previous(store: Path, bundles: dict[Spec, Path]) -> None:
    install(store, bundles[V100])
    proc = cli(["rollback", "--store", str(store), "--model", "credit"])
    assert (proc.returncode, proc.stderr) == (
        2,
        "error: credit has no previous version to roll back to\n",
    )
    install(store, bundles[V110])
    proc = cli(["rollback", "--store", str(store), "--model", "credit"])
    assert proc.returncode == 0
    assert proc.stdout == (
        "rolled back credit to 1.0.0 (previous: 1.1.0; roll back again to undo)\n"
    )
    proc = cli(["rollback", "--store", str(store), "--model", "credit"])
    assert proc.stdout.startswith("rolled credit forward to 1.1.0, undoing the last rollback")
    events = [(e.event, e.version) for e in audit_events(store)]
    assert events[-2:] == [("rollback", "1.0.0"), ("rollback", "1.1.0")]


def test_score_store_with_several_models_needs_model(
    store: Path, bundles: dict[Spec, Path], trained: Trained
) -> None:
    install(store, bundles[V100])
    install(store, bundles[FRAUD])
    stdin = json_lines(trained.x_test[:3])
    proc = runtime(["score", "--store", str(store)], stdin)
    assert proc.returncode == 2
    assert proc.stderr == "error: the store holds several models (credit, fraud); name one\n"
    proc = runtime(["score", "--store", str(store), "--model", "fraud", "--format", "jsonl"], stdin)
    assert proc.returncode == 0 and len(records(proc.stdout)) == 3


def test_score_store_refuses_a_bundle_modified_on_disk(
    store: Path, bundles: dict[Spec, Path]
) -> None:
    install(store, bundles[V100])
    path = store / "bundles" / "credit" / "1.0.0.bundle"
    data = bytearray(path.read_bytes())
    data[-2000] ^= 0x01
    path.write_bytes(bytes(data))
    proc = runtime(["score", "--store", str(store)], "[1,2,3,4,5,6]\n")
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"error: {path} changed on disk: its sha256 is ")
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "S", "--trust", "K"], "error: --trust goes with --bundle"),
        (["--bundle", "B", "--store", "S"], "not allowed with argument"),
        (["--bundle", "B", "--model", "credit"], "error: --model needs --store"),
        (["--bundle", "B"], "required: --trust (with --bundle)"),
        ([], "one of the arguments --bundle --store is required"),
    ],
    ids=["store-with-trust", "bundle-and-store", "model-without-store", "bundle-alone", "none"],
)
def test_score_source_usage_errors(args: list[str], message: str) -> None:
    proc = cli(["score", *args])
    assert proc.returncode == 2
    assert message in proc.stderr


def test_two_concurrent_installers_end_consistent(store: Path, bundles: dict[Spec, Path]) -> None:
    install(store, bundles[V100])
    procs = [
        subprocess.Popen(
            [str(BIN / "bundle-runtime"), "install", str(bundles[spec]), "--store", str(store)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in (V110, V110, FRAUD)
    ]
    outcomes = [(p.wait(timeout=120), p.communicate()) for p in procs]
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    said = sorted(out.split(" (")[0] for _, (out, _err) in outcomes)
    assert said == [
        "credit 1.1.0 is already installed and active; nothing changed\n",
        "installed credit 1.1.0",
        "installed fraud 2.0.0",
    ]
    opened = Store.open(store)
    assert opened.load_active("credit").version == Version.parse("1.1.0")
    assert opened.load_active("fraud").version == Version.parse("2.0.0")
    installed = [(e.model, e.version) for e in audit_events(store) if e.event == "installed"]
    assert sorted(installed) == [("credit", "1.0.0"), ("credit", "1.1.0"), ("fraud", "2.0.0")]


def test_a_second_rollback_says_it_goes_forward(store: Path, bundles: dict[Spec, Path]) -> None:
    install(store, bundles[V100])
    install(store, bundles[V110])
    back = cli(["rollback", "--store", str(store), "--model", "credit", "--json"])
    forward = cli(["rollback", "--store", str(store), "--model", "credit"])
    assert json.loads(back.stdout) == {
        "model": "credit",
        "active": "1.0.0",
        "previous": "1.1.0",
        "direction": "back",
    }
    assert forward.stdout == (
        "rolled credit forward to 1.1.0, undoing the last rollback (previous: 1.0.0)\n"
    )
    reasons = [e.reason for e in audit_events(store) if e.event == "rollback"]
    assert reasons == ["rolled back from 1.1.0", "rolled forward from 1.0.0"]


def test_json_results_of_init_and_install(
    tmp_path: Path, keys: KeyFiles, bundles: dict[Spec, Path]
) -> None:
    root = tmp_path / "store"
    init = cli(["init", "--store", str(root), "--trust", str(keys.public), "--json"])
    key_id = keyid(load_public_key(keys.public))
    assert json.loads(init.stdout) == {
        "store": str(root),
        "key_set": {"version": 0, "threshold": 1},
        "trusted_keys": [key_id],
    }
    first = json.loads(cli(["install", str(bundles[V100]), "--store", str(root), "--json"]).stdout)
    again = json.loads(cli(["install", str(bundles[V100]), "--store", str(root), "--json"]).stdout)
    recorded = Store.open(root).state().models["credit"].installed["1.0.0"]
    assert first == {
        "model": "credit",
        "version": "1.0.0",
        "previous": None,
        "sha256": recorded.sha256,
        "changed": True,
        "selftest": {"passed": True, "rows": recorded.selftest.rows},
    }
    assert again == {**first, "changed": False}


def test_remove_keeps_the_anti_rollback_floor(store: Path, bundles: dict[Spec, Path]) -> None:
    install(store, bundles[V100])
    install(store, bundles[V110])
    only = cli(["remove", "credit", "--store", str(store)])
    assert (only.returncode, only.stdout) == (2, "")
    assert only.stderr == (
        "error: credit is the only model this store serves: a server on it would have nothing "
        "left to serve (--force removes it anyway)\n"
    )
    install(store, bundles[FRAUD])  # with a second model served, no --force is needed
    removed = cli(["remove", "credit", "--store", str(store), "--json"])
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout) == {
        "model": "credit",
        "removed": ["1.1.0", "1.0.0"],
        "highest_seen": "1.1.0",
    }
    assert not (store / "bundles" / "credit").exists()
    credit = Store.open(store).state().models["credit"]
    assert (credit.active, credit.previous, str(credit.highest_seen)) == (None, None, "1.1.0")
    assert [e.event for e in audit_events(store)][-1] == "removed"

    status = cli(["status", "--store", str(store)]).stdout
    assert "None" not in status
    assert "  active:   none\n  previous: none\n  highest:  1.1.0" in status
    # Removing is not a way around anti-rollback: the old version stays refused.
    again = install(store, bundles[V100])
    assert again.returncode == 4 and "anti-rollback" in again.stderr
    twice = cli(["remove", "credit", "--store", str(store)])
    assert (twice.returncode, twice.stderr) == (
        2,
        "error: credit has no installed version to remove\n",
    )


def test_remove_the_only_model_with_force(store: Path, bundles: dict[Spec, Path]) -> None:
    install(store, bundles[V100])
    proc = cli(["remove", "credit", "--store", str(store), "--force"])
    assert proc.stdout == "removed credit 1.0.0; only versions above 1.0.0 install from now on\n"
    assert cli(["score", "--store", str(store)]).returncode == 2  # nothing left to score with
    missing = cli(["remove", "nope", "--store", str(store)])
    assert missing.stderr == "error: no model named 'nope' in the store (installed: credit)\n"


def test_audit_lists_filters_and_survives_a_torn_line(
    store: Path, bundles: dict[Spec, Path]
) -> None:
    install(store, bundles[V100])
    install(store, bundles[V110])
    install(store, bundles[V100])  # refused: anti-rollback
    install(store, bundles[FRAUD])
    with (store / "audit.log").open("ab") as log:
        log.write(b'{"time": "2026-')  # what a crash mid-append could leave
    every = runtime(["audit", "--store", str(store)])
    assert every.returncode == 0
    assert every.stderr.startswith("warning: audit.log line 6 is unreadable: ")
    lines = every.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [
        "init",
        "installed",
        "installed",
        "refused",
        "installed",
    ]
    assert " refused      credit 1.0.0 " in lines[3] and "anti-rollback" in lines[3]

    refused = cli(["audit", "--store", str(store), "--event", "refused", "--json"])
    (event,) = records(refused.stdout)
    assert (event["event"], event["model"], event["version"]) == ("refused", "credit", "1.0.0")
    assert event["origin"] == str(bundles[V100].absolute())

    fraud = records(cli(["audit", "--store", str(store), "--model", "fraud", "--json"]).stdout)
    assert [(e["event"], e["version"]) for e in fraud] == [("installed", "2.0.0")]
    last = records(cli(["audit", "--store", str(store), "--last", "2", "--json"]).stdout)
    assert [e["event"] for e in last] == ["refused", "installed"]
    future = cli(["audit", "--store", str(store), "--since", "2999-01-01"])
    assert (future.returncode, future.stdout) == (0, "")
    bad = cli(["audit", "--store", str(store), "--since", "yesterday"])
    assert bad.returncode == 2


@pytest.mark.parametrize(
    "command",
    ["score", "init", "install", "status", "rollback", "remove", "audit", "serve", "update"],
)
def test_every_help_shows_examples_and_real_exit_codes(command: str) -> None:
    proc = cli([command, "--help"])
    assert proc.returncode == 0
    examples = proc.stdout.split("Examples:\n")[1].split("\n\n")[0].splitlines()
    assert examples and all(line.startswith(f"  bundle-runtime {command}") for line in examples)
    table = proc.stdout.split("Exit codes:\n")[1].splitlines()
    codes = {int(line.split()[0]) for line in table}
    assert 0 in codes and codes <= {int(code) for code in ExitCode}
