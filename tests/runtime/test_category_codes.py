"""A categorical feature's codes in the manifest: one canonical string of codes and runs, read
strictly (the bad field named) and held as runs, however many codes they stand for."""

from __future__ import annotations

from typing import Any

import pytest

from edgebundle.runtime.category_codes import CODE_BOUND, CategoryCodes
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.manifest import Manifest, parse_manifest

CONTEXT = "inputs.features[1].codes"


def _with_codes(manifest_dict: dict[str, Any], codes: object) -> dict[str, Any]:
    features = [
        {"name": "amount", "type": "float"},
        {"name": "shop", "type": "c", "codes": codes},
        {"name": "hour", "type": "q"},
    ]
    return {**manifest_dict, "inputs": {**manifest_dict["inputs"], "features": features}}


@pytest.mark.parametrize(
    ("codes", "text"),
    [
        ([], ""),
        ([5], "5"),
        ([0, 1], "0-1"),
        (range(1000), "0-999"),
        ([0, 1, 2, 3, 7, 9, 10, 11, 12], "0-3,7,9-12"),
        ([12, 3, 3, 0, 1, 2, 7, 9, 10, 11], "0-3,7,9-12"),
        ([0, 2, 4], "0,2,4"),
        ([CODE_BOUND - 1], str(CODE_BOUND - 1)),
    ],
)
def test_codes_are_written_as_runs_and_read_back_as_the_same_codes(
    manifest_dict: dict[str, Any], codes: Any, text: str
) -> None:
    made = CategoryCodes.of(codes)
    assert str(made) == text
    expected = sorted(set(codes))
    assert list(made) == expected and len(made) == len(expected)
    assert [made[i] for i in range(len(made))] == expected
    assert [made[-i] for i in range(1, len(made) + 1)] == expected[::-1]
    assert list(made[1:3]) == expected[1:3]
    for code in range(-1, max(expected, default=0) + 2):
        assert (code in made) == (code in expected)
    assert "1" not in made and True not in made
    with pytest.raises(IndexError):
        made[len(made)]
    manifest = Manifest.from_dict(_with_codes(manifest_dict, text))
    assert manifest.inputs.features[1].codes == made
    assert manifest.to_dict()["inputs"]["features"][1]["codes"] == text
    assert parse_manifest(manifest.to_bytes()).to_bytes() == manifest.to_bytes()


def test_a_few_bytes_may_stand_for_millions_of_codes_without_holding_them() -> None:
    every = CategoryCodes.parse(f"0-{CODE_BOUND - 1}", CONTEXT)
    assert every.runs == ((0, CODE_BOUND - 1),) and len(every) == CODE_BOUND
    assert CODE_BOUND - 1 in every and CODE_BOUND not in every
    assert every[-1] == CODE_BOUND - 1


@pytest.mark.parametrize(
    ("codes", "fragment"),
    [
        ([0, 1], "expected a string, got an array"),
        (None, "leave the key out"),
        ("0,1", "'1' after 0: codes must ascend, consecutive ones joined in a run"),
        ("0-3,4", "'4' after 3"),
        ("5,2", "'2' after 5"),
        ("0-3,2-9", "'2-9' after 3"),
        ("3-3", "run '3-3' must go from a code to a higher one"),
        ("9-2", "run '9-2' must go"),
        ("01", "'01' is neither a code nor a run"),
        ("1,,2", "'' is neither"),
        ("1 ,2", "'1 ' is neither"),
        ("-1", "'-1' is neither"),
        ("1-2-3", "'1-2-3' is neither"),
        ("1.5", "'1.5' is neither"),
        (",", "'' is neither"),
        (str(CODE_BOUND), f"code {CODE_BOUND} is not below 2**24"),
        (f"0-{CODE_BOUND}", f"code {CODE_BOUND} is not below 2**24"),
        ("123456789", "'123456789' is neither"),
    ],
)
def test_codes_not_in_their_one_form_are_refused_naming_the_field(
    manifest_dict: dict[str, Any], codes: object, fragment: str
) -> None:
    with pytest.raises(ManifestError) as excinfo:
        Manifest.from_dict(_with_codes(manifest_dict, codes))
    assert excinfo.value.context == CONTEXT
    assert fragment in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_only_a_categorical_feature_lists_codes(manifest_dict: dict[str, Any]) -> None:
    d = _with_codes(manifest_dict, "0-9")
    d["inputs"]["features"][1]["type"] = "q"
    with pytest.raises(ManifestError, match="only a categorical feature"):
        Manifest.from_dict(d)
