"""A categorical feature's sets, stored as bit tables or sparse steps: onnxruntime must decode
either into exactly the 0/1 table of the sets (an all-0 row for other categories, a NaN row for
missing), and the builder must store whichever takes fewer bytes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgebundle.builder.convert.category_tables import (
    Membership,
    bit_table,
    decoded_table,
    sparse_table,
)
from edgebundle.builder.convert.opgraph import OpGraph

Decoder = Callable[[OpGraph, Membership, str], str]
F32 = npt.NDArray[np.float32]


def _membership(*sets: list[int]) -> Membership:
    return Membership(7, tuple(np.asarray(s, dtype=np.int32) for s in sets))


def _expected(m: Membership) -> F32:
    table = np.zeros((m.codes + 2, m.sets), dtype=np.float32)
    for j, members in enumerate(m.members):
        table[members, j] = 1
    table[-1] = np.nan
    return table


def _run(graph: OpGraph, table: str, opset: int) -> F32:
    """The table as onnxruntime computes it: folded at load, as in a bundle."""
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "tables",
            [],
            [helper.make_tensor_value_info(table, TensorProto.FLOAT, [None, None])],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (value,) = session.run([table], {})
    return np.asarray(value)


def _stored(decode: Decoder, m: Membership) -> int:
    graph = OpGraph("t/")
    decode(graph, m, "cat")
    return sum(part.ByteSize() for part in [*graph.nodes, *graph.initializers])


def _random_sets(codes: int, sets: int, largest: int, seed: int) -> Membership:
    """Sets like XGBoost's: up to ``largest`` members on one side, either side listed."""
    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(sets):
        side = rng.choice(codes, size=int(rng.integers(1, largest + 1)), replace=False)
        listed = side if rng.random() < 0.5 else np.setdiff1d(np.arange(codes), side)
        chosen.append(sorted(int(c) for c in listed))
    chosen[0] = sorted({*chosen[0], codes - 1})  # C is ``codes``
    return _membership(*chosen)


EDGES = [
    # gaps around the 255 stride: a step of 255, a stop then 1, two stops, ...
    _membership([0, 255, 511, 766, 1021, 1277, 1787]),
    _membership([254], [509]),
    # the largest set listed by its complement; one lists every code below C (nothing stored)
    _membership([0, 1, 2, 3, 5, 6, 7, 8, 9], [4], list(range(10))),
    _membership([3, 3, 1]),  # repeated members
    _membership([0]),
    _random_sets(1000, 128, 63, seed=1),
    _random_sets(50, 64, 25, seed=2),
    _random_sets(3, 3, 1, seed=3),
]


@pytest.mark.parametrize("opset", [15, 17])
@pytest.mark.parametrize("decode", [bit_table, sparse_table], ids=["bits", "steps"])
@pytest.mark.parametrize("m", EDGES, ids=[f"C{m.codes}-K{m.sets}-{i}" for i, m in enumerate(EDGES)])
def test_either_encoding_decodes_to_exactly_the_sets(
    decode: Decoder, m: Membership, opset: int
) -> None:
    graph = OpGraph("t/")
    table = decode(graph, m, "cat")
    np.testing.assert_array_equal(_run(graph, table, opset), _expected(m))


def test_sparse_steps_store_one_byte_a_listed_cell_and_a_stop_a_long_gap() -> None:
    m = _membership([0, 255, 511, 766, 1021, 1277, 1787])
    steps, complemented = m.steps()
    # gaps from -1: 1, 255, 256 (stop, 1), 255, 255, 256 (stop, 1), 510 (stop, 255)
    assert steps.tolist() == [1, 255, 0, 1, 255, 255, 0, 1, 0, 255]
    assert complemented.tolist() == [0]
    wide = _random_sets(1000, 128, 63, seed=1)
    steps, complemented = wide.steps()
    smaller_sides = sum(min(len(s), wide.codes - len(s)) for s in wide.members)
    assert steps.dtype == np.uint8 and np.count_nonzero(steps) == smaller_sides
    assert complemented.tolist() == [int(2 * len(s) > wide.codes) for s in wide.members]


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (_random_sets(1000, 128, 63, seed=1), sparse_table),  # XGBoost's default sizes
        (_random_sets(200, 64, 100, seed=4), bit_table),  # half of the codes on each side
        (_membership([0]), bit_table),  # its complement below C is empty: nothing to step
    ],
    ids=["many-codes-small-sets", "dense-sets", "one-code"],
)
def test_the_table_is_stored_in_the_encoding_of_fewer_bytes(
    m: Membership, expected: Decoder
) -> None:
    graph = OpGraph("t/")
    table = decoded_table(graph, m, "cat")
    stored = sum(part.ByteSize() for part in [*graph.nodes, *graph.initializers])
    assert stored == _stored(expected, m)
    if m.steps()[0].size:
        assert stored == min(_stored(bit_table, m), _stored(sparse_table, m))
    np.testing.assert_array_equal(_run(graph, table, 17), _expected(m))
