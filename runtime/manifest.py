"""The bundle manifest (``manifest.json``): typed, strictly validated, canonically serialised.

Only bytes whose signature already verified reach :func:`parse_manifest` (see ``bundle.py``).
Every ``from_dict`` validates fully and raises ``ManifestError`` with the dotted path of the
offending field; ``to_bytes`` re-validates, so an invalid manifest can be neither read nor
written. A key whose value may be absent is always present and ``null``: absence is a typo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from edgebundle.runtime._json import (
    check_unique,
    dumps_canonical,
    get_bool,
    get_choice,
    get_count,
    get_fraction,
    get_int,
    get_list,
    get_matching,
    get_non_negative,
    get_obj,
    get_objects,
    get_optional,
    get_positive,
    get_sha256,
    get_str,
    get_text,
    get_timestamp,
    join,
    json_type,
    loads_strict,
    quote,
    reject_unknown,
)
from edgebundle.runtime.errors import ManifestError
from edgebundle.runtime.semver import Version

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FORMAT = "edgebundle.manifest/1"

TASKS = ("binary", "multiclass", "regression", "ranking", "survival")
PRECISIONS = ("float", "int8")
FEATURE_TYPES = ("float", "int", "i", "q")
OUTPUT_DTYPES = ("float32", "int64")
LAYOUTS = ("perfect", "node-array")
LEAF_BITS = (8, 16)
BIN_DTYPES = ("uint8", "uint16")
MISSING_CONVENTIONS = ("nan",)
FRAMEWORKS = ("xgboost",)
REQUIRED_FILES = ("model.onnx", "selftest.json")
# The container's own members: a manifest cannot list (and so cannot vouch for) itself.
RESERVED_FILES = ("manifest.json", "manifest.sig")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_OUTPUT_NAME = re.compile(r"[a-z][a-z0-9_]*")
_OPSET_DOMAIN = re.compile(r"(?:[A-Za-z][A-Za-z0-9._-]{0,99})?")

_V = TypeVar("_V")


def _freeze(mapping: Mapping[str, _V]) -> Mapping[str, _V]:
    return MappingProxyType(dict(sorted(mapping.items())))


@dataclass(frozen=True, kw_only=True, slots=True)
class Source:
    framework: str
    framework_version: str
    sha256: str  # of the model file the bundle was built from
    objective: str
    num_class: int
    num_trees: int
    best_iteration: int | None
    num_features: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Source:
        reject_unknown(d, _fields(cls), context)
        return cls(
            framework=get_choice(d, "framework", context, FRAMEWORKS),
            framework_version=get_text(d, "framework_version", context),
            sha256=get_sha256(d, "sha256", context),
            objective=get_text(d, "objective", context),
            num_class=get_count(d, "num_class", context, minimum=1),
            num_trees=get_count(d, "num_trees", context),
            best_iteration=get_optional(d, "best_iteration", context, get_count),
            num_features=get_count(d, "num_features", context, minimum=1),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "framework_version": self.framework_version,
            "sha256": self.sha256,
            "objective": self.objective,
            "num_class": self.num_class,
            "num_trees": self.num_trees,
            "best_iteration": self.best_iteration,
            "num_features": self.num_features,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Feature:
    name: str
    type: str  # XGBoost's feature type; "float" when the model declared none

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Feature:
        reject_unknown(d, _fields(cls), context)
        return cls(
            name=get_text(d, "name", context),
            type=get_choice(d, "type", context, FEATURE_TYPES),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type}


@dataclass(frozen=True, kw_only=True, slots=True)
class InputSchema:
    features: tuple[Feature, ...]  # in the model's column order
    missing: str  # "nan": NaN, JSON null, an absent key and an empty CSV cell all mean missing

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> InputSchema:
        reject_unknown(d, _fields(cls), context)
        features = tuple(
            Feature.from_dict(item, item_context)
            for item, item_context in get_objects(d, "features", context)
        )
        check_unique([f.name for f in features], "feature name", join(context, "features"))
        missing = get_choice(d, "missing", context, MISSING_CONVENTIONS)
        return cls(features=features, missing=missing)

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features], "missing": self.missing}


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # -1 first: the batch dimension

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> OutputSpec:
        reject_unknown(d, _fields(cls), context)
        return cls(
            name=get_matching(d, "name", context, _OUTPUT_NAME, "a lowercase identifier"),
            dtype=get_choice(d, "dtype", context, OUTPUT_DTYPES),
            shape=_shape(d, "shape", context),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _shape(d: Mapping[str, Any], key: str, context: str) -> tuple[int, ...]:
    items = get_list(d, key, context)
    shape_context = join(context, key)
    if not items:
        raise ManifestError("must have at least the batch dimension", context=shape_context)
    return tuple(_dim(item, index, f"{shape_context}[{index}]") for index, item in enumerate(items))


def _dim(value: object, index: int, context: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"expected an integer, got {json_type(value)}", context=context)
    if index == 0 and value != -1:
        raise ManifestError(f"the batch dimension must be -1, got {value}", context=context)
    if index > 0 and value < 1:
        raise ManifestError(f"must be >= 1, got {value}", context=context)
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Quantization:
    scheme: str
    layout: str
    leaf_bits: int
    escalated: bool  # leaves were widened to 16 bits because 8 missed the error budget
    bin_dtypes: Mapping[str, int]  # bin index dtype -> number of features binned with it
    margin_error_bound: float  # worst-case margin error from leaf rounding (sum of scale/2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bin_dtypes", _freeze(self.bin_dtypes))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Quantization:
        reject_unknown(d, _fields(cls), context)
        leaf_bits = get_int(d, "leaf_bits", context)
        if leaf_bits not in LEAF_BITS:
            raise ManifestError(
                f"must be 8 or 16, got {leaf_bits}", context=join(context, "leaf_bits")
            )
        return cls(
            scheme=get_text(d, "scheme", context),
            layout=get_choice(d, "layout", context, LAYOUTS),
            leaf_bits=leaf_bits,
            escalated=get_bool(d, "escalated", context),
            bin_dtypes=_bin_dtypes(d, "bin_dtypes", context),
            margin_error_bound=get_non_negative(d, "margin_error_bound", context),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "layout": self.layout,
            "leaf_bits": self.leaf_bits,
            "escalated": self.escalated,
            "bin_dtypes": dict(self.bin_dtypes),
            "margin_error_bound": self.margin_error_bound,
        }


def _bin_dtypes(d: Mapping[str, Any], key: str, context: str) -> dict[str, int]:
    counts = get_obj(d, key, context)
    counts_context = join(context, key)
    reject_unknown(counts, BIN_DTYPES, counts_context)
    return {dtype: get_count(counts, dtype, counts_context) for dtype in counts}


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget:
    max_error: float
    min_label_agreement: float | None  # None: the task has no labels (regression, ranking)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Budget:
        reject_unknown(d, _fields(cls), context)
        return cls(
            max_error=get_non_negative(d, "max_error", context),
            min_label_agreement=get_optional(d, "min_label_agreement", context, get_fraction),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_error": self.max_error, "min_label_agreement": self.min_label_agreement}


@dataclass(frozen=True, kw_only=True, slots=True)
class Parity:
    reference: str
    rows: int
    data_rows: int
    synthesized_rows: int
    max_abs_error: float
    error_scale: float
    max_error: float
    label_agreement: float | None
    budget: Budget
    passed: bool

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Parity:
        reject_unknown(d, _fields(cls), context)
        parity = cls(
            reference=get_text(d, "reference", context),
            rows=get_count(d, "rows", context),
            data_rows=get_count(d, "data_rows", context),
            synthesized_rows=get_count(d, "synthesized_rows", context),
            max_abs_error=get_non_negative(d, "max_abs_error", context),
            error_scale=get_positive(d, "error_scale", context),
            max_error=get_non_negative(d, "max_error", context),
            label_agreement=get_optional(d, "label_agreement", context, get_fraction),
            budget=Budget.from_dict(get_obj(d, "budget", context), join(context, "budget")),
            passed=get_bool(d, "passed", context),
        )
        if parity.rows != parity.data_rows + parity.synthesized_rows:
            raise ManifestError(
                f"{parity.rows} is not data_rows + synthesized_rows "
                f"({parity.data_rows} + {parity.synthesized_rows})",
                context=join(context, "rows"),
            )
        return parity

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "rows": self.rows,
            "data_rows": self.data_rows,
            "synthesized_rows": self.synthesized_rows,
            "max_abs_error": self.max_abs_error,
            "error_scale": self.error_scale,
            "max_error": self.max_error,
            "label_agreement": self.label_agreement,
            "budget": self.budget.to_dict(),
            "passed": self.passed,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Requirements:
    onnxruntime: str  # minimum onnxruntime version, plain X.Y.Z
    opsets: Mapping[str, int]  # domain ("" = default ONNX domain) -> minimum opset version

    def __post_init__(self) -> None:
        object.__setattr__(self, "opsets", _freeze(self.opsets))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Requirements:
        reject_unknown(d, _fields(cls), context)
        return cls(
            onnxruntime=_plain_version(d, "onnxruntime", context),
            opsets=_opsets(d, "opsets", context),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"onnxruntime": self.onnxruntime, "opsets": dict(self.opsets)}


def _plain_version(d: Mapping[str, Any], key: str, context: str) -> str:
    text = get_str(d, key, context)
    version = Version.parse(text, context=join(context, key))
    if version.prerelease or version.build:
        raise ManifestError(f"{text!r} is not a plain X.Y.Z version", context=join(context, key))
    return text


def _opsets(d: Mapping[str, Any], key: str, context: str) -> dict[str, int]:
    opsets = get_obj(d, key, context)
    opsets_context = join(context, key)
    if not opsets:
        raise ManifestError("must list at least one domain", context=opsets_context)
    for domain in opsets:
        if not _OPSET_DOMAIN.fullmatch(domain):
            raise ManifestError(
                f"{quote(domain)} is not an operator set domain", context=opsets_context
            )
    return {domain: get_count(opsets, domain, opsets_context, minimum=1) for domain in opsets}


@dataclass(frozen=True, kw_only=True, slots=True)
class FileEntry:
    sha256: str
    size: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> FileEntry:
        reject_unknown(d, _fields(cls), context)
        return cls(sha256=get_sha256(d, "sha256", context), size=get_count(d, "size", context))

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


def _files(d: Mapping[str, Any], key: str, context: str) -> dict[str, FileEntry]:
    listing = get_obj(d, key, context)
    files_context = join(context, key)
    for name in listing:
        if not MEMBER_NAME.fullmatch(name):
            raise ManifestError(f"{quote(name)} is not a valid member name", context=files_context)
        if name in RESERVED_FILES:
            raise ManifestError(f"must not list {name!r}, a container member", files_context)
    for name in REQUIRED_FILES:
        if name not in listing:
            raise ManifestError(f"must list {name!r}", context=files_context)
    return {
        name: FileEntry.from_dict(get_obj(listing, name, files_context), join(files_context, name))
        for name in listing
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    format: str
    name: str
    version: Version
    created: str  # RFC 3339 UTC, whole seconds: "2025-01-31T12:00:00Z"
    source: Source
    task: str
    inputs: InputSchema
    outputs: tuple[OutputSpec, ...]
    precision: str
    quantization: Quantization | None  # None exactly when precision == "float"
    parity: Parity
    requirements: Requirements
    files: Mapping[str, FileEntry]  # payload member name -> expected size and sha256

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", _freeze(self.files))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], context: str = "") -> Manifest:
        # The format id gates everything else: another version may define other keys.
        fmt = get_str(d, "format", context)
        if fmt != FORMAT:
            raise ManifestError(
                f"unsupported manifest format {quote(fmt)} (this runtime reads {FORMAT!r})",
                context=join(context, "format"),
            )
        reject_unknown(d, _fields(cls), context)
        manifest = cls(
            format=fmt,
            name=get_matching(d, "name", context, _NAME, "a valid model name"),
            version=Version.parse(get_str(d, "version", context), context=join(context, "version")),
            created=get_timestamp(d, "created", context),
            source=Source.from_dict(get_obj(d, "source", context), join(context, "source")),
            task=get_choice(d, "task", context, TASKS),
            inputs=InputSchema.from_dict(get_obj(d, "inputs", context), join(context, "inputs")),
            outputs=_outputs(d, "outputs", context),
            precision=get_choice(d, "precision", context, PRECISIONS),
            quantization=get_optional(d, "quantization", context, _quantization),
            parity=Parity.from_dict(get_obj(d, "parity", context), join(context, "parity")),
            requirements=Requirements.from_dict(
                get_obj(d, "requirements", context), join(context, "requirements")
            ),
            files=_files(d, "files", context),
        )
        manifest._check_consistency(context)
        return manifest

    def _check_consistency(self, context: str) -> None:
        """Rules that tie one section to another."""
        num_features = self.source.num_features
        if len(self.inputs.features) != num_features:
            raise ManifestError(
                f"lists {len(self.inputs.features)} features, source.num_features is "
                f"{num_features}",
                context=join(context, "inputs.features"),
            )
        if self.task != "multiclass" and self.source.num_class != 1:
            raise ManifestError(
                f"must be 1 for task {self.task!r}, got {self.source.num_class}",
                context=join(context, "source.num_class"),
            )
        if (self.quantization is None) != (self.precision == "float"):
            raise ManifestError(
                f"must be null exactly when precision is 'float' (precision is {self.precision!r})",
                context=join(context, "quantization"),
            )
        binned = 0 if self.quantization is None else sum(self.quantization.bin_dtypes.values())
        if binned > num_features:
            raise ManifestError(
                f"bins {binned} features, the model has {num_features}",
                context=join(context, "quantization.bin_dtypes"),
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "name": self.name,
            "version": str(self.version),
            "created": self.created,
            "source": self.source.to_dict(),
            "task": self.task,
            "inputs": self.inputs.to_dict(),
            "outputs": [output.to_dict() for output in self.outputs],
            "precision": self.precision,
            "quantization": None if self.quantization is None else self.quantization.to_dict(),
            "parity": self.parity.to_dict(),
            "requirements": self.requirements.to_dict(),
            "files": {name: entry.to_dict() for name, entry in self.files.items()},
        }

    def to_bytes(self) -> bytes:
        """Canonical, byte-stable ``manifest.json``; refuses to write an invalid manifest."""
        data = self.to_dict()
        Manifest.from_dict(data)
        return dumps_canonical(data)


def _outputs(d: Mapping[str, Any], key: str, context: str) -> tuple[OutputSpec, ...]:
    outputs = tuple(
        OutputSpec.from_dict(item, item_context)
        for item, item_context in get_objects(d, key, context)
    )
    check_unique([o.name for o in outputs], "output name", join(context, key))
    return outputs


def _quantization(d: Mapping[str, Any], key: str, context: str) -> Quantization:
    return Quantization.from_dict(get_obj(d, key, context), join(context, key))


def _fields(cls: type[DataclassInstance]) -> tuple[str, ...]:
    # The dataclass fields are the JSON keys, so one list serves both.
    return tuple(field.name for field in fields(cls))


def parse_manifest(data: bytes) -> Manifest:
    """Strictly parse and validate ``manifest.json`` bytes (call only after verifying them)."""
    return Manifest.from_dict(loads_strict(data, "manifest.json"))
