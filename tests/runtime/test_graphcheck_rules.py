"""The graph check's parts on hand-made tensors: dimensions ``a·N + b``, the budget, and each
op's shape rule, without a model file or onnx."""

from __future__ import annotations

import pytest

from edgebundle.runtime.errors import FormatError
from edgebundle.runtime.graphcheck.budget import MAX_GRAPH_BYTES, MAX_MULTIPLY_ADDS, Budget
from edgebundle.runtime.graphcheck.ops import MAX_MEMBERS, MAX_TREES, OPS, Node
from edgebundle.runtime.graphcheck.protowire import Fields
from edgebundle.runtime.graphcheck.schema import BOOL, FLOAT32, INT64
from edgebundle.runtime.graphcheck.shapes import ONE, ROWS, Dim, Shape, Tensor, at, elements, fixed

F = fixed(6)


def floats(*shape: Dim) -> Tensor:
    return Tensor(shape, FLOAT32)


def ints(*values: int) -> Tensor:
    """A small int64 constant, known before scoring like an initializer."""
    return Tensor((fixed(len(values)),), INT64, tuple(fixed(v) for v in values))


def node(op_type: str, *inputs: Tensor, **attributes: int) -> Node:
    fields = {name: Fields({"i": value}) for name, value in attributes.items()}
    return Node("'n'", op_type, inputs, fields)


def output(op_type: str, *inputs: Tensor, domain: str = "", **attributes: int) -> Tensor:
    return OPS[(domain, op_type)].rule(node(op_type, *inputs, **attributes))


def refusal(op_type: str, *inputs: Tensor, **attributes: int) -> str:
    with pytest.raises(FormatError) as info:
        output(op_type, *inputs, **attributes)
    return str(info.value)


# --- dimensions and budgets -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "text"),
    [(fixed(5), "5"), (fixed(0), "0"), (ROWS, "N"), (Dim(2, 3), "2N+3"), (Dim(1, 4), "N+4")],
)
def test_a_dimension_reads_as_a_function_of_n(dim: Dim, text: str) -> None:
    assert str(dim) == text


@pytest.mark.parametrize(
    ("shape", "count"),
    [
        ((), fixed(1)),
        ((fixed(2), fixed(3)), fixed(6)),
        ((ROWS, fixed(3)), Dim(3, 0)),
        ((fixed(4), Dim(2, 1)), Dim(8, 4)),
    ],
)
def test_elements_are_linear_in_n(shape: Shape, count: Dim) -> None:
    assert elements(shape, "t") == count
    assert at(count, 10) == count.per_row * 10 + count.fixed


def test_two_dimensions_growing_with_n_are_refused() -> None:
    with pytest.raises(FormatError, match=r"^model\.onnx: t: a \[N, 2N\+1\] tensor grows faster"):
        elements((ROWS, Dim(2, 1)), "t")


def test_the_budget_counts_a_constant_tensor_twice() -> None:
    budget = Budget(rows=512)
    budget.add("input", floats(ROWS, F))
    assert budget.graph_bytes == 512 * 6 * 4
    budget.add("shape", ints(1, 2))  # onnxruntime may fold it at load and hold it twice
    assert budget.graph_bytes == 512 * 6 * 4 + 2 * 8 * 2


def test_the_budget_refuses_the_tensor_that_takes_it_over() -> None:
    budget = Budget(rows=512)
    budget.add("a", floats(ROWS, fixed(MAX_GRAPH_BYTES // 4 // 512)))
    with pytest.raises(FormatError) as info:
        budget.add("node 'b' (Add)", floats(ROWS, fixed(1)))
    assert str(info.value) == (
        "model.onnx: node 'b' (Add): a float32 [N, 1] tensor (2,048 bytes at 512 rows) takes "
        "the graph over its 536,870,912-byte budget"
    )


def test_the_budget_refuses_too_many_multiply_adds() -> None:
    budget = Budget(rows=1)
    budget.add("g", floats(ONE), fixed(MAX_MULTIPLY_ADDS))
    with pytest.raises(FormatError, match="1 multiply-adds at 1 rows take the graph over its"):
        budget.add("g", floats(ONE), fixed(1))


def test_memory_an_op_holds_counts_against_the_budget() -> None:
    budget = Budget(rows=1)
    budget.hold("t", MAX_GRAPH_BYTES, "trees")
    with pytest.raises(FormatError) as info:
        budget.hold("node 't' (TreeEnsemble)", 1, "1 tree nodes and leaves")
    assert str(info.value) == (
        "model.onnx: node 't' (TreeEnsemble): 1 tree nodes and leaves (1 bytes) take the graph "
        "over its 536,870,912-byte budget"
    )


# --- shape rules ------------------------------------------------------------------------------


def test_broadcasting_follows_numpy_with_n_as_a_size() -> None:
    assert output("Add", floats(ROWS, ONE), floats(fixed(5))).shape == (ROWS, fixed(5))
    # onnxruntime runs this only when N is 4, so it makes [4, 6]
    assert output("Mul", floats(ROWS, F), floats(fixed(4), F)).shape == (fixed(4), F)
    assert output("Greater", floats(ROWS, F), floats(F)) == Tensor((ROWS, F), BOOL)
    where = output("Where", Tensor((ROWS, F), BOOL), floats(ONE), floats(ROWS, ONE))
    assert where == Tensor((ROWS, F), FLOAT32)


@pytest.mark.parametrize(
    ("first", "second", "listed"),
    [
        (floats(fixed(4)), floats(fixed(5)), "[4], [5]"),
        (floats(ROWS, F), floats(Dim(2, 0), F), "[N, 6], [2N, 6]"),
    ],
)
def test_shapes_that_cannot_broadcast_are_refused(
    first: Tensor, second: Tensor, listed: str
) -> None:
    expected = f"model.onnx: node 'n' (Add) broadcasts {listed}, which do not fit together"
    assert refusal("Add", first, second) == expected


def test_shape_concat_and_expand_track_a_shape_known_before_scoring() -> None:
    shape = output("Shape", floats(ROWS, F))
    assert shape == Tensor((fixed(2),), INT64, (ROWS, F))
    assert output("Shape", floats(ROWS, F), start=1).value == (F,)
    joined = output("Concat", output("Shape", floats(ROWS, F), end=1), ints(3), axis=0)
    assert joined == Tensor((fixed(2),), INT64, (ROWS, fixed(3)))
    assert output("Expand", floats(ONE, ONE), joined).shape == (ROWS, fixed(3))


def test_expanding_to_a_computed_shape_is_refused() -> None:
    computed = Tensor((fixed(2),), INT64)
    assert refusal("Expand", floats(ONE), computed) == (
        "model.onnx: node 'n' (Expand) expands to a shape not known before scoring"
    )


def test_concat_adds_up_the_joined_axis() -> None:
    joined = output("Concat", floats(ROWS, fixed(2)), floats(ROWS, fixed(3)), axis=-1)
    assert joined.shape == (ROWS, fixed(5))
    assert refusal("Concat", floats(ROWS, F), floats(fixed(2), F), axis=1) == (
        "model.onnx: node 'n' (Concat) joins tensors whose other dimensions differ"
    )


def test_slice_needs_constant_bounds_and_keeps_the_batch_whole() -> None:
    data = floats(ROWS, fixed(10))
    assert output("Slice", data, ints(2), ints(7), ints(1)).shape == (ROWS, fixed(5))
    assert output("Slice", data, ints(-1), ints(-100), ints(1), ints(-2)).shape == (ROWS, fixed(5))
    assert refusal("Slice", data, ints(0), ints(1), ints(0)) == (
        "model.onnx: node 'n' (Slice) slices the batch dimension"
    )
    assert refusal("Slice", data, Tensor((ONE,), INT64), ints(1)) == (
        "model.onnx: node 'n' (Slice) takes its starts from a tensor not known before scoring"
    )
    assert refusal("Slice", data, ints(0), ints(1), ints(1), ints(0)) == (
        "model.onnx: node 'n' (Slice) has slice bounds that do not fit together"
    )


def test_reduce_sum_sums_fixed_axes_of_each_row_only() -> None:
    assert output("ReduceSum", floats(ROWS, F), ints(1)).shape == (ROWS, ONE)
    assert output("ReduceSum", floats(ROWS, F), ints(-1), keepdims=0).shape == (ROWS,)
    work = OPS[("", "ReduceSum")].multiply_adds(node("ReduceSum", floats(ROWS, F), ints(1)))
    assert work == Dim(6, 0)
    assert refusal("ReduceSum", floats(ROWS, F), ints(0)) == (
        "model.onnx: node 'n' (ReduceSum) sums axes [0] of [N, 6]"
    )  # mixing rows would make one row's answer depend on the others
    assert "sums axes [1, 1]" in refusal("ReduceSum", floats(ROWS, F), ints(1, 1))
    assert "sums axes [2]" in refusal("ReduceSum", floats(ROWS, F), ints(2))
    assert "noop_with_empty_axes" in refusal(
        "ReduceSum", floats(ROWS, F), ints(1), noop_with_empty_axes=1
    )


def test_cum_sum_runs_along_a_fixed_axis_of_each_row_only() -> None:
    assert output("CumSum", Tensor((fixed(5000),), INT64), ints(0)) == Tensor((fixed(5000),), INT64)
    assert output("CumSum", floats(ROWS, F), ints(-1)).shape == (ROWS, F)
    assert refusal("CumSum", floats(ROWS, F), ints(0)) == (
        "model.onnx: node 'n' (CumSum) sums along axis [0] of [N, 6]"
    )  # a running sum over the batch would make one row's answer depend on the others
    assert "sums along axis [2]" in refusal("CumSum", floats(ROWS, F), ints(2))
    assert "sums along axis [0, 1]" in refusal("CumSum", floats(F, F), ints(0, 1))
    assert "not known before scoring" in refusal("CumSum", floats(F), Tensor((), INT64))


def test_scatter_elements_and_reshape_rework_constants_only() -> None:
    """What decodes category steps at load: sized by their constant inputs, never by rows."""
    cells, updates = fixed(128_000), fixed(5562)
    scattered = output(
        "ScatterElements", floats(cells), Tensor((updates,), INT64), floats(updates), axis=0
    )
    assert scattered == floats(cells)
    per_row = refusal("ScatterElements", floats(ROWS, F), Tensor((ONE, F), INT64), floats(ONE, F))
    assert per_row == (
        "model.onnx: node 'n' (ScatterElements) scatters a [N, 6] tensor that grows with the rows"
    )
    assert "scatters [6], [3], [4], which do not fit" in refusal(
        "ScatterElements", floats(F), Tensor((fixed(3),), INT64), floats(fixed(4))
    )
    assert "has axis 1 for a rank-1 tensor" in refusal(
        "ScatterElements", floats(F), Tensor((F,), INT64), floats(F), axis=1
    )
    assert output("Reshape", floats(cells), ints(1000, 128)) == floats(fixed(1000), fixed(128))
    assert refusal("Reshape", floats(ROWS, F), ints(-1)) == (
        "model.onnx: node 'n' (Reshape) reshapes a [N, 6] tensor that grows with the rows"
    )
    assert refusal("Reshape", floats(F, F), ints(-1, 4)) == (
        "model.onnx: node 'n' (Reshape) reshapes [6, 6] to [-1, 4]"
    )  # no size inferred: every size is written out
    assert "reshapes [6, 6] to [0, 36]" in refusal("Reshape", floats(F, F), ints(0, 36))
    assert "reshapes [6, 6] to [5, 7]" in refusal("Reshape", floats(F, F), ints(5, 7))
    assert "not known before scoring" in refusal("Reshape", floats(F), Tensor((ONE,), INT64))


def test_squeeze_gather_and_argmax() -> None:
    assert output("Squeeze", floats(ROWS, ONE), ints(1)).shape == (ROWS,)
    assert refusal("Squeeze", floats(ROWS, F), ints(1)) == (
        "model.onnx: node 'n' (Squeeze) squeezes axes that are not size-1 axes of [N, 6]"
    )
    gathered = output("Gather", floats(fixed(100), fixed(3)), Tensor((ROWS, F), INT64))
    assert gathered.shape == (ROWS, F, fixed(3))
    assert output("ArgMax", floats(ROWS, fixed(3)), axis=1, keepdims=0) == Tensor((ROWS,), INT64)
    assert output("ArgMax", floats(ROWS, fixed(3)), axis=1).shape == (ROWS, ONE)
    assert refusal("ArgMax", floats(ROWS, F), axis=2) == (
        "model.onnx: node 'n' (ArgMax) has axis 2 for a rank-2 tensor"
    )


def test_gemm_shapes_and_work() -> None:
    a, b = floats(ROWS, F), floats(fixed(4), F)
    gemm = node("Gemm", a, b, transB=1)
    op = OPS[("", "Gemm")]
    assert op.rule(gemm).shape == (ROWS, fixed(4))
    assert op.multiply_adds(gemm) == Dim(24, 0)  # N x 6 x 4
    assert refusal("Gemm", a, b) == "model.onnx: node 'n' (Gemm) multiplies [N, 6] by [4, 6]"


def test_cast_only_to_types_edgebundle_writes() -> None:
    assert output("Cast", floats(ROWS), to=INT64) == Tensor((ROWS,), INT64)
    assert refusal("Cast", floats(ROWS), to=11) == (
        "model.onnx: node 'n' (Cast) casts to element type 11, not one edgebundle writes"
    )


def test_a_tree_ensemble_holds_memory_by_its_node_lists() -> None:
    op = OPS[("ai.onnx.ml", "TreeEnsemble")]
    counts = {"tree_roots": 10, "nodes_featureids": 70, "leaf_targetids": 80}
    ensemble = Node(
        "#0",
        "TreeEnsemble",
        (floats(ROWS, F),),
        {"n_targets": Fields({"i": 1}), **{k: Fields({"ints": v}) for k, v in counts.items()}},
    )
    assert op.rule(ensemble).shape == (ROWS, ONE)
    assert op.held is not None
    assert op.held(ensemble) == (150 * 512, "150 tree nodes and leaves")
    too_many = Node(
        "#0", "TreeEnsemble", (floats(ROWS, F),), {"tree_roots": Fields({"ints": MAX_TREES + 1})}
    )
    with pytest.raises(FormatError, match=r"node #0 \(TreeEnsemble\) has 10,001 trees, over"):
        op.held(too_many)


def _with_members(count: int) -> Node:
    members = Fields({"raw_data": memoryview(bytes(4 * count))})
    counts = {"tree_roots": 1, "nodes_featureids": 3, "leaf_targetids": 4}
    return Node(
        "#0",
        "TreeEnsemble",
        (floats(ROWS, F),),
        {
            "membership_values": Fields({"t": members}),
            **{k: Fields({"ints": v}) for k, v in counts.items()},
        },
    )


def test_category_set_members_hold_memory_and_have_a_cap() -> None:
    held = OPS[("ai.onnx.ml", "TreeEnsemble")].held
    assert held is not None
    assert held(_with_members(1000)) == (
        7 * 512 + 1000 * 64,
        "7 tree nodes and leaves, 1,000 category set members",
    )
    with pytest.raises(FormatError, match=r"4,000,001 category set members, over the cap"):
        held(_with_members(MAX_MEMBERS + 1))


def test_a_missing_attribute_is_named() -> None:
    assert refusal("Cast", floats(ROWS)) == (
        "model.onnx: node 'n' (Cast) has no integer attribute 'to'"
    )
