"""The store's seams that need neither disk nor socket: the pure install decisions, and each
on-disk document read back from what it writes."""

from __future__ import annotations

import re

import pytest

from edgebundle.runtime._json import loads_strict
from edgebundle.runtime.errors import ManifestError, RollbackError, StoreError
from edgebundle.runtime.semver import Version
from edgebundle.runtime.store import (
    AuditEvent,
    InstalledVersion,
    ModelState,
    OtaState,
    SelftestSummary,
    StoreMarker,
    StoreState,
)
from edgebundle.runtime.store._decisions import (
    admit,
    first_bad,
    installed,
    kept_record,
    marked_bad,
    model_named,
)

NAME = "credit"
V100, V110, V120, V130 = (Version.parse(f"1.{minor}.0") for minor in range(4))


def sha(char: str) -> str:
    return char * 64


def record(char: str = "a") -> InstalledVersion:
    return InstalledVersion(
        sha256=sha(char),
        size=1234,
        precision="int8",
        keyid=sha("f"),
        installed_at="2025-01-31T12:00:00Z",
        selftest=SelftestSummary(passed=True, rows=8, max_abs_error=0.004, detail="8 rows"),
    )


def model(
    active: Version | None,
    previous: Version | None = None,
    *,
    highest_seen: Version | None = None,
    bad: tuple[Version, ...] = (),
) -> ModelState:
    """A model keeping ``active`` (bytes "a…") and ``previous`` (bytes "b…")."""
    kept = {str(v): record(c) for v, c in ((active, "a"), (previous, "b")) if v is not None}
    versions = [v for v in (active, previous) if v is not None]
    return ModelState(
        active=active,
        previous=previous,
        highest_seen=highest_seen or max(versions),
        bad=bad,
        installed=kept,
    )


# --- admit: anti-rollback --------------------------------------------------------------------


def test_admit_lets_the_first_version_of_a_model_in() -> None:
    assert admit(NAME, V100, None, sha("a")) is None


def test_admit_finds_the_same_bytes_already_active_a_no_op() -> None:
    current = model(V110, V100)
    assert admit(NAME, V110, current, sha("a")) == record("a")


def test_admit_lets_a_newer_version_in() -> None:
    assert admit(NAME, V120, model(V110, V100), sha("c")) is None


def test_admit_lets_the_kept_previous_version_back_with_its_exact_bytes() -> None:
    rolled_back = model(V100, V110)  # active 1.0.0 after a rollback from 1.1.0
    assert admit(NAME, V110, rolled_back, sha("b")) is None


@pytest.mark.parametrize("version", [V110, V100], ids=["active", "previous"])
def test_admit_refuses_an_installed_version_with_other_content(version: Version) -> None:
    kept = record("a" if version == V110 else "b")
    message = (
        f"refusing credit {version}: version {version} is already installed with other content "
        f"(sha256 {kept.sha256[:16]}…, this bundle {'c' * 16}…); same version, other content: "
        "publish it as a new version"
    )
    with pytest.raises(RollbackError, match=f"^{re.escape(message)}$"):
        admit(NAME, version, model(V110, V100), sha("c"))


def test_admit_refuses_a_version_marked_bad() -> None:
    current = model(V100, highest_seen=V110, bad=(V110,))
    with pytest.raises(RollbackError, match=r"^refusing credit 1\.1\.0: it was marked bad on"):
        admit(NAME, V110, current, sha("c"))


@pytest.mark.parametrize(
    ("current", "version"),
    [
        (model(V120, V110), V100),
        # The highest version seen need not be kept any more: it was installed all the same.
        (model(V100, highest_seen=V120), V120),
    ],
    ids=["below", "equal-not-kept"],
)
def test_admit_refuses_what_is_below_or_at_the_highest_seen_but_not_kept(
    current: ModelState, version: Version
) -> None:
    message = f"refusing credit {version}: version 1.2.0 was already installed (anti-rollback)"
    with pytest.raises(RollbackError, match=f"^{re.escape(message)}$"):
        admit(NAME, version, current, sha("c"))


# --- installed: the pointers after an install ------------------------------------------------


def test_installed_first_version() -> None:
    assert installed(None, V100, record("c")) == ModelState(
        active=V100, previous=None, highest_seen=V100, bad=(), installed={"1.0.0": record("c")}
    )


def test_installed_keeps_the_old_active_as_previous_and_drops_the_old_previous() -> None:
    assert installed(model(V110, V100), V120, record("c")) == ModelState(
        active=V120,
        previous=V110,
        highest_seen=V120,
        bad=(),
        installed={"1.2.0": record("c"), "1.1.0": record("a")},
    )


def test_installed_does_not_keep_a_bad_active_version_as_previous() -> None:
    stuck = model(V110, highest_seen=V110, bad=(V110,))  # bad, but nothing to fall back to
    assert installed(stuck, V120, record("c")) == ModelState(
        active=V120, previous=None, highest_seen=V120, bad=(V110,), installed={"1.2.0": record("c")}
    )


def test_installed_keeps_highest_seen_when_rolling_forward_again() -> None:
    rolled_back = model(V100, V110)
    after = installed(rolled_back, V110, record("b"))
    assert (after.active, after.previous, after.highest_seen) == (V110, V100, V110)
    assert after.installed == {"1.1.0": record("b"), "1.0.0": record("a")}


# --- marked_bad: every branch ----------------------------------------------------------------


def test_marked_bad_active_with_a_previous_rolls_back_to_it() -> None:
    updated, note = marked_bad(model(V110, V100, bad=(V130,), highest_seen=V130), V110)
    assert note == "; rolled back to 1.0.0"
    assert updated == ModelState(
        active=V100,
        previous=None,
        highest_seen=V130,
        bad=(V130, V110),
        installed={"1.0.0": record("b")},
    )


def test_marked_bad_previous_is_dropped_and_active_stays() -> None:
    updated, note = marked_bad(model(V110, V100), V100)
    assert note == ""
    assert updated == ModelState(
        active=V110, previous=None, highest_seen=V110, bad=(V100,), installed={"1.1.0": record("a")}
    )


def test_marked_bad_active_without_a_previous_stays_active() -> None:
    updated, note = marked_bad(model(V110), V110)
    assert note == "; stays active: no previous version to roll back to"
    assert updated == model(V110, bad=(V110,))


def test_marked_bad_version_not_kept_is_only_recorded() -> None:
    updated, note = marked_bad(model(V110, V100), V120)
    assert note == ""
    assert updated == model(V110, V100, highest_seen=V110, bad=(V120,))


# --- lookups -----------------------------------------------------------------------------------


def test_model_named_refuses_an_unknown_name_listing_the_known_ones() -> None:
    state = StoreState(models={NAME: model(V100), "fraud": model(V100)})
    assert model_named(state, NAME) == model(V100)
    message = "no model named 'churn' in the store (installed: credit, fraud)"
    with pytest.raises(StoreError, match=f"^{re.escape(message)}$"):
        model_named(state, "churn")
    with pytest.raises(StoreError, match=r"\(installed: none\)$"):
        model_named(StoreState(), "churn")


def test_kept_record_by_semver_precedence() -> None:
    assert kept_record(model(V110, V100), Version.parse("1.0.0+build.9")) == record("b")


# --- on-disk formats: each reads back what it writes -----------------------------------------

Document = (
    StoreMarker
    | SelftestSummary
    | InstalledVersion
    | ModelState
    | StoreState
    | AuditEvent
    | OtaState
)
REFUSED = AuditEvent(
    time="2025-01-31T12:00:00Z",
    event="refused",
    model=None,  # refused before its manifest could be trusted
    version=None,
    sha256=sha("a"),
    origin=None,
    reason="bad signature\nsecond line",
)
FORMATS: list[Document] = [
    StoreMarker(),
    SelftestSummary(passed=False, rows=0, max_abs_error=0.0, detail="no rows"),
    record(),
    model(V110, V100, highest_seen=V120, bad=(V120,)),
    model(V110, highest_seen=V110, bad=(V110,)),
    StoreState(),
    StoreState(models={NAME: model(V110, V100), "fraud": model(Version.parse("2.0.0-rc.1"))}),
    AuditEvent(
        time="2025-01-31T12:00:00Z",
        event="installed",
        model=NAME,
        version="1.1.0",
        sha256=sha("a"),
        origin="https://example.test/channel/credit-1.1.0.bundle",
        reason="previous: 1.0.0; selftest: 8 rows",
    ),
    REFUSED,
    OtaState(),
    OtaState(last_serial=42),
]


@pytest.mark.parametrize("document", FORMATS, ids=lambda d: type(d).__name__)
def test_from_dict_reads_back_to_dict(document: Document) -> None:
    assert type(document).from_dict(document.to_dict()) == document


def test_state_bytes_read_back_and_are_canonical() -> None:
    state = StoreState(models={NAME: model(V110, V100)})
    data = state.to_bytes()
    assert StoreState.from_dict(loads_strict(data, "state.json")) == state
    assert StoreState.from_dict(loads_strict(data, "state.json")).to_bytes() == data


def test_audit_event_is_one_line_even_with_newlines_in_its_reason() -> None:
    line = REFUSED.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert AuditEvent.from_dict(loads_strict(line, "audit.log")) == REFUSED


def test_ota_state_reads_the_legacy_format_and_writes_the_current_one() -> None:
    legacy = {"format": "edgebundle.ota/1", "last_serial": 7, "key_version": 2}
    assert OtaState.from_dict(legacy).to_dict() == {"format": "edgebundle.ota/2", "last_serial": 7}
    with pytest.raises(ManifestError, match="key_version"):
        OtaState.from_dict({**legacy, "format": "edgebundle.ota/2"})


def test_model_state_refuses_a_bad_previous_version() -> None:
    with pytest.raises(ManifestError, match=r"^previous version 1\.0\.0 is marked bad$"):
        model(V110, V100, bad=(V100,))


def test_a_first_version_failing_its_selftest_is_remembered_with_nothing_installed() -> None:
    model = first_bad(V120)
    assert (model.active, model.highest_seen, model.bad, dict(model.installed)) == (
        None,
        None,
        (V120,),
        {},
    )
    assert ModelState.from_dict(model.to_dict()) == model
    with pytest.raises(RollbackError, match="marked bad on this device"):
        admit(NAME, V120, model, sha("a"))
    assert admit(NAME, V100, model, sha("a")) is None  # lower versions were never installed
    after = installed(model, V100, record())
    assert (after.active, after.highest_seen, after.bad) == (V100, V100, (V120,))


def test_installed_versions_need_a_highest_seen() -> None:
    with pytest.raises(ManifestError, match="installed versions need a highest_seen"):
        ModelState(
            active=V100, previous=None, highest_seen=None, bad=(), installed={"1.0.0": record()}
        )
