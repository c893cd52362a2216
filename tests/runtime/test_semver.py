from __future__ import annotations

import itertools

import pytest

from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.semver import Version

# Ascending precedence, straight from semver.org §11 plus numeric-vs-text edge cases.
ASCENDING = [
    "0.0.0",
    "0.0.1",
    "0.1.0",
    "0.9.0",
    "0.10.0",
    "1.0.0-0",
    "1.0.0-2",
    "1.0.0-10",
    "1.0.0-1a",
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "2.0.0-rc.1",
    "2.0.0",
    "10.0.0",
]


@pytest.mark.parametrize(("lower", "higher"), list(itertools.pairwise(ASCENDING)))
def test_precedence_of_neighbours(lower: str, higher: str) -> None:
    a, b = Version.parse(lower), Version.parse(higher)
    assert a < b and a <= b and b > a and b >= a and a != b


def test_sorting_the_whole_table() -> None:
    shuffled = sorted(ASCENDING, key=lambda text: (len(text), text[::-1]))
    assert [str(v) for v in sorted(Version.parse(t) for t in shuffled)] == ASCENDING


def test_build_metadata_is_ignored_for_precedence_and_equality() -> None:
    a, b = Version.parse("1.0.0+a"), Version.parse("1.0.0+b.2")
    assert a == b and hash(a) == hash(b) and a <= b and a >= b and not a < b
    assert str(a) != str(b)
    assert Version.parse("1.0.0-rc.1+x") < Version.parse("1.0.0")


@pytest.mark.parametrize(
    "text", ["0.0.0", "1.2.3", "1.0.0-alpha.1", "1.0.0+20130313144700", "1.0.0-x-y.0.A+b.c-d"]
)
def test_str_round_trips(text: str) -> None:
    assert str(Version.parse(text)) == text


def test_fields() -> None:
    v = Version.parse("1.2.3-rc.1+build.5")
    assert (v.major, v.minor, v.patch) == (1, 2, 3)
    assert v.prerelease == ("rc", "1") and v.build == ("build", "5")


@pytest.mark.parametrize(
    "text",
    [
        "v1.2.3",
        "1.2",
        "1.2.3.4",
        "01.2.3",
        "1.02.3",
        "1.2.03",
        "1.2.3-01",
        "1.2.3-",
        "1.2.3+",
        "1.2.3-a..b",
        "1.2.3+a..b",
        "1.2.3-a_b",
        " 1.2.3",
        "1.2.3\n",
        "\uff11.2.3",  # FULLWIDTH DIGIT ONE: \d would accept it
        "",
        "1" * 300 + ".0.0",
    ],
)
def test_not_strict_semver_is_refused(text: str) -> None:
    with pytest.raises(ManifestError, match="is not a semantic version"):
        Version.parse(text)


def test_error_carries_context() -> None:
    with pytest.raises(ManifestError) as excinfo:
        Version.parse("v1.0.0", context="version")
    assert excinfo.value.context == "version"
    assert "'v' prefix" in str(excinfo.value)


def test_constructor_validates() -> None:
    with pytest.raises(ManifestError):
        Version(major=-1, minor=0, patch=0)
    with pytest.raises(ManifestError):
        Version(major=True, minor=0, patch=0)
    with pytest.raises(ManifestError):
        Version(major=1, minor=0, patch=0, prerelease=("01",))


def test_comparing_with_other_types() -> None:
    assert Version.parse("1.0.0") != "1.0.0"
    with pytest.raises(TypeError):
        _ = Version.parse("1.0.0") < "2.0.0"
