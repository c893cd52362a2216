"""Shape rules: each allowed op's one output from its inputs, exactly, or a refusal.

``OPS`` is every (domain, op) that edgebundle's emitters write, at the opsets in ``OPSETS``
where these rules match onnxruntime's. A rule sees a ``Node``: its inputs' shapes (and the
contents of small integer tensors), its attributes, and how to refuse it in one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgebundle.runtime.errors import FormatError
from edgebundle.runtime.graphcheck.protowire import Fields
from edgebundle.runtime.graphcheck.schema import BOOL, DTYPES, INT64, WHAT
from edgebundle.runtime.graphcheck.shapes import (
    NONE,
    ONE,
    Dim,
    Shape,
    Tensor,
    elements,
    fixed,
    shape_text,
)

OPSETS = {"": range(15, 23), "ai.onnx.ml": range(5, 6)}  # the ops' shape rules hold here
# A float model's trees, all in one op: 10 classes x 1000 rounds. See _tree_ensemble_held.
MAX_TREES = 10_000
# Category set members over all of a float model's categorical splits. onnxruntime unrolls each
# set into a chain of equality nodes; measured with 1.32: 1,484,083 members (100 trees on a
# 1000-category feature) loaded in 0.4 s and held 93 MB, ~63 bytes each, counted as 64.
MAX_MEMBERS = 4_000_000
_MEMBER_BYTES = 64
_ML = "ai.onnx.ml"
_TREE_ENTRY_BYTES = 512  # see _tree_ensemble_held


@dataclass(frozen=True, slots=True)
class Node:
    label: str  # for messages: its name, or its position when it has none
    op_type: str
    inputs: tuple[Tensor, ...]
    attributes: Mapping[str, Fields]

    def fail(self, problem: str) -> FormatError:
        return FormatError(f"{WHAT}: node {self.label} ({self.op_type}) {problem}")

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


def _broadcast(node: Node, *shapes: Shape) -> Shape:
    """numpy's broadcasting. A fixed size against an N-sized dimension is that fixed size:
    onnxruntime refuses to run the node unless N is 1 or equals it."""
    rank = max(len(shape) for shape in shapes)
    padded = [(ONE,) * (rank - len(shape)) + shape for shape in shapes]
    result = []
    for dims in zip(*padded, strict=True):
        sized = set(dims) - {ONE}
        constant = {dim for dim in sized if not dim.per_row}
        if len(sized) > 1 and len(constant) != 1:
            listed = ", ".join(shape_text(shape) for shape in shapes)
            raise node.fail(f"broadcasts {listed}, which do not fit together")
        result.append(constant.pop() if constant else sized.pop() if sized else ONE)
    return tuple(result)


def _elementwise(node: Node) -> Tensor:
    """Add, Mul: numpy broadcasting, the first input's type."""
    first, second = node.inputs
    return Tensor(_broadcast(node, first.shape, second.shape), first.dtype)


def _comparison(node: Node) -> Tensor:
    first, second = node.inputs
    return Tensor(_broadcast(node, first.shape, second.shape), BOOL)


def _where(node: Node) -> Tensor:
    condition, chosen, other = node.inputs
    return Tensor(_broadcast(node, condition.shape, chosen.shape, other.shape), chosen.dtype)


def _unary(node: Node) -> Tensor:
    """Identity, Sigmoid, Exp, Floor, Softmax: same shape and type."""
    return Tensor(node.inputs[0].shape, node.inputs[0].dtype)


def _is_nan(node: Node) -> Tensor:
    return Tensor(node.inputs[0].shape, BOOL)


def _cast(node: Node) -> Tensor:
    to = node.attr("to")
    if to not in DTYPES:
        raise node.fail(f"casts to element type {to}, not one edgebundle writes")
    return Tensor(node.inputs[0].shape, to)


def _shape(node: Node) -> Tensor:
    dims = node.inputs[0].shape
    # ONNX clamps start and end like a Python slice does.
    kept = dims[node.attr("start", 0) : node.attr("end", len(dims))]
    return Tensor((fixed(len(kept)),), INT64, kept)


def _concat(node: Node) -> Tensor:
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
    return Tensor(shape, first.dtype, joined)


def _expand(node: Node) -> Tensor:
    """Broadcast to a shape that must be known before scoring: the one op that sizes its
    output by a tensor's contents rather than by its inputs' shapes."""
    data, target = node.inputs
    if target.value is None or any(dim.per_row < 0 or dim.fixed < 0 for dim in target.value):
        raise node.fail("expands to a shape not known before scoring")
    return Tensor(_broadcast(node, data.shape, target.value), data.dtype)


def _gather(node: Node) -> Tensor:
    data, indices = node.inputs
    axis = node.axis("axis", len(data.shape), 0)
    return Tensor((*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :]), data.dtype)


def _gather_elements(node: Node) -> Tensor:
    data, indices = node.inputs
    if len(data.shape) != len(indices.shape):
        raise node.fail("has data and indices of different ranks")
    return Tensor(indices.shape, data.dtype)


def _slice(node: Node) -> Tensor:
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
        shape[axis % rank] = fixed(len(range(*slice(start, end, step).indices(dim.fixed))))
    return Tensor(tuple(shape), data.dtype)


def _squeeze(node: Node) -> Tensor:
    data = node.inputs[0]
    rank = len(data.shape)
    axes = {axis % rank for axis in node.constants(1, "axes") if -rank <= axis < rank}
    if len(axes) != len(node.constants(1, "axes")) or any(data.shape[a] != ONE for a in axes):
        raise node.fail(f"squeezes axes that are not size-1 axes of {shape_text(data.shape)}")
    return Tensor(tuple(d for i, d in enumerate(data.shape) if i not in axes), data.dtype)


def _cum_sum(node: Node) -> Tensor:
    """Running sums along a constant axis, never the batch one (as for ReduceSum)."""
    data = node.inputs[0]
    listed = node.constants(1, "axis")
    rank = len(data.shape)
    if len(listed) != 1 or not -rank <= listed[0] < rank or data.shape[listed[0] % rank].per_row:
        raise node.fail(f"sums along axis {listed} of {shape_text(data.shape)}")
    return Tensor(data.shape, data.dtype)


def _constant_sized(node: Node, what: str) -> None:
    """Refuse an op that would mix rows: it may only rework tensors known before scoring."""
    for tensor in node.inputs:
        if any(dim.per_row for dim in tensor.shape):
            raise node.fail(f"{what} a {shape_text(tensor.shape)} tensor that grows with the rows")


def _scatter_elements(node: Node) -> Tensor:
    """The data's shape: indices and updates pair up one to one."""
    _constant_sized(node, "scatters")
    data, indices, updates = node.inputs
    node.axis("axis", len(data.shape), 0)
    if len(indices.shape) != len(data.shape) or indices.shape != updates.shape:
        shapes = ", ".join(shape_text(t.shape) for t in node.inputs)
        raise node.fail(f"scatters {shapes}, which do not fit together")
    return Tensor(data.shape, data.dtype)


def _reshape(node: Node) -> Tensor:
    """To a constant shape of explicit sizes (no 0 or -1 to infer) holding every element."""
    _constant_sized(node, "reshapes")
    data = node.inputs[0]
    target = node.constants(1, "shape")
    if any(size < 1 for size in target) or math.prod(target) != math.prod(
        dim.fixed for dim in data.shape
    ):
        raise node.fail(f"reshapes {shape_text(data.shape)} to {target}")
    return Tensor(tuple(fixed(size) for size in target), data.dtype)


def _reduce_sum(node: Node) -> Tensor:
    """Sums over constant axes, never the batch one: a row's answer depends on that row only."""
    data = node.inputs[0]
    rank = len(data.shape)
    listed = node.constants(1, "axes")
    axes = {axis % rank for axis in listed if -rank <= axis < rank}
    if not listed or len(axes) != len(listed) or any(data.shape[a].per_row for a in axes):
        raise node.fail(f"sums axes {listed} of {shape_text(data.shape)}")
    if node.attr("noop_with_empty_axes", 0):
        raise node.fail("has noop_with_empty_axes set")
    keep = node.attr("keepdims", 1)
    kept = [ONE if i in axes else d for i, d in enumerate(data.shape) if keep or i not in axes]
    return Tensor(tuple(kept), data.dtype)


def _reduce_sum_work(node: Node) -> Dim:
    return elements(node.inputs[0].shape, f"node {node.label} (ReduceSum)")


def _arg_max(node: Node) -> Tensor:
    data = node.inputs[0]
    axis = node.axis("axis", len(data.shape), 0)
    kept = [ONE] if node.attr("keepdims", 1) else []
    return Tensor((*data.shape[:axis], *kept, *data.shape[axis + 1 :]), INT64)


def _gemm_dims(node: Node) -> tuple[Dim, Dim, Dim]:
    """M, K and N of ``A' · B'`` (A' = A or its transpose, per transA; B' likewise)."""
    a, b = node.inputs[0].shape, node.inputs[1].shape
    if len(a) != 2 or len(b) != 2:
        raise node.fail("multiplies tensors that are not matrices")
    m, k = a[::-1] if node.attr("transA", 0) else a
    k_b, n = b[::-1] if node.attr("transB", 0) else b
    if k != k_b:
        raise node.fail(f"multiplies {shape_text(a)} by {shape_text(b)}")
    return m, k, n


def _gemm(node: Node) -> Tensor:
    m, _, n = _gemm_dims(node)
    return Tensor((m, n), node.inputs[0].dtype)


def _gemm_work(node: Node) -> Dim:
    return elements(_gemm_dims(node), f"node {node.label} (Gemm)")


def _tree_ensemble(node: Node) -> Tensor:
    data = node.inputs[0]
    targets = node.attr("n_targets")
    if len(data.shape) != 2 or targets < 1:
        raise node.fail(f"has {targets} targets for a {shape_text(data.shape)} input")
    return Tensor((data.shape[0], fixed(targets)), data.dtype)


def _tree_ensemble_held(node: Node) -> tuple[int, str]:
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
    members = _membership_values(node)
    if members > MAX_MEMBERS:
        raise node.fail(f"has {members:,} category set members, over the cap of {MAX_MEMBERS:,}")
    held = entries * _TREE_ENTRY_BYTES + members * _MEMBER_BYTES
    sets = f", {members:,} category set members" if members else ""
    return held, f"{entries:,} tree nodes and leaves{sets}"


def _membership_values(node: Node) -> int:
    attribute = node.attributes.get("membership_values")
    if attribute is None or not attribute.has("t"):
        return 0
    return len(attribute.get_message("t").get_bytes("raw_data")) // 4  # float32 values


def _list_length(node: Node, name: str) -> int:
    attribute = node.attributes.get(name)
    return 0 if attribute is None else attribute.get_int("ints")


def _no_work(node: Node) -> Dim:
    return NONE


@dataclass(frozen=True, slots=True)
class Op:
    rule: Callable[[Node], Tensor]
    min_inputs: int
    max_inputs: int
    multiply_adds: Callable[[Node], Dim] = _no_work  # beyond one per element written
    held: Callable[[Node], tuple[int, str]] | None = None  # the kernel's own memory, and why


# Every (domain, op) that builder/convert/emit_float.py, int8/traversal.py, category_tables.py
# and link.py write, with its shape rule; tests/runtime/test_hostile_graph.py checks this is
# exactly their union.
OPS: Mapping[tuple[str, str], Op] = {
    (_ML, "TreeEnsemble"): Op(_tree_ensemble, 1, 1, held=_tree_ensemble_held),  # float
    ("", "Add"): Op(_elementwise, 2, 2),
    ("", "Mul"): Op(_elementwise, 2, 2),
    ("", "Equal"): Op(_comparison, 2, 2),
    ("", "Greater"): Op(_comparison, 2, 2),
    ("", "GreaterOrEqual"): Op(_comparison, 2, 2),
    ("", "Where"): Op(_where, 3, 3),
    ("", "IsNaN"): Op(_is_nan, 1, 1),
    ("", "Cast"): Op(_cast, 1, 1),
    ("", "Identity"): Op(_unary, 1, 1),
    ("", "Sigmoid"): Op(_unary, 1, 1),
    ("", "Exp"): Op(_unary, 1, 1),
    ("", "Floor"): Op(_unary, 1, 1),
    ("", "Softmax"): Op(_unary, 1, 1),
    ("", "ArgMax"): Op(_arg_max, 1, 1),
    ("", "Shape"): Op(_shape, 1, 1),
    ("", "Concat"): Op(_concat, 1, 2),
    ("", "Expand"): Op(_expand, 2, 2),
    ("", "Gather"): Op(_gather, 2, 2),
    ("", "GatherElements"): Op(_gather_elements, 2, 2),
    ("", "Slice"): Op(_slice, 3, 5),
    ("", "Squeeze"): Op(_squeeze, 2, 2),
    ("", "ReduceSum"): Op(_reduce_sum, 2, 2, _reduce_sum_work),
    # categorical sets stored as sparse steps, decoded at load (category_tables.py)
    ("", "CumSum"): Op(_cum_sum, 2, 2),
    ("", "ScatterElements"): Op(_scatter_elements, 3, 3),
    ("", "Reshape"): Op(_reshape, 2, 2),
    ("", "Gemm"): Op(_gemm, 2, 3, _gemm_work),
}
