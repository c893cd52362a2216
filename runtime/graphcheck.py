"""What onnxruntime may be given: a static check of ``model.onnx`` before any session exists.

A valid signature says who built a bundle, not that its graph is harmless: a compromised
build machine can sign anything. onnxruntime runs whatever a graph says: custom-domain and
contrib ops, ``Loop`` with a 10^9 trip count (the installer hangs holding the store lock),
``Expand``/``Tile``/``ConstantOfShape`` or a plain broadcasting ``Add`` that allocate and fill
4 GB, initializers that read files through ``external_data``, a million-node graph (22 s and
2.6 GB to load), a tree ensemble of 350,000 trees (56 s). So the model is read here first
(``runtime.protowire``: no onnx package on a device) and refused unless it stays inside what
edgebundle's own emitters write:

- only the protobuf fields those emitters write (no subgraphs, functions, sparse or external
  data), and only the (domain, op) pairs in ``OPS`` — exactly what the builder's emitters
  (``builder/convert/emit_float.py``, ``emit_int8.py``, ``link.py``) produce, at opsets whose
  shape rules match;
- every tensor's shape worked out from the input ``[N, F]`` and the initializers, with each
  dimension a linear function of the batch size N. A tensor with two N-sized dimensions, or an
  ``Expand`` to a shape not known before scoring, is refused outright; the rest must fit the
  byte and multiply-add budgets at the scorer's largest batch. The byte budget counts every
  tensor of the graph at once, and what onnxruntime builds for a tree ensemble, so it holds
  whatever order onnxruntime runs nodes in; the real peak of our graphs is far lower, since
  onnxruntime frees as it goes.

The shapes are exact, not estimates: where a rule cannot tell a size it refuses. What passes
is bounded by the budgets up to onnxruntime's own overheads, which are measured, not derived
(see ``_Budget`` and ``_tree_ensemble_held``). onnxruntime still validates everything itself
(types, attribute values, indices); this only keeps it from being asked for the unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from edgebundle.runtime import protowire
from edgebundle.runtime.errors import FormatError
from edgebundle.runtime.protowire import Field, Fields, Kind

_WHAT = "model.onnx"
INPUT_NAME = "input"

# int8 graphs take ~7 nodes a tree level (a node-array graph of depth 700 fits), and
# onnxruntime ~2.5 KB of memory a node.
MAX_NODES = 5_000
MAX_INITIALIZERS = 1_000  # int8 graphs store 2 per level plus ~20
MAX_FIELDS = 100_000  # ~12 a node; bounds the parse itself to ~0.2 s
# Summed over every tensor at once at the scorer's largest batch (see _Budget): 1000 trees of
# depth 8 count 116 MB as int8 (onnxruntime's peak for it: ~30 MB) and 90 MB as float (peak
# ~65 MB), so this admits models about 4x those, and no graph that could take more than half
# a gigabyte.
MAX_GRAPH_BYTES = 512 << 20
# Only Gemm does more work than it writes elements: ~1 s of one slow core. The int8 Gemm sums
# [N, trees] leaves per class: 1000 trees x 10 classes at 512 rows is 5.1M.
MAX_MULTIPLY_ADDS = 1 << 30
# A float model's trees, all in one op: 10 classes x 1000 rounds. See _tree_ensemble_held.
MAX_TREES = 10_000

_OPSETS = {"": range(15, 23), "ai.onnx.ml": range(5, 6)}  # the ops' shape rules hold here
_ML = "ai.onnx.ml"
_INT64 = 7
_FLOAT32 = 1
_BOOL = 9
# onnx TensorProto.DataType: (name, bytes per element) of the element types edgebundle writes
_DTYPES = {
    _FLOAT32: ("float32", 4),
    2: ("uint8", 1),
    3: ("int8", 1),
    4: ("uint16", 2),
    5: ("int16", 2),
    6: ("int32", 4),
    _INT64: ("int64", 8),
    _BOOL: ("bool", 1),
}
_EXTERNAL = 1  # TensorProto.DataLocation
_MAX_TRACKED = 64  # int64 constants up to this length are read: shapes, axes, slice bounds
_TREE_ENTRY_BYTES = 512  # see _tree_ensemble_held

# The subset of onnx.proto (onnx/onnx.proto) that edgebundle's emitters write. Anything else
# is refused by the reader. "Unread" fields are ones this check needs nothing from: free text,
# and the number lists of a tree ensemble's attributes (onnxruntime validates those).
_STRING_PAIR = {1: Field("key", Kind.STRING), 2: Field("value", Kind.STRING)}
_SCHEMA: protowire.Schema = {
    "ModelProto": {
        1: Field("ir_version", Kind.UNREAD),
        2: Field("producer_name", Kind.UNREAD),
        3: Field("producer_version", Kind.UNREAD),
        4: Field("domain", Kind.UNREAD),
        5: Field("model_version", Kind.UNREAD),
        6: Field("doc_string", Kind.UNREAD),
        7: Field("graph", Kind.MESSAGE, message="GraphProto"),
        8: Field("opset_import", Kind.MESSAGE, repeated=True, message="OperatorSetIdProto"),
        14: Field("metadata_props", Kind.UNREAD, repeated=True),
    },
    "OperatorSetIdProto": {1: Field("domain", Kind.STRING), 2: Field("version", Kind.INT)},
    "GraphProto": {
        1: Field("node", Kind.MESSAGE, repeated=True, message="NodeProto"),
        2: Field("name", Kind.UNREAD),
        5: Field("initializer", Kind.MESSAGE, repeated=True, message="TensorProto"),
        10: Field("doc_string", Kind.UNREAD),
        11: Field("input", Kind.MESSAGE, repeated=True, message="ValueInfoProto"),
        12: Field("output", Kind.MESSAGE, repeated=True, message="ValueInfoProto"),
    },
    "NodeProto": {
        1: Field("input", Kind.STRING, repeated=True),
        2: Field("output", Kind.STRING, repeated=True),
        3: Field("name", Kind.STRING),
        4: Field("op_type", Kind.STRING),
        5: Field("attribute", Kind.MESSAGE, repeated=True, message="AttributeProto"),
        6: Field("doc_string", Kind.UNREAD),
        7: Field("domain", Kind.STRING),
    },
    "AttributeProto": {
        1: Field("name", Kind.STRING),
        2: Field("f", Kind.UNREAD),
        3: Field("i", Kind.INT),
        4: Field("s", Kind.UNREAD),
        5: Field("t", Kind.MESSAGE, message="TensorProto"),
        # Read only to be refused by name: a graph-valued attribute is a subgraph.
        6: Field("g", Kind.BYTES),
        7: Field("floats", Kind.UNREAD, repeated=True),
        8: Field("ints", Kind.COUNT),  # a tree ensemble's sizes are how long its lists are
        9: Field("strings", Kind.UNREAD, repeated=True),
        11: Field("graphs", Kind.BYTES, repeated=True),
        13: Field("doc_string", Kind.UNREAD),
        20: Field("type", Kind.UNREAD),
    },
    "TensorProto": {
        1: Field("dims", Kind.INTS),
        2: Field("data_type", Kind.INT),
        8: Field("name", Kind.STRING),
        9: Field("raw_data", Kind.BYTES),
        12: Field("doc_string", Kind.UNREAD),
        # Read only to be refused by name, with the file it points at.
        13: Field("external_data", Kind.MESSAGE, repeated=True, message="StringStringEntryProto"),
        14: Field("data_location", Kind.INT),
    },
    "StringStringEntryProto": _STRING_PAIR,
    "ValueInfoProto": {
        1: Field("name", Kind.STRING),
        2: Field("type", Kind.MESSAGE, message="TypeProto"),
        3: Field("doc_string", Kind.UNREAD),
    },
    "TypeProto": {
        1: Field("tensor_type", Kind.MESSAGE, message="TypeProto.Tensor"),
        6: Field("denotation", Kind.UNREAD),
    },
    "TypeProto.Tensor": {
        1: Field("elem_type", Kind.INT),
        2: Field("shape", Kind.MESSAGE, message="TensorShapeProto"),
    },
    "TensorShapeProto": {
        1: Field("dim", Kind.MESSAGE, repeated=True, message="TensorShapeProto.Dimension"),
    },
    "TensorShapeProto.Dimension": {
        1: Field("dim_value", Kind.INT),
        2: Field("dim_param", Kind.STRING),
        3: Field("denotation", Kind.UNREAD),
    },
}


class Dim(NamedTuple):
    """A dimension (or a tracked integer) as ``per_row * N + fixed``, N the batch size."""

    per_row: int
    fixed: int

    def __str__(self) -> str:
        if not self.per_row:
            return str(self.fixed)
        rows = "N" if self.per_row == 1 else f"{self.per_row}N"
        return f"{rows}+{self.fixed}" if self.fixed else rows


_ROWS = Dim(1, 0)
_ONE = Dim(0, 1)
_NONE = Dim(0, 0)
Shape = tuple[Dim, ...]


def _fixed(size: int) -> Dim:
    return Dim(0, size)


@dataclass(frozen=True, slots=True)
class _Tensor:
    shape: Shape
    dtype: int
    value: tuple[Dim, ...] | None = None  # the contents, for the small integer tensors shapes,
    # axes and slice bounds are made of; None when not known before scoring


@dataclass(frozen=True, slots=True)
class _Node:
    label: str  # for messages: its name, or its position when it has none
    op_type: str
    inputs: tuple[_Tensor, ...]
    attributes: Mapping[str, Fields]

    def fail(self, problem: str) -> FormatError:
        return FormatError(f"{_WHAT}: node {self.label} ({self.op_type}) {problem}")

    def attr(self, name: str, default: int | None = None) -> int:
        attribute = self.attributes.get(name)
        if attribute is not None and attribute.has("i"):
            return attribute.get_int("i")
        if default is None:
            raise self.fail(f"has no integer attribute {name!r}")
        return default

    def axis(self, name: str, rank: int, default: int | None = None) -> int:
        axis = self.attr(name, default)
        if not -rank <= axis < rank:
            raise self.fail(f"has {name} {axis} for a rank-{rank} tensor")
        return axis % rank

    def constants(self, index: int, what: str) -> list[int]:
        value = self.inputs[index].value
        if value is None or any(entry.per_row for entry in value):
            raise self.fail(f"takes its {what} from a tensor not known before scoring")
        return [entry.fixed for entry in value]


def check_model(model: bytes, num_features: int, rows: int) -> None:
    """Refuse (``FormatError``, one line naming what) a model edgebundle would not have built,
    or one whose tensors may outgrow the budgets when scoring ``rows`` rows at once."""
    parsed = protowire.parse(model, _SCHEMA, "ModelProto", _WHAT, MAX_FIELDS)
    graph = parsed.get_message("graph")
    nodes = graph.get_messages("node")
    initializers = graph.get_messages("initializer")
    if len(nodes) > MAX_NODES:
        raise FormatError(f"{_WHAT}: {len(nodes)} nodes, over the cap of {MAX_NODES}")
    if len(initializers) > MAX_INITIALIZERS:
        raise FormatError(
            f"{_WHAT}: {len(initializers)} initializers, over the cap of {MAX_INITIALIZERS}"
        )
    # What runs is the first question: a foreign op is named as such, whatever else is wrong.
    ops = [_op(fields) for fields in nodes]
    _check_opsets(parsed.get_messages("opset_import"))
    values = {INPUT_NAME: _input(graph.get_messages("input"), num_features)}
    budget = _Budget(rows)
    budget.add(f"input {INPUT_NAME!r}", values[INPUT_NAME])
    for fields in initializers:
        name = fields.get_str("name")
        if name in values:
            raise FormatError(f"{_WHAT}: initializer {name!r} is defined twice")
        values[name] = _initializer(fields, f"initializer {name!r}")
        budget.add(f"initializer {name!r}", values[name])
    for index, (fields, op) in enumerate(zip(nodes, ops, strict=True)):
        name, tensor = _apply(op, fields, index, values, budget)
        values[name] = tensor


def _op(node: Fields) -> _Op:
    op_type, domain = node.get_str("op_type"), node.get_str("domain")
    op = OPS.get((domain, op_type))
    if op is None:
        raise FormatError(
            f"{_WHAT}: op {op_type!r} (domain {domain!r}) is not one edgebundle emits"
        )
    return op


def _check_opsets(imports: Sequence[Fields]) -> None:
    seen = set()
    for opset in imports:
        domain, version = opset.get_str("domain"), opset.get_int("version")
        allowed = _OPSETS.get(domain)
        if allowed is None or version not in allowed or domain in seen:
            raise FormatError(
                f"{_WHAT}: imports opset {domain!r} version {version}; edgebundle writes "
                + ", ".join(f"{d!r} {_versions(v)}" for d, v in _OPSETS.items())
            )
        seen.add(domain)


def _versions(allowed: range) -> str:
    last = allowed.stop - 1
    return str(last) if allowed.start == last else f"{allowed.start}-{last}"


def _input(inputs: Sequence[Fields], num_features: int) -> _Tensor:
    """The input as the scorer feeds it, [N, F], except where the graph declares a fixed size:
    onnxruntime may fold that into constants at load (scoring then fails on the mismatch,
    which the scorer reports, but only after the load)."""
    names = [value.get_str("name") for value in inputs]
    if names != [INPUT_NAME]:
        listed = ", ".join(repr(name) for name in names) or "none"
        raise FormatError(
            f"{_WHAT}: model must have exactly one input {INPUT_NAME!r}, has {listed}"
        )
    tensor_type = inputs[0].get_message("type").get_message("tensor_type")
    if not tensor_type.has("shape"):
        return _Tensor((_ROWS, _fixed(num_features)), _FLOAT32)
    declared = tensor_type.get_message("shape").get_messages("dim")
    if len(declared) != 2:
        raise FormatError(f"{_WHAT}: input {INPUT_NAME!r} has {len(declared)} dimensions, not 2")
    if any(dim.get_int("dim_value") < 0 for dim in declared):
        raise FormatError(f"{_WHAT}: input {INPUT_NAME!r} has a negative dimension")
    shape = tuple(
        _fixed(dim.get_int("dim_value")) if dim.has("dim_value") else fed
        for dim, fed in zip(declared, (_ROWS, _fixed(num_features)), strict=True)
    )
    return _Tensor(shape, _FLOAT32)


def _apply(
    op: _Op, fields: Fields, index: int, values: Mapping[str, _Tensor], budget: _Budget
) -> tuple[str, _Tensor]:
    """The name and shape of the one tensor a node makes, by its op's rule."""
    op_type = fields.get_str("op_type")
    label = repr(fields.get_str("name")) if fields.get_str("name") else f"#{index}"
    where = f"node {label} ({op_type})"
    attributes: dict[str, Fields] = {}
    for attribute in fields.get_messages("attribute"):
        name = attribute.get_str("name")
        if name in attributes:
            raise FormatError(f"{_WHAT}: {where} has two attributes named {name!r}")
        if attribute.has("g") or attribute.has("graphs"):
            raise FormatError(
                f"{_WHAT}: {where} holds a subgraph in attribute {name!r}; edgebundle emits none"
            )
        if attribute.has("t"):
            _tensor_data(attribute.get_message("t"), f"{where} attribute {name!r}")
        attributes[name] = attribute
    inputs, outputs = fields.get_strs("input"), fields.get_strs("output")
    if not op.min_inputs <= len(inputs) <= op.max_inputs or len(outputs) != 1:
        raise FormatError(f"{_WHAT}: {where} has {len(inputs)} inputs and {len(outputs)} outputs")
    for name in inputs:
        if name not in values:
            raise FormatError(f"{_WHAT}: {where} reads {name!r} before anything makes it")
    if outputs[0] in values:
        raise FormatError(f"{_WHAT}: {where} makes {outputs[0]!r}, which already exists")
    node = _Node(label, op_type, tuple(values[name] for name in inputs), attributes)
    tensor = op.rule(node)
    budget.add(where, tensor, op.multiply_adds(node))
    if op.held is not None:
        budget.hold(where, *op.held(node))
    return outputs[0], tensor


def _initializer(fields: Fields, what: str) -> _Tensor:
    dtype = fields.get_int("data_type")
    data = _tensor_data(fields, what)
    shape = tuple(_fixed(size) for size in fields.get_ints("dims"))
    if any(dim.fixed < 0 for dim in shape):
        raise FormatError(f"{_WHAT}: {what} has a negative dimension")
    count = math.prod(dim.fixed for dim in shape)
    if len(data) != count * _DTYPES[dtype][1]:
        raise FormatError(
            f"{_WHAT}: {what} holds {len(data)} bytes for {count} {_DTYPES[dtype][0]} values"
        )
    value = None
    if dtype == _INT64 and len(shape) <= 1 and count <= _MAX_TRACKED:
        value = tuple(_fixed(int(v)) for v in np.frombuffer(data, dtype="<i8"))
    return _Tensor(shape, dtype, value)


def _tensor_data(fields: Fields, what: str) -> memoryview:
    """A tensor's bytes, stored in the model as edgebundle stores them: raw, little-endian."""
    entries = {
        entry.get_str("key"): entry.get_str("value")
        for entry in fields.get_messages("external_data")
    }
    if fields.get_int("data_location") == _EXTERNAL or entries:
        raise FormatError(
            f"{_WHAT}: {what} keeps its data in an external file "
            f"({entries.get('location', '?')!r}); edgebundle never writes external data"
        )
    if fields.get_int("data_type") not in _DTYPES:
        raise FormatError(
            f"{_WHAT}: {what} has element type {fields.get_int('data_type')}, not one "
            "edgebundle writes"
        )
    return fields.get_bytes("raw_data")


class _Budget:
    """Sums every tensor's bytes and Gemm's multiply-adds at ``rows`` rows, refusing the
    first that takes either total over its cap. A tensor whose size does not grow with the
    rows counts twice: onnxruntime may compute it at load (constant folding), and then holds
    it twice while it turns the value into an initializer (measured: a 128 MiB Expand
    raised the peak by 265 MB)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.graph_bytes = 0
        self.multiply_adds = 0

    def add(self, what: str, tensor: _Tensor, work: Dim = _NONE) -> None:
        growth = _elements(tensor.shape, what)
        elements = _at(growth, self.rows)
        multiply_adds = _at(work, self.rows)
        self.graph_bytes += elements * _DTYPES[tensor.dtype][1] * (1 if growth.per_row else 2)
        self.multiply_adds += multiply_adds
        if self.graph_bytes > MAX_GRAPH_BYTES:
            name, size = _DTYPES[tensor.dtype]
            raise FormatError(
                f"{_WHAT}: {what}: a {name} {_shape_text(tensor.shape)} tensor "
                f"({elements * size:,} bytes at {self.rows} rows) takes the graph over its "
                f"{MAX_GRAPH_BYTES:,}-byte budget"
            )
        if self.multiply_adds > MAX_MULTIPLY_ADDS:
            raise FormatError(
                f"{_WHAT}: {what}: {multiply_adds:,} multiply-adds at {self.rows} rows take the "
                f"graph over its budget of {MAX_MULTIPLY_ADDS:,}"
            )

    def hold(self, what: str, size: int, held: str) -> None:
        """Memory an op keeps for itself whatever the rows: ``held`` says what for."""
        self.graph_bytes += size
        if self.graph_bytes > MAX_GRAPH_BYTES:
            raise FormatError(
                f"{_WHAT}: {what}: {held} ({size:,} bytes) take the graph over its "
                f"{MAX_GRAPH_BYTES:,}-byte budget"
            )


def _elements(shape: Shape, what: str) -> Dim:
    """The element count, which must be linear in N: at most one dimension may grow with it."""
    growing = [dim for dim in shape if dim.per_row]
    fixed = math.prod(dim.fixed for dim in shape if not dim.per_row)
    if len(growing) > 1:
        raise FormatError(
            f"{_WHAT}: {what}: a {_shape_text(shape)} tensor grows faster than the number of rows"
        )
    if not growing:
        return _fixed(fixed)
    return Dim(growing[0].per_row * fixed, growing[0].fixed * fixed)


def _at(dim: Dim, rows: int) -> int:
    return dim.per_row * rows + dim.fixed


def _shape_text(shape: Shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


# --- shape rules: each op's one output from its inputs, exactly, or a refusal ----------------


def _broadcast(node: _Node, *shapes: Shape) -> Shape:
    """numpy's broadcasting. A fixed size against an N-sized dimension is that fixed size:
    onnxruntime refuses to run the node unless N is 1 or equals it."""
    rank = max(len(shape) for shape in shapes)
    padded = [(_ONE,) * (rank - len(shape)) + shape for shape in shapes]
    result = []
    for dims in zip(*padded, strict=True):
        sized = set(dims) - {_ONE}
        fixed = {dim for dim in sized if not dim.per_row}
        if len(sized) > 1 and len(fixed) != 1:
            listed = ", ".join(_shape_text(shape) for shape in shapes)
            raise node.fail(f"broadcasts {listed}, which do not fit together")
        result.append(fixed.pop() if fixed else sized.pop() if sized else _ONE)
    return tuple(result)


def _elementwise(node: _Node) -> _Tensor:
    """Add, Mul: numpy broadcasting, the first input's type."""
    first, second = node.inputs
    return _Tensor(_broadcast(node, first.shape, second.shape), first.dtype)


def _comparison(node: _Node) -> _Tensor:
    first, second = node.inputs
    return _Tensor(_broadcast(node, first.shape, second.shape), _BOOL)


def _where(node: _Node) -> _Tensor:
    condition, chosen, other = node.inputs
    return _Tensor(_broadcast(node, condition.shape, chosen.shape, other.shape), chosen.dtype)


def _unary(node: _Node) -> _Tensor:
    """Identity, Sigmoid, Exp, Softmax: same shape and type."""
    return _Tensor(node.inputs[0].shape, node.inputs[0].dtype)


def _is_nan(node: _Node) -> _Tensor:
    return _Tensor(node.inputs[0].shape, _BOOL)


def _cast(node: _Node) -> _Tensor:
    to = node.attr("to")
    if to not in _DTYPES:
        raise node.fail(f"casts to element type {to}, not one edgebundle writes")
    return _Tensor(node.inputs[0].shape, to)


def _shape(node: _Node) -> _Tensor:
    dims = node.inputs[0].shape
    # ONNX clamps start and end like a Python slice does.
    kept = dims[node.attr("start", 0) : node.attr("end", len(dims))]
    return _Tensor((_fixed(len(kept)),), _INT64, kept)


def _concat(node: _Node) -> _Tensor:
    first = node.inputs[0]
    axis = node.axis("axis", len(first.shape))
    for tensor in node.inputs:
        others = [d for i, d in enumerate(tensor.shape) if i != axis]
        if len(tensor.shape) != len(first.shape) or others != [
            d for i, d in enumerate(first.shape) if i != axis
        ]:
            raise node.fail("joins tensors whose other dimensions differ")
    joined_dims = [tensor.shape[axis] for tensor in node.inputs]
    size = Dim(sum(d.per_row for d in joined_dims), sum(d.fixed for d in joined_dims))
    shape = (*first.shape[:axis], size, *first.shape[axis + 1 :])
    values = [tensor.value for tensor in node.inputs]
    joined = None
    if len(shape) == 1 and all(value is not None for value in values):
        joined = tuple(dim for value in values if value is not None for dim in value)
    return _Tensor(shape, first.dtype, joined)


def _expand(node: _Node) -> _Tensor:
    """Broadcast to a shape that must be known before scoring: the one op that sizes its
    output by a tensor's contents rather than by its inputs' shapes."""
    data, target = node.inputs
    if target.value is None or any(dim.per_row < 0 or dim.fixed < 0 for dim in target.value):
        raise node.fail("expands to a shape not known before scoring")
    return _Tensor(_broadcast(node, data.shape, target.value), data.dtype)


def _gather(node: _Node) -> _Tensor:
    data, indices = node.inputs
    axis = node.axis("axis", len(data.shape), 0)
    return _Tensor((*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]), data.dtype)


def _gather_elements(node: _Node) -> _Tensor:
    data, indices = node.inputs
    if len(data.shape) != len(indices.shape):
        raise node.fail("has data and indices of different ranks")
    return _Tensor(indices.shape, data.dtype)


def _slice(node: _Node) -> _Tensor:
    data = node.inputs[0]
    rank = len(data.shape)
    starts = node.constants(1, "starts")
    ends = node.constants(2, "ends")
    axes = node.constants(3, "axes") if len(node.inputs) > 3 else list(range(len(starts)))
    steps = node.constants(4, "steps") if len(node.inputs) > 4 else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise node.fail("has slice bounds that do not fit together")
    shape = list(data.shape)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if not -rank <= axis < rank:
            raise node.fail(f"slices axis {axis} of a rank-{rank} tensor")
        dim = shape[axis % rank]
        if dim.per_row:
            raise node.fail("slices the batch dimension")
        # ONNX clamps starts and ends exactly as Python's slice.indices does.
        shape[axis % rank] = _fixed(len(range(*slice(start, end, step).indices(dim.fixed))))
    return _Tensor(tuple(shape), data.dtype)


def _squeeze(node: _Node) -> _Tensor:
    data = node.inputs[0]
    rank = len(data.shape)
    axes = {axis % rank for axis in node.constants(1, "axes") if -rank <= axis < rank}
    if len(axes) != len(node.constants(1, "axes")) or any(data.shape[a] != _ONE for a in axes):
        raise node.fail(f"squeezes axes that are not size-1 axes of {_shape_text(data.shape)}")
    return _Tensor(tuple(d for i, d in enumerate(data.shape) if i not in axes), data.dtype)


def _arg_max(node: _Node) -> _Tensor:
    data = node.inputs[0]
    axis = node.axis("axis", len(data.shape), 0)
    kept = [_ONE] if node.attr("keepdims", 1) else []
    return _Tensor((*data.shape[:axis], *kept, *data.shape[axis + 1 :]), _INT64)


def _gemm_dims(node: _Node) -> tuple[Dim, Dim, Dim]:
    """M, K and N of ``A' · B'`` (A' = A or its transpose, per transA; B' likewise)."""
    a, b = node.inputs[0].shape, node.inputs[1].shape
    if len(a) != 2 or len(b) != 2:
        raise node.fail("multiplies tensors that are not matrices")
    m, k = a[::-1] if node.attr("transA", 0) else a
    k_b, n = b[::-1] if node.attr("transB", 0) else b
    if k != k_b:
        raise node.fail(f"multiplies {_shape_text(a)} by {_shape_text(b)}")
    return m, k, n


def _gemm(node: _Node) -> _Tensor:
    m, _, n = _gemm_dims(node)
    return _Tensor((m, n), node.inputs[0].dtype)


def _gemm_work(node: _Node) -> Dim:
    return _elements(_gemm_dims(node), f"node {node.label} (Gemm)")


def _tree_ensemble(node: _Node) -> _Tensor:
    data = node.inputs[0]
    targets = node.attr("n_targets")
    if len(data.shape) != 2 or targets < 1:
        raise node.fail(f"has {targets} targets for a {_shape_text(data.shape)} input")
    return _Tensor((data.shape[0], _fixed(targets)), data.dtype)


def _tree_ensemble_held(node: _Node) -> tuple[int, str]:
    """onnxruntime turns the attribute lists into tree structures of its own: at the load
    peak ~330 bytes per node and leaf (1000 trees, 176,114 of them: +58 MB), counted as 512.
    Building them takes time that grows with trees x nodes: 100,000 one-node trees took 4 s
    and 350,000 took 56 s; within the caps the worst measured is 1.8 s (10,000 trees of 48
    nodes), against 0.08 s for 1000 trees of depth 8. onnxruntime refuses node and leaf lists
    of unequal lengths, so one of each counts them."""
    trees = _list_length(node, "tree_roots")
    if trees > MAX_TREES:
        raise node.fail(f"has {trees:,} trees, over the cap of {MAX_TREES:,}")
    entries = _list_length(node, "nodes_featureids") + _list_length(node, "leaf_targetids")
    return entries * _TREE_ENTRY_BYTES, f"{entries:,} tree nodes and leaves"


def _list_length(node: _Node, name: str) -> int:
    attribute = node.attributes.get(name)
    return 0 if attribute is None else attribute.get_int("ints")


def _no_work(node: _Node) -> Dim:
    return _NONE


@dataclass(frozen=True, slots=True)
class _Op:
    rule: Callable[[_Node], _Tensor]
    min_inputs: int
    max_inputs: int
    multiply_adds: Callable[[_Node], Dim] = _no_work  # beyond one per element written
    held: Callable[[_Node], tuple[int, str]] | None = None  # the kernel's own memory, and why


# Every (domain, op) that builder/convert/emit_float.py, emit_int8.py and link.py write, with
# its shape rule; tests/test_hostile_graph.py checks this is exactly their union.
OPS: Mapping[tuple[str, str], _Op] = {
    (_ML, "TreeEnsemble"): _Op(_tree_ensemble, 1, 1, held=_tree_ensemble_held),  # float
    ("", "Add"): _Op(_elementwise, 2, 2),
    ("", "Mul"): _Op(_elementwise, 2, 2),
    ("", "Equal"): _Op(_comparison, 2, 2),
    ("", "Greater"): _Op(_comparison, 2, 2),
    ("", "GreaterOrEqual"): _Op(_comparison, 2, 2),
    ("", "Where"): _Op(_where, 3, 3),
    ("", "IsNaN"): _Op(_is_nan, 1, 1),
    ("", "Cast"): _Op(_cast, 1, 1),
    ("", "Identity"): _Op(_unary, 1, 1),
    ("", "Sigmoid"): _Op(_unary, 1, 1),
    ("", "Exp"): _Op(_unary, 1, 1),
    ("", "Softmax"): _Op(_unary, 1, 1),
    ("", "ArgMax"): _Op(_arg_max, 1, 1),
    ("", "Shape"): _Op(_shape, 1, 1),
    ("", "Concat"): _Op(_concat, 1, 2),
    ("", "Expand"): _Op(_expand, 2, 2),
    ("", "Gather"): _Op(_gather, 2, 2),
    ("", "GatherElements"): _Op(_gather_elements, 2, 2),
    ("", "Slice"): _Op(_slice, 3, 5),
    ("", "Squeeze"): _Op(_squeeze, 2, 2),
    ("", "Gemm"): _Op(_gemm, 2, 3, _gemm_work),
}
