"""Category names in input rows: a model trained on pandas categoricals takes a category by
its name as well as by its code (the manifest's ``inputs.features[].categories``, code =
position). A number is always read as the code itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgebundle.runtime.errors import InputError
from edgebundle.runtime.manifest import Feature

# (feature name, its category names by code) per named categorical feature; hashable so that
# parsers built for it can be cached
CategoryNames = tuple[tuple[str, tuple[str, ...]], ...]
_MAX_SHOWN = 32


def category_names(features: Sequence[Feature]) -> CategoryNames:
    return tuple((f.name, f.categories) for f in features if f.categories is not None)


def code_tables(names: CategoryNames) -> dict[str, dict[str, int]]:
    """Feature name -> category name -> code."""
    return {feature: {name: code for code, name in enumerate(listed)} for feature, listed in names}


def category_code(tables: Mapping[str, Mapping[str, int]], feature: str, text: str) -> float:
    """The code of category ``text`` of ``feature``; ``InputError`` when the feature takes no
    names or does not know this one (XGBoost refuses an unknown name too)."""
    table = tables.get(feature)
    shown = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."
    if table is None:
        raise InputError(f"feature {feature!r}: expected a number, got {shown!r}")
    code = table.get(text)
    if code is None:
        raise InputError(f"feature {feature!r}: unknown category {shown!r}")
    return float(code)
