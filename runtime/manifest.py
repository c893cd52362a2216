"""The bundle manifest (``manifest.json``): typed, strictly validated, canonically serialised.

Only bytes whose signature already verified reach :func:`parse_manifest` (see ``bundle.py``).
Each class below is the one description of its part of the document: the ``Annotated`` rule
on every field says how its JSON value is read and written (``runtime.document``), and
``check`` holds the rules that tie fields together. Reading refuses anything else with the
dotted path of the offending field; ``to_bytes`` re-validates, so an invalid manifest can be
neither read nor written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from edgebundle.runtime._json import dumps_canonical, json_type, loads_strict, quote
from edgebundle.runtime.category_codes import CategoryCodes
from edgebundle.runtime.document import (
    BOOLEAN,
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SHA256,
    TEXT,
    TIMESTAMP,
    VERSION,
    Document,
    Rule,
    array,
    choice,
    constant,
    count,
    dump,
    extension,
    freeze,
    mapping,
    matching,
    nested,
    optional,
    read_integer,
    read_string,
)
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.semver import Version

FORMAT = "edgebundle.manifest/1"

TASKS = ("binary", "multiclass", "regression", "ranking", "survival")
PRECISIONS = ("float", "int8")
FEATURE_TYPES = ("float", "int", "i", "q", "c")  # "c": categorical
OUTPUT_DTYPES = ("float32", "int64")
LAYOUTS = ("perfect", "node-array", "linear")
LEAF_BITS = (8, 16)
BIN_DTYPES = ("uint8", "uint16")
MISSING_CONVENTIONS = ("nan",)
REQUESTED_PRECISIONS = ("auto", "int8", "float")
CANDIDATE_PRECISIONS = ("float", "int8", "int16")
OPTIMIZE_FOR = ("latency", "size", "memory")
FRAMEWORKS = ("xgboost",)
REQUIRED_FILES = ("model.onnx", "selftest.json")
# The container's own members: a manifest cannot list (and so cannot vouch for) itself.
RESERVED_FILES = ("manifest.json", "manifest.sig")

MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_OPSET_DOMAIN = re.compile(r"(?:[A-Za-z][A-Za-z0-9._-]{0,99})?")

# --- field rules only the manifest has ---------------------------------------------------


def _read_shape(value: object, path: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"expected an array, got {json_type(value)}", context=path)
    if not value:
        raise ManifestError("must have at least the batch dimension", context=path)
    return tuple(_dim(item, index, f"{path}[{index}]") for index, item in enumerate(value))


def _dim(value: object, index: int, path: str) -> int:
    size = read_integer(value, path)
    if index == 0 and size != -1:
        raise ManifestError(f"the batch dimension must be -1, got {size}", context=path)
    if index > 0 and size < 1:
        raise ManifestError(f"must be >= 1, got {size}", context=path)
    return size


def _read_codes(value: object, path: str) -> CategoryCodes:
    return CategoryCodes.parse(read_string(value, path), path)


def _read_leaf_bits(value: object, path: str) -> int:
    bits = read_integer(value, path)
    if bits not in LEAF_BITS:
        raise ManifestError(f"must be 8 or 16, got {bits}", context=path)
    return bits


def _bin_dtype(name: str, path: str) -> None:
    if name not in BIN_DTYPES:
        raise ManifestError(f"unknown key {quote(name)}", context=path)


def _read_plain_version(value: object, path: str) -> str:
    text = read_string(value, path)
    version = Version.parse(text, context=path)
    if version.prerelease or version.build:
        raise ManifestError(f"{text!r} is not a plain X.Y.Z version", context=path)
    return text


def _opset_domain(name: str, path: str) -> None:
    if not _OPSET_DOMAIN.fullmatch(name):
        raise ManifestError(f"{quote(name)} is not an operator set domain", context=path)


def _read_opsets(value: object, path: str) -> Mapping[str, int]:
    if isinstance(value, dict) and not value:
        raise ManifestError("must list at least one domain", context=path)
    return mapping(count(minimum=1), key=_opset_domain).read(value, path)


def _member_name(name: str, path: str) -> None:
    if not MEMBER_NAME.fullmatch(name):
        raise ManifestError(f"{quote(name)} is not a valid member name", context=path)
    if name in RESERVED_FILES:
        raise ManifestError(f"must not list {name!r}, a container member", path)


# --- the parts -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Source(Document):
    framework: Annotated[str, choice(FRAMEWORKS)]
    framework_version: Annotated[str, TEXT]
    sha256: Annotated[str, SHA256]  # of the model file the bundle was built from
    objective: Annotated[str, TEXT]
    num_class: Annotated[int, count(minimum=1)]
    num_trees: Annotated[int, COUNT]
    best_iteration: Annotated[int | None, optional(COUNT)]
    num_features: Annotated[int, count(minimum=1)]


@dataclass(frozen=True, kw_only=True, slots=True)
class Feature(Document):
    name: Annotated[str, TEXT]
    type: Annotated[str, choice(FEATURE_TYPES)]  # XGBoost's feature type; "float" if none
    # categorical only: the category codes the model's splits name (any other code is a
    # category it never saw), as runs "0-999" (category_codes.py), and the training data's
    # category names by code (pandas)
    codes: Annotated[CategoryCodes | None, extension(Rule(_read_codes, str))] = None
    categories: Annotated[
        tuple[str, ...] | None, extension(array(TEXT, unique=(lambda c: c, "category")))
    ] = None

    def check(self) -> None:
        if self.type != "c" and (self.codes is not None or self.categories is not None):
            raise ManifestError("only a categorical feature (type 'c') lists codes or categories")


@dataclass(frozen=True, kw_only=True, slots=True)
class InputSchema(Document):
    # in the model's column order
    features: Annotated[
        tuple[Feature, ...],
        array(nested(Feature), nonempty=True, unique=(lambda f: f.name, "feature name")),
    ]
    # "nan": NaN, JSON null, an absent key and an empty CSV cell all mean missing
    missing: Annotated[str, choice(MISSING_CONVENTIONS)]


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputSpec(Document):
    name: Annotated[str, matching(re.compile(r"[a-z][a-z0-9_]*"), "a lowercase identifier")]
    dtype: Annotated[str, choice(OUTPUT_DTYPES)]
    shape: Annotated[tuple[int, ...], Rule(_read_shape, list)]  # -1 first: the batch dimension
    # what each column of a [N, K] output is (a quantile, a target), when it is not a class
    columns: Annotated[
        tuple[str, ...] | None,
        extension(array(TEXT, nonempty=True, unique=(lambda c: c, "column name"))),
    ] = None

    def check(self) -> None:
        named = self.columns
        if named is not None and (len(self.shape) != 2 or self.shape[1] != len(named)):
            raise ManifestError(
                f"names {len(named)} columns for an output of shape {list(self.shape)}",
                context="columns",
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class Quantization(Document):
    scheme: Annotated[str, TEXT]
    layout: Annotated[str, choice(LAYOUTS)]
    leaf_bits: Annotated[int, Rule(_read_leaf_bits)]
    escalated: Annotated[bool, BOOLEAN]  # leaves widened to 16 bits: 8 missed the budget
    # bin index dtype -> number of features binned with it
    bin_dtypes: Annotated[Mapping[str, int], mapping(COUNT, key=_bin_dtype)]
    # worst-case margin error from leaf rounding (sum of scale/2)
    margin_error_bound: Annotated[float, NON_NEGATIVE]

    def __post_init__(self) -> None:
        object.__setattr__(self, "bin_dtypes", freeze(self.bin_dtypes))


@dataclass(frozen=True, kw_only=True, slots=True)
class Measured(Document):
    """One candidate the build emitted, with what it measured (null: not measured)."""

    precision: Annotated[str, choice(CANDIDATE_PRECISIONS)]
    model_bytes: Annotated[int, count(minimum=1)]
    passed: Annotated[bool, BOOLEAN]  # met the error budget
    us_per_row: Annotated[float | None, optional(NON_NEGATIVE)]  # median one-row latency
    model_rss_bytes: Annotated[int | None, optional(COUNT)]  # resident bytes loading it added


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildChoice(Document):
    """Why this precision: what was asked, for which use, and the candidates measured."""

    requested: Annotated[str, choice(REQUESTED_PRECISIONS)]
    optimize: Annotated[str, choice(OPTIMIZE_FOR)]
    reason: Annotated[str, TEXT]
    candidates: Annotated[
        tuple[Measured, ...],
        array(nested(Measured), nonempty=True, unique=(lambda c: c.precision, "precision")),
    ]


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget(Document):
    max_error: Annotated[float, NON_NEGATIVE]
    # None: the task has no labels (regression, ranking)
    min_label_agreement: Annotated[float | None, optional(FRACTION)]


@dataclass(frozen=True, kw_only=True, slots=True)
class Parity(Document):
    reference: Annotated[str, TEXT]
    rows: Annotated[int, COUNT]
    data_rows: Annotated[int, COUNT]
    synthesized_rows: Annotated[int, COUNT]
    max_abs_error: Annotated[float, NON_NEGATIVE]
    error_scale: Annotated[float, POSITIVE]
    max_error: Annotated[float, NON_NEGATIVE]
    label_agreement: Annotated[float | None, optional(FRACTION)]
    budget: Annotated[Budget, nested(Budget)]
    passed: Annotated[bool, BOOLEAN]

    def check(self) -> None:
        if self.rows != self.data_rows + self.synthesized_rows:
            raise ManifestError(
                f"{self.rows} is not data_rows + synthesized_rows "
                f"({self.data_rows} + {self.synthesized_rows})",
                context="rows",
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class Requirements(Document):
    # minimum onnxruntime version, plain X.Y.Z
    onnxruntime: Annotated[str, Rule(_read_plain_version)]
    # domain ("" = default ONNX domain) -> minimum opset version
    opsets: Annotated[Mapping[str, int], Rule(_read_opsets, dict)]

    def __post_init__(self) -> None:
        object.__setattr__(self, "opsets", freeze(self.opsets))


@dataclass(frozen=True, kw_only=True, slots=True)
class FileEntry(Document):
    sha256: Annotated[str, SHA256]
    size: Annotated[int, COUNT]


def _read_files(value: object, path: str) -> Mapping[str, FileEntry]:
    files = mapping(nested(FileEntry), key=_member_name).read(value, path)
    for name in REQUIRED_FILES:
        if name not in files:
            raise ManifestError(f"must list {name!r}", context=path)
    return files


_FILES: Rule[Mapping[str, FileEntry]] = Rule(
    _read_files, lambda files: {name: dump(entry) for name, entry in files.items()}
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest(Document):
    format: Annotated[str, constant(FORMAT, "manifest")]
    name: Annotated[
        str, matching(re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"), "a valid model name")
    ]
    version: Annotated[Version, VERSION]
    created: Annotated[str, TIMESTAMP]  # RFC 3339 UTC, whole seconds: "2025-01-31T12:00:00Z"
    source: Annotated[Source, nested(Source)]
    task: Annotated[str, choice(TASKS)]
    inputs: Annotated[InputSchema, nested(InputSchema)]
    outputs: Annotated[
        tuple[OutputSpec, ...],
        array(nested(OutputSpec), nonempty=True, unique=(lambda o: o.name, "output name")),
    ]
    precision: Annotated[str, choice(PRECISIONS)]
    # None exactly when precision == "float"
    quantization: Annotated[Quantization | None, optional(nested(Quantization))]
    parity: Annotated[Parity, nested(Parity)]
    requirements: Annotated[Requirements, nested(Requirements)]
    # payload member name -> expected size and sha256
    files: Annotated[Mapping[str, FileEntry], _FILES]
    # added later: manifests written before it have no such key
    build: Annotated[BuildChoice | None, extension(nested(BuildChoice))] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", freeze(self.files))

    def check(self) -> None:
        """Rules that tie one section to another."""
        num_features = self.source.num_features
        if len(self.inputs.features) != num_features:
            raise ManifestError(
                f"lists {len(self.inputs.features)} features, source.num_features is "
                f"{num_features}",
                context="inputs.features",
            )
        if self.task != "multiclass" and self.source.num_class != 1:
            raise ManifestError(
                f"must be 1 for task {self.task!r}, got {self.source.num_class}",
                context="source.num_class",
            )
        if (self.quantization is None) != (self.precision == "float"):
            raise ManifestError(
                f"must be null exactly when precision is 'float' (precision is {self.precision!r})",
                context="quantization",
            )
        binned = 0 if self.quantization is None else sum(self.quantization.bin_dtypes.values())
        if binned > num_features:
            raise ManifestError(
                f"bins {binned} features, the model has {num_features}",
                context="quantization.bin_dtypes",
            )

    def to_bytes(self) -> bytes:
        """Canonical, byte-stable ``manifest.json``; refuses to write an invalid manifest."""
        data = self.to_dict()
        Manifest.from_dict(data)
        return dumps_canonical(data)


def parse_manifest(data: bytes) -> Manifest:
    """Strictly parse and validate ``manifest.json`` bytes (call only after verifying them)."""
    return Manifest.from_dict(loads_strict(data, "manifest.json"))
