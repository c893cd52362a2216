"""What onnxruntime may be given: a static check of ``model.onnx`` before any session exists.

A valid signature says who built a bundle, not that its graph is harmless: a compromised
build machine can sign anything. onnxruntime runs whatever a graph says: custom-domain and
contrib ops, ``Loop`` with a 10^9 trip count (the installer hangs holding the store lock),
``Expand``/``Tile``/``ConstantOfShape`` or a plain broadcasting ``Add`` that allocate and fill
4 GB, initializers that read files through ``external_data``, a million-node graph (22 s and
2.6 GB to load), a tree ensemble of 350,000 trees (56 s). So the model is read here first
(``protowire``: no onnx package on a device) and refused unless it stays inside what
edgebundle's own emitters write:

- only the protobuf fields those emitters write (no subgraphs, functions, sparse or external
  data), and only the (domain, op) pairs in ``OPS`` — exactly what the builder's emitters
  (``builder/convert/emit_float.py``, ``int8/traversal.py``, ``category_tables.py``,
  ``link.py``) produce, at opsets whose shape rules match;
- every tensor's shape worked out from the input ``[N, F]`` and the initializers, with each
  dimension a linear function of the batch size N. A tensor with two N-sized dimensions, or an
  ``Expand`` to a shape not known before scoring, is refused outright; the rest must fit the
  byte and multiply-add budgets at the scorer's largest batch. The byte budget counts every
  tensor of the graph at once, and what onnxruntime builds for a tree ensemble, so it holds
  whatever order onnxruntime runs nodes in; the real peak of our graphs is far lower, since
  onnxruntime frees as it goes.

The shapes are exact, not estimates: where a rule cannot tell a size it refuses. What passes
is bounded by the budgets up to onnxruntime's own overheads, which are measured, not derived
(see ``budget`` and ``ops._tree_ensemble_held``). onnxruntime still validates everything
itself (types, attribute values, indices); this only keeps it from being asked for the
unbounded.

Here the graph is walked node by node; ``protowire`` reads the file by ``schema``, ``ops``
holds each op's rule over the ``shapes`` (dimensions ``a·N + b``), and ``budget`` adds up
what they take.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from edgebundle.runtime.errors import FormatError
from edgebundle.runtime.graphcheck import protowire
from edgebundle.runtime.graphcheck.budget import Budget
from edgebundle.runtime.graphcheck.ops import OPS, OPSETS, Node, Op
from edgebundle.runtime.graphcheck.protowire import Fields
from edgebundle.runtime.graphcheck.schema import DTYPES, EXTERNAL, FLOAT32, INT64, SCHEMA, WHAT
from edgebundle.runtime.graphcheck.shapes import ROWS, Shape, Tensor, fixed

INPUT_NAME = "input"

# int8 graphs take ~7 nodes a tree level (a node-array graph of depth 700 fits), and
# onnxruntime ~2.5 KB of memory a node.
MAX_NODES = 5_000
MAX_INITIALIZERS = 1_000  # int8 graphs store 2 per level plus ~20
MAX_FIELDS = 100_000  # ~12 a node; bounds the parse itself to ~0.2 s
_MAX_TRACKED = 64  # int64 constants up to this length are read: shapes, axes, slice bounds


def check_model(model: bytes, num_features: int, rows: int) -> dict[str, Shape]:
    """Refuse (``FormatError``, one line naming what) a model edgebundle would not have built,
    or one whose tensors may outgrow the budgets when scoring ``rows`` rows at once.

    Returns the exact shape of each graph output the nodes or initializers make, by name."""
    parsed = protowire.parse(model, SCHEMA, "ModelProto", WHAT, MAX_FIELDS)
    graph = parsed.get_message("graph")
    nodes = graph.get_messages("node")
    initializers = graph.get_messages("initializer")
    if len(nodes) > MAX_NODES:
        raise FormatError(f"{WHAT}: {len(nodes)} nodes, over the cap of {MAX_NODES}")
    if len(initializers) > MAX_INITIALIZERS:
        raise FormatError(
            f"{WHAT}: {len(initializers)} initializers, over the cap of {MAX_INITIALIZERS}"
        )
    # What runs is the first question: a foreign op is named as such, whatever else is wrong.
    ops = [_op(fields) for fields in nodes]
    _check_opsets(parsed.get_messages("opset_import"))
    values = {INPUT_NAME: _input(graph.get_messages("input"), num_features)}
    budget = Budget(rows)
    budget.add(f"input {INPUT_NAME!r}", values[INPUT_NAME])
    for fields in initializers:
        name = fields.get_str("name")
        if name in values:
            raise FormatError(f"{WHAT}: initializer {name!r} is defined twice")
        values[name] = _initializer(fields, f"initializer {name!r}")
        budget.add(f"initializer {name!r}", values[name])
    for index, (fields, op) in enumerate(zip(nodes, ops, strict=True)):
        name, tensor = _apply(op, fields, index, values, budget)
        values[name] = tensor
    outputs = (fields.get_str("name") for fields in graph.get_messages("output"))
    return {name: values[name].shape for name in outputs if name in values}


def _op(node: Fields) -> Op:
    op_type, domain = node.get_str("op_type"), node.get_str("domain")
    op = OPS.get((domain, op_type))
    if op is None:
        raise FormatError(f"{WHAT}: op {op_type!r} (domain {domain!r}) is not one edgebundle emits")
    return op


def _check_opsets(imports: Sequence[Fields]) -> None:
    seen = set()
    for opset in imports:
        domain, version = opset.get_str("domain"), opset.get_int("version")
        allowed = OPSETS.get(domain)
        if allowed is None or version not in allowed or domain in seen:
            raise FormatError(
                f"{WHAT}: imports opset {domain!r} version {version}; edgebundle writes "
                + ", ".join(f"{d!r} {_versions(v)}" for d, v in OPSETS.items())
            )
        seen.add(domain)


def _versions(allowed: range) -> str:
    last = allowed.stop - 1
    return str(last) if allowed.start == last else f"{allowed.start}-{last}"


def _input(inputs: Sequence[Fields], num_features: int) -> Tensor:
    """The input as the scorer feeds it, [N, F], except where the graph declares a fixed size:
    onnxruntime may fold that into constants at load (scoring then fails on the mismatch,
    which the scorer reports, but only after the load)."""
    names = [value.get_str("name") for value in inputs]
    if names != [INPUT_NAME]:
        listed = ", ".join(repr(name) for name in names) or "none"
        raise FormatError(f"{WHAT}: model must have exactly one input {INPUT_NAME!r}, has {listed}")
    tensor_type = inputs[0].get_message("type").get_message("tensor_type")
    if not tensor_type.has("shape"):
        return Tensor((ROWS, fixed(num_features)), FLOAT32)
    declared = tensor_type.get_message("shape").get_messages("dim")
    if len(declared) != 2:
        raise FormatError(f"{WHAT}: input {INPUT_NAME!r} has {len(declared)} dimensions, not 2")
    if any(dim.get_int("dim_value") < 0 for dim in declared):
        raise FormatError(f"{WHAT}: input {INPUT_NAME!r} has a negative dimension")
    shape = tuple(
        fixed(dim.get_int("dim_value")) if dim.has("dim_value") else fed
        for dim, fed in zip(declared, (ROWS, fixed(num_features)), strict=True)
    )
    return Tensor(shape, FLOAT32)


def _apply(
    op: Op, fields: Fields, index: int, values: Mapping[str, Tensor], budget: Budget
) -> tuple[str, Tensor]:
    """The name and shape of the one tensor a node makes, by its op's rule."""
    op_type = fields.get_str("op_type")
    label = repr(fields.get_str("name")) if fields.get_str("name") else f"#{index}"
    where = f"node {label} ({op_type})"
    attributes: dict[str, Fields] = {}
    for attribute in fields.get_messages("attribute"):
        name = attribute.get_str("name")
        if name in attributes:
            raise FormatError(f"{WHAT}: {where} has two attributes named {name!r}")
        if attribute.has("g") or attribute.has("graphs"):
            raise FormatError(
                f"{WHAT}: {where} holds a subgraph in attribute {name!r}; edgebundle emits none"
            )
        if attribute.has("t"):
            _tensor_data(attribute.get_message("t"), f"{where} attribute {name!r}")
        attributes[name] = attribute
    inputs, outputs = fields.get_strs("input"), fields.get_strs("output")
    if not op.min_inputs <= len(inputs) <= op.max_inputs or len(outputs) != 1:
        raise FormatError(f"{WHAT}: {where} has {len(inputs)} inputs and {len(outputs)} outputs")
    for name in inputs:
        if name not in values:
            raise FormatError(f"{WHAT}: {where} reads {name!r} before anything makes it")
    if outputs[0] in values:
        raise FormatError(f"{WHAT}: {where} makes {outputs[0]!r}, which already exists")
    node = Node(label, op_type, tuple(values[name] for name in inputs), attributes)
    tensor = op.rule(node)
    budget.add(where, tensor, op.multiply_adds(node))
    if op.held is not None:
        budget.hold(where, *op.held(node))
    return outputs[0], tensor


def _initializer(fields: Fields, what: str) -> Tensor:
    dtype = fields.get_int("data_type")
    data = _tensor_data(fields, what)
    shape = tuple(fixed(size) for size in fields.get_ints("dims"))
    if any(dim.fixed < 0 for dim in shape):
        raise FormatError(f"{WHAT}: {what} has a negative dimension")
    count = math.prod(dim.fixed for dim in shape)
    if len(data) != count * DTYPES[dtype][1]:
        raise FormatError(
            f"{WHAT}: {what} holds {len(data)} bytes for {count} {DTYPES[dtype][0]} values"
        )
    value = None
    if dtype == INT64 and len(shape) <= 1 and count <= _MAX_TRACKED:
        value = tuple(fixed(int(v)) for v in np.frombuffer(data, dtype="<i8"))
    return Tensor(shape, dtype, value)


def _tensor_data(fields: Fields, what: str) -> memoryview:
    """A tensor's bytes, stored in the model as edgebundle stores them: raw, little-endian."""
    entries = {
        entry.get_str("key"): entry.get_str("value")
        for entry in fields.get_messages("external_data")
    }
    if fields.get_int("data_location") == EXTERNAL or entries:
        raise FormatError(
            f"{WHAT}: {what} keeps its data in an external file "
            f"({entries.get('location', '?')!r}); edgebundle never writes external data"
        )
    if fields.get_int("data_type") not in DTYPES:
        raise FormatError(
            f"{WHAT}: {what} has element type {fields.get_int('data_type')}, not one "
            "edgebundle writes"
        )
    return fields.get_bytes("raw_data")
