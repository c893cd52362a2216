"""The one table from domain error class to exit code, the three steps that blame an input
instead, and the lazily parsed commands that table serves."""

from __future__ import annotations

import contextlib
import inspect
import io
import subprocess
import sys
from pathlib import Path

import pytest

from edgebundle.builder.build import BudgetMissedError
from edgebundle.builder.cli import EXIT_CODES as BUILDER_EXIT_CODES
from edgebundle.builder.cli import ExitCode as BuilderExitCode
from edgebundle.builder.errors import ParityError
from edgebundle.runtime import errors
from edgebundle.runtime.cli import ExitCode, main
from edgebundle.runtime.cli.exits import (
    ARGUMENTS,
    CHANNEL,
    EXIT_CODES,
    STORED_BUNDLE,
    Blame,
    exit_code,
)
from edgebundle.runtime.errors import (
    BundleError,
    ChannelError,
    ChannelUnreachableError,
    CompatibilityError,
    FleetError,
    FormatError,
    InputError,
    IntegrityError,
    KeyFileError,
    ManifestError,
    RollbackError,
    SelftestError,
    ServeError,
    SignatureError,
    StoreError,
)
from edgebundle.runtime.store import Store
from tests.support.helpers_runtime import BundleFiles, multiclass, write_signed_bundle

COMMANDS = ("score", "init", "install", "status", "rollback", "serve", "update")


def domain_errors() -> set[type[BundleError]]:
    return {
        cls
        for cls in vars(errors).values()
        if inspect.isclass(cls)
        and issubclass(cls, BundleError)
        and cls.__module__ == errors.__name__
    }


def cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


# --- the table ------------------------------------------------------------------------------------


def test_every_domain_error_class_has_an_entry() -> None:
    assert set(EXIT_CODES) == domain_errors()


def test_no_two_meanings_share_a_number() -> None:
    # Each number is one ExitCode member (no aliases), and each member one meaning: the classes
    # sharing a code are those whose errors mean the same thing to the operator.
    assert len(ExitCode.__members__) == len(ExitCode)
    by_code: dict[ExitCode, set[type[BundleError]]] = {}
    for cls, code in EXIT_CODES.items():
        by_code.setdefault(code, set()).add(cls)
    assert by_code == {
        ExitCode.USAGE: {
            BundleError, KeyFileError, InputError, StoreError, ServeError, FleetError
        },
        ExitCode.REJECTED: {
            FormatError,
            SignatureError,
            ManifestError,
            IntegrityError,
            CompatibilityError,
            SelftestError,
        },
        ExitCode.ROLLBACK_REFUSED: {RollbackError},
        ExitCode.CHANNEL_UNREACHABLE: {ChannelUnreachableError},
        ExitCode.CHANNEL_REJECTED: {ChannelError},
    }


def test_the_nearest_class_with_an_entry_decides() -> None:
    assert exit_code(ChannelUnreachableError("down")) == ExitCode.CHANNEL_UNREACHABLE
    assert exit_code(ChannelError("forged")) == ExitCode.CHANNEL_REJECTED
    assert exit_code(ServeError("token file is empty")) == ExitCode.USAGE
    # The builder's errors are not the device's: they take their base's entry.
    assert exit_code(BudgetMissedError("missed", ())) == ExitCode.USAGE


@pytest.mark.parametrize(
    "blamed", [ARGUMENTS, STORED_BUNDLE, CHANNEL], ids=["arguments", "stored-bundle", "channel"]
)
def test_a_blame_overrides_every_class_but_those_it_keeps(blamed: Blame) -> None:
    for cls in domain_errors():
        expected = EXIT_CODES[cls] if issubclass(cls, blamed.keep) else blamed.code
        assert exit_code(cls("x"), blamed) == expected, cls
    assert all(EXIT_CODES[cls] != blamed.code for cls in blamed.keep)


def test_the_builder_shares_codes_with_the_runtime_only_where_the_meaning_is_the_same() -> None:
    assert BuilderExitCode.USAGE == ExitCode.USAGE
    # `bundle build` missing its budget refuses the model, as a device refuses a bundle.
    assert BUILDER_EXIT_CODES[ParityError] == ExitCode.REJECTED == 3
    assert set(BUILDER_EXIT_CODES) == {BundleError, ParityError}


# --- the blamed steps, end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def mc(tmp_path_factory: pytest.TempPathFactory) -> BundleFiles:
    return write_signed_bundle(tmp_path_factory.mktemp("mc"), multiclass())


@pytest.fixture
def store(mc: BundleFiles, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    Store.init(root, [mc.public_key]).install(mc.bundle.read_bytes(), origin="test")
    return root


def test_a_malformed_trust_statement_is_a_usage_error(mc: BundleFiles, tmp_path: Path) -> None:
    statement = tmp_path / "1.json"
    statement.write_text("{ not json")
    for args in (
        ["score", "--bundle", str(mc.bundle), "--trust", str(statement)],
        ["init", "--store", str(tmp_path / "store"), "--trust", str(statement)],
    ):
        code, _, err = cli(args)
        assert (code, err.count("\n")) == (ExitCode.USAGE, 1), err
        assert str(statement) in err


def test_a_bad_channel_url_is_usage_for_serve_and_a_rejected_channel_for_update(
    store: Path,
) -> None:
    serve = cli(["serve", "--store", str(store), "--port", "0", "--channel", "ftp://x/"])
    update = cli(["update", "--store", str(store), "--channel", "ftp://x/"])
    assert serve[0] == ExitCode.USAGE
    assert update[0] == ExitCode.CHANNEL_REJECTED
    assert serve[2].startswith("error: unsupported channel URL")
    assert update[2] == serve[2].replace("error: ", "error: channel rejected: ", 1)


def test_a_kept_bundle_gone_from_disk_is_rejected(store: Path) -> None:
    (kept,) = (store / "bundles").glob("*/*.bundle")
    kept.unlink()
    code, _, err = cli(["score", "--store", str(store)])
    assert code == ExitCode.REJECTED
    assert err == f"error: cannot read {kept}: No such file or directory\n"


# --- lazily parsed commands -----------------------------------------------------------------------


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert all(f"    {command} " in out for command in COMMANDS), out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_adds_its_arguments_when_chosen(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bundle-runtime {command} ")
    assert ("--bundle" if command == "score" else "--store DIR") in out


def test_score_with_a_bundle_never_imports_the_server(mc: BundleFiles) -> None:
    argv = ["score", "--bundle", str(mc.bundle), "--trust", str(mc.public_key)]
    program = (
        "import sys\n"
        "from edgebundle.runtime.cli import main\n"
        f"code = main({argv!r})\n"
        "print(code, 'edgebundle.runtime.serve.server' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        input=b"[1, 2, 3, 4]\n",
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.stderr == b""
    assert result.stdout.decode().splitlines()[-1] == "0 False"
