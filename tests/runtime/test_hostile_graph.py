"""A validly signed bundle whose model.onnx is hostile (a compromised build machine, an
insider): refused at the selftest before onnxruntime parses it, in one line naming what was
refused, with the store unchanged and the active version still scoring.

Each hostile graph is the real model of a real bundle, edited with onnx and re-signed with the
trusted key (``builder.drill.repacked``): valid in every way but its graph.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgebundle.builder.convert.emit_float import emit_float
from edgebundle.builder.convert.emit_int8 import LAYOUTS, emit_int8
from edgebundle.builder.convert.emit_linear import emit_linear_float, emit_linear_int8
from edgebundle.builder.convert.graph import MarginGraph
from edgebundle.builder.convert.link import assemble
from edgebundle.builder.convert.load import SourceModel, load_model
from edgebundle.builder.drill import repacked
from edgebundle.runtime.bundle import read_members_unverified
from edgebundle.runtime.errors import FormatError, SelftestError
from edgebundle.runtime.graphcheck import MAX_NODES, OPS, check_model
from edgebundle.runtime.scoring import MAX_ROWS_PER_RUN
from edgebundle.runtime.semver import Version
from edgebundle.runtime.signing import load_private_key
from edgebundle.runtime.store import Store
from tests.conftest import KeyFiles
from tests.support.store_helpers import Spec, audit_events, build_bundles, snapshot
from tests.support.xgbmodels import BIN, OBJECTIVES, features, train
from tests.support.zoo import ZOO, train_zoo

INT8 = Spec("credit", "1.0.0")
FLOAT = Spec("credit", "1.0.0", precision="float")
HOSTILE = "1.1.0"
REFUSED = f"selftest failed for credit {HOSTILE}: "
GIB = 1 << 30


@pytest.fixture(scope="module")
def bundles(keys: KeyFiles, tmp_path_factory: pytest.TempPathFactory) -> dict[Spec, bytes]:
    model = train("binary:logistic", tmp_path_factory.mktemp("model"), rounds=8).path
    paths = build_bundles(model, [INT8, FLOAT], {"keys": keys}, tmp_path_factory.mktemp("out"))
    return {spec: path.read_bytes() for spec, path in paths.items()}


@pytest.fixture
def store(tmp_path: Path, keys: KeyFiles, bundles: dict[Spec, bytes]) -> Store:
    store = Store.init(tmp_path / "store", [keys.public])
    store.install(bundles[INT8], origin="good")
    return store


# --- building hostile graphs -------------------------------------------------------------------

Edit = Callable[[onnx.ModelProto], None]


def edited(edit: Edit) -> Callable[[bytes], bytes]:
    def apply(model_bytes: bytes) -> bytes:
        model = onnx.load_from_string(model_bytes)
        edit(model)
        serialized: bytes = model.SerializeToString()
        return serialized

    return apply


def feeding(
    nodes: list[onnx.NodeProto], hostile: str, rank: int, *consts: onnx.TensorProto
) -> Edit:
    """Insert ``nodes`` and make the output ``probability`` depend on their float32 rank-``rank``
    result ``hostile``, through ops edgebundle emits, so only the hostile part is refused."""

    def edit(model: onnx.ModelProto) -> None:
        graph = model.graph
        [at] = [i for i, node in enumerate(graph.node) if node.output[0] == "probability"]
        graph.node[at].output[0] = "hostile/probability"
        element, sink = hostile, []
        for axis in range(rank):  # down to one element: Gather index 0 drops an axis
            sink.append(
                helper.make_node("Gather", [element, "hostile/first"], [f"{hostile}/{axis}"])
            )
            element = f"{hostile}/{axis}"
        sink += [
            helper.make_node("Mul", [element, "hostile/nothing"], ["hostile/zero"]),
            helper.make_node("Add", ["hostile/probability", "hostile/zero"], ["probability"]),
        ]
        spliced = [*graph.node[: at + 1], *nodes, *sink, *graph.node[at + 1 :]]
        del graph.node[:]
        graph.node.extend(spliced)
        graph.initializer.extend(
            [const("hostile/first", 0), const("hostile/nothing", 0.0, np.float32), *consts]
        )

    return edit


def const(name: str, value: object, dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def node(op_type: str, inputs: list[str], output: str, **attributes: object) -> onnx.NodeProto:
    return helper.make_node(op_type, inputs, [output], name=output, **attributes)


def expand_to(shape: list[int]) -> Edit:
    return feeding(
        [node("Expand", ["hostile/one", "hostile/shape"], "hostile/big")],
        "hostile/big",
        len(shape),
        const("hostile/one", [1.0], np.float32),
        const("hostile/shape", shape),
    )


def expand_rows_by(*dims: int) -> Edit:
    """An Expand to [N, *dims], N the number of rows scored."""
    return feeding(
        [
            node("Shape", ["input"], "hostile/rows", end=1),
            node("Concat", ["hostile/rows", "hostile/dims"], "hostile/shape", axis=0),
            node("Expand", ["hostile/one", "hostile/shape"], "hostile/big"),
        ],
        "hostile/big",
        1 + len(dims),
        const("hostile/one", [1.0], np.float32),
        const("hostile/dims", list(dims)),
    )


def expand_rows_squared(model: onnx.ModelProto) -> None:
    feeding(
        [
            node("Shape", ["input"], "hostile/rows", end=1),
            node("Concat", ["hostile/rows", "hostile/rows"], "hostile/shape", axis=0),
            node("Expand", ["hostile/one", "hostile/shape"], "hostile/big"),
        ],
        "hostile/big",
        2,
        const("hostile/one", [1.0], np.float32),
    )(model)


def expand_to_computed_shape(model: onnx.ModelProto) -> None:
    feeding(
        [
            node("Shape", ["input"], "hostile/input_shape"),
            node("Gather", ["hostile/input_shape", "hostile/which"], "hostile/shape"),
            node("Expand", ["hostile/one", "hostile/shape"], "hostile/big"),
        ],
        "hostile/big",
        2,
        const("hostile/one", [1.0], np.float32),
        const("hostile/which", [1, 1]),
    )(model)


def outer_sum(model: onnx.ModelProto) -> None:
    """[2^15, 1] + [1, 2^15]: 256 KB of initializers broadcast to 4 GiB."""
    side = 1 << 15
    feeding(
        [node("Add", ["hostile/column", "hostile/row"], "hostile/big")],
        "hostile/big",
        2,
        const("hostile/column", np.zeros((side, 1)), np.float32),
        const("hostile/row", np.zeros((1, side)), np.float32),
    )(model)


def many_medium_tensors(model: onnx.ModelProto) -> None:
    """32 MiB each, the sum of them over the budget."""
    parts = [node("Expand", ["hostile/one", "hostile/shape"], "hostile/part0")]
    for i in range(1, 12):
        parts.append(node("Expand", ["hostile/one", "hostile/shape"], f"hostile/expand{i}"))
        parts.append(
            node("Add", [f"hostile/part{i - 1}", f"hostile/expand{i}"], f"hostile/part{i}")
        )
    feeding(
        parts,
        "hostile/part11",
        1,
        const("hostile/one", [1.0], np.float32),
        const("hostile/shape", [1 << 23]),
    )(model)


def square_gemm(model: onnx.ModelProto) -> None:
    """[4096, 4096] x [4096, 4096]: 64 MiB tensors, 2^36 multiply-adds."""
    feeding(
        [
            node("Expand", ["hostile/one", "hostile/shape"], "hostile/square"),
            node("Gemm", ["hostile/square", "hostile/square"], "hostile/product"),
        ],
        "hostile/product",
        2,
        const("hostile/one", [[1.0]], np.float32),
        const("hostile/shape", [4096, 4096]),
    )(model)


def foreign_op(op_type: str, domain: str = "", **attributes: object) -> Edit:
    def edit(model: onnx.ModelProto) -> None:
        feeding(
            [helper.make_node(op_type, ["input"], ["hostile/out"], domain=domain, **attributes)],
            "hostile/out",
            2,
        )(model)
        if domain:
            model.opset_import.append(helper.make_opsetid(domain, 1))

    return edit


def constant_of_shape(shape: list[int]) -> Edit:
    value = numpy_helper.from_array(np.ones(1, dtype=np.float32))  # touched, not just reserved
    return feeding(
        [node("ConstantOfShape", ["hostile/shape"], "hostile/big", value=value)],
        "hostile/big",
        len(shape),
        const("hostile/shape", shape),
    )


def tile(model: onnx.ModelProto) -> None:
    feeding(
        [node("Tile", ["hostile/one", "hostile/repeats"], "hostile/big")],
        "hostile/big",
        1,
        const("hostile/one", [1.0], np.float32),
        const("hostile/repeats", [GIB]),
    )(model)


def branch(output: str) -> onnx.GraphProto:
    return helper.make_graph(
        [node("Identity", ["input"], output)],
        "branch",
        [],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
    )


def if_node(model: onnx.ModelProto) -> None:
    feeding(
        [
            node("IsNaN", ["hostile/nothing"], "hostile/condition"),
            node(
                "If",
                ["hostile/condition"],
                "hostile/out",
                then_branch=branch("then"),
                else_branch=branch("else"),
            ),
        ],
        "hostile/out",
        2,
    )(model)


def endless_loop(model: onnx.ModelProto) -> None:
    """10^9 iterations: without the check the installer hangs holding the store lock."""
    scalar = [
        helper.make_tensor_value_info(n, t, [])
        for n, t in (
            ("i", TensorProto.INT64),
            ("cond", TensorProto.BOOL),
            ("acc", TensorProto.FLOAT),
        )
    ]
    body = helper.make_graph(
        [node("Identity", ["cond"], "cond_out"), node("Add", ["acc", "hostile/one"], "acc_out")],
        "body",
        scalar,
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, []),
        ],
    )
    feeding(
        [
            helper.make_node(
                "Loop", ["hostile/trips", "", "hostile/nothing"], ["hostile/out"], body=body
            )
        ],
        "hostile/out",
        0,
        const("hostile/trips", 10**9),
        const("hostile/one", 1.0, np.float32),
    )(model)


def scan(model: onnx.ModelProto) -> None:
    row = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [6]) for n in ("state", "x")]
    body = helper.make_graph(
        [node("Add", ["state", "x"], "next")],
        "body",
        row,
        [helper.make_tensor_value_info("next", TensorProto.FLOAT, [6])],
    )
    feeding(
        [
            helper.make_node(
                "Scan", ["hostile/start", "input"], ["hostile/out"], body=body, num_scan_inputs=1
            )
        ],
        "hostile/out",
        1,
        const("hostile/start", np.zeros(6), np.float32),
    )(model)


def subgraph_on_an_emitted_op(model: onnx.ModelProto) -> None:
    feeding([node("Identity", ["input"], "hostile/out", body=branch("inside"))], "hostile/out", 2)(
        model
    )


def external(initializer: str, location: str) -> Edit:
    def edit(model: onnx.ModelProto) -> None:
        [tensor] = [t for t in model.graph.initializer if t.name == initializer]
        point_outside(tensor, location)

    return edit


def external_attribute(model: onnx.ModelProto) -> None:
    [trees] = [n for n in model.graph.node if n.op_type == "TreeEnsemble"]
    [splits] = [a for a in trees.attribute if a.name == "nodes_splits"]
    point_outside(splits.t, "/etc/passwd")


def point_outside(tensor: onnx.TensorProto, location: str) -> None:
    size = len(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def targets(count: int) -> Edit:
    def edit(model: onnx.ModelProto) -> None:
        [trees] = [n for n in model.graph.node if n.op_type == "TreeEnsemble"]
        [n_targets] = [a for a in trees.attribute if a.name == "n_targets"]
        n_targets.i = count

    return edit


def forest(trees: int, depth: int) -> Edit:
    """The float model's trees replaced by ``trees`` chains of ``depth`` nodes: valid, but
    slow and large for onnxruntime to build (100,000 one-node trees: 4 s)."""

    def edit(model: onnx.ModelProto) -> None:
        [ensemble] = [n for n in model.graph.node if n.op_type == "TreeEnsemble"]
        nodes = np.arange(trees * depth)
        level, first_leaf = nodes % depth, nodes // depth * (depth + 1)
        last = level == depth - 1
        lists: dict[str, object] = {
            "tree_roots": np.arange(trees) * depth,
            "nodes_featureids": np.zeros_like(nodes),
            "nodes_splits": numpy_helper.from_array(np.zeros(nodes.size, np.float32)),
            "nodes_modes": numpy_helper.from_array(np.ones(nodes.size, np.uint8)),
            "nodes_missing_value_tracks_true": np.zeros_like(nodes),
            "nodes_truenodeids": first_leaf + level,
            "nodes_trueleafs": np.ones_like(nodes),
            "nodes_falsenodeids": np.where(last, first_leaf + depth, nodes + 1),
            "nodes_falseleafs": last.astype(np.int64),
            "leaf_targetids": np.zeros(trees * (depth + 1), np.int64),
            "leaf_weights": numpy_helper.from_array(np.zeros(trees * (depth + 1), np.float32)),
        }
        for attribute in ensemble.attribute:
            if attribute.name in lists:
                value = lists[attribute.name]
                listed = value if isinstance(value, onnx.TensorProto) else value.tolist()
                attribute.CopyFrom(helper.make_attribute(attribute.name, listed))

    return edit


def local_function(model: onnx.ModelProto) -> None:
    model.functions.append(
        helper.make_function(
            "evil.ops",
            "Foo",
            ["x"],
            ["y"],
            [node("Identity", ["x"], "y")],
            [helper.make_opsetid("", 17)],
        )
    )


def renamed_input(model: onnx.ModelProto) -> None:
    model.graph.input[0].name = "x"
    for each in model.graph.node:
        each.input[:] = ["x" if name == "input" else name for name in each.input]


def renamed_output(model: onnx.ModelProto) -> None:
    for each in model.graph.node:
        each.input[:] = ["prob" if name == "probability" else name for name in each.input]
        each.output[:] = ["prob" if name == "probability" else name for name in each.output]
    model.graph.output[0].name = "prob"


def int32_label(model: onnx.ModelProto) -> None:
    [cast] = [n for n in model.graph.node if n.output[0] == "label"]
    cast.attribute[0].i = TensorProto.INT32
    model.graph.output[1].type.tensor_type.elem_type = TensorProto.INT32


def fixed_batch(rows: int) -> Edit:
    """A declared batch size: onnxruntime may fold shapes computed from it at load."""

    def edit(model: onnx.ModelProto) -> None:
        [batch, _] = model.graph.input[0].type.tensor_type.shape.dim
        batch.dim_value = rows

    return edit


def chain(length: int) -> Edit:
    nodes = [
        node("Identity", ["input" if i == 0 else f"chain{i - 1}"], f"chain{i}")
        for i in range(length)
    ]
    return feeding(nodes, f"chain{length - 1}", 2)


def feature_out_of_range(model: onnx.ModelProto) -> None:
    """Passes the static check; onnxruntime itself refuses it when scoring."""
    [trees] = [n for n in model.graph.node if n.op_type == "TreeEnsemble"]
    [feature_ids] = [a for a in trees.attribute if a.name == "nodes_featureids"]
    feature_ids.ints[0] = 10**6


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_if(depth: int) -> Callable[[bytes], bytes]:
    """An If node nested ``depth`` deep, written by hand: protobuf libraries refuse to build
    or parse messages nested beyond ~100 levels."""

    def if_node(then_branch: bytes) -> bytes:
        return _field(4, b"If") + _field(5, _field(1, b"then_branch") + _field(6, then_branch))

    def apply(model_bytes: bytes) -> bytes:
        branch = b""
        for _ in range(depth - 1):
            branch = _field(1, if_node(branch))
        model = onnx.load_from_string(model_bytes)
        graph = model.graph.SerializeToString()
        model.ClearField("graph")
        serialized: bytes = model.SerializeToString()
        return serialized + _field(7, _field(1, if_node(branch)) + graph)

    return apply


def _budget(shape: str, size: int) -> str:
    return (
        rf"model\.onnx: node 'hostile/\w+' \(\w+\): a float32 {re.escape(shape)} tensor "
        rf"\({size:,} bytes at 512 rows\) takes the graph over its 536,870,912-byte budget"
    )


def _op(op_type: str, domain: str = "") -> str:
    return re.escape(f"model.onnx: op {op_type!r} (domain {domain!r}) is not one edgebundle emits")


@dataclass(frozen=True)
class Case:
    hostile: Callable[[bytes], bytes]
    refusal: str  # a regular expression for the message after "selftest failed for ...: "
    base: Spec = INT8


CASES = {
    "custom-domain-op": Case(edited(foreign_op("Foo", "evil.ops")), _op("Foo", "evil.ops")),
    "contrib-op": Case(edited(foreign_op("Gelu", "com.microsoft")), _op("Gelu", "com.microsoft")),
    "standard-op-never-emitted": Case(edited(foreign_op("Abs")), _op("Abs")),
    "constant-of-shape-2^40": Case(
        edited(constant_of_shape([1 << 20, 1 << 20])), _op("ConstantOfShape")
    ),
    "constant-of-shape-4GiB": Case(edited(constant_of_shape([GIB])), _op("ConstantOfShape")),
    "tile-4GiB": Case(edited(tile), _op("Tile")),
    "expand-2^40": Case(
        edited(expand_to([1 << 20, 1 << 20])), _budget("[1048576, 1048576]", 1 << 42)
    ),
    "expand-4GiB": Case(edited(expand_to([GIB])), _budget("[1073741824]", 4 * GIB)),
    "expand-rows-by-2^27": Case(
        edited(expand_rows_by(1 << 27)), _budget("[N, 134217728]", 512 * 4 * (1 << 27))
    ),
    "expand-rows-squared": Case(
        edited(expand_rows_squared),
        re.escape(
            "model.onnx: node 'hostile/big' (Expand): a [N, N] tensor grows faster than the "
            "number of rows"
        ),
    ),
    "expand-to-a-computed-shape": Case(
        edited(expand_to_computed_shape),
        re.escape(
            "model.onnx: node 'hostile/big' (Expand) expands to a shape not known before scoring"
        ),
    ),
    "broadcast-add-4GiB": Case(edited(outer_sum), _budget("[32768, 32768]", 4 * GIB)),
    "many-medium-tensors": Case(edited(many_medium_tensors), _budget("[8388608]", 1 << 25)),
    "gemm-2^36-multiply-adds": Case(
        edited(square_gemm),
        re.escape(
            "model.onnx: node 'hostile/product' (Gemm): 68,719,476,736 multiply-adds at 512 rows "
            "take the graph over its budget of 1,073,741,824"
        ),
    ),
    "tree-ensemble-2^27-targets": Case(
        edited(targets(1 << 27)),
        re.escape(
            "model.onnx: node 'float/trees' (TreeEnsemble): a float32 [N, 134217728] tensor "
            "(274,877,906,944 bytes at 512 rows) takes the graph over its 536,870,912-byte budget"
        ),
        FLOAT,
    ),
    "tree-ensemble-of-100000-trees": Case(
        edited(forest(100_000, 1)),
        re.escape(
            "model.onnx: node 'float/trees' (TreeEnsemble) has 100,000 trees, over the cap of "
            "10,000"
        ),
        FLOAT,
    ),
    "tree-ensemble-of-1.1M-nodes-and-leaves": Case(
        edited(forest(5000, 110)),
        re.escape(
            "model.onnx: node 'float/trees' (TreeEnsemble): 1,105,000 tree nodes and leaves "
            "(565,760,000 bytes) take the graph over its 536,870,912-byte budget"
        ),
        FLOAT,
    ),
    "external-data-absolute": Case(
        edited(external("int8/tree_scale", "/etc/passwd")),
        re.escape(
            "model.onnx: initializer 'int8/tree_scale' keeps its data in an external file "
            "('/etc/passwd'); edgebundle never writes external data"
        ),
    ),
    "external-data-relative": Case(
        edited(external("int8/tree_scale", "../../x")),
        re.escape(
            "model.onnx: initializer 'int8/tree_scale' keeps its data in an external file "
            "('../../x'); edgebundle never writes external data"
        ),
    ),
    "external-data-in-an-attribute": Case(
        edited(external_attribute),
        re.escape(
            "model.onnx: node 'float/trees' (TreeEnsemble) attribute 'nodes_splits' keeps its "
            "data in an external file ('/etc/passwd'); edgebundle never writes external data"
        ),
        FLOAT,
    ),
    "if": Case(edited(if_node), _op("If")),
    "loop-10^9": Case(edited(endless_loop), _op("Loop")),
    "scan": Case(edited(scan), _op("Scan")),
    "subgraph-on-an-emitted-op": Case(
        edited(subgraph_on_an_emitted_op),
        re.escape(
            "model.onnx: node 'hostile/out' (Identity) holds a subgraph in attribute 'body'; "
            "edgebundle emits none"
        ),
    ),
    "if-nested-1000-deep": Case(nested_if(1000), _op("If")),
    "model-local-function": Case(
        edited(local_function),
        re.escape("model.onnx: top level: unexpected field 25 in a ModelProto"),
    ),
    "input-renamed": Case(
        edited(renamed_input),
        re.escape("model.onnx: model must have exactly one input 'input', has 'x'"),
    ),
    "output-renamed": Case(
        edited(renamed_output),
        re.escape(
            "model outputs ['label', 'prob'] do not match the manifest's ['label', 'probability']"
        ),
    ),
    "output-type-changed": Case(
        edited(int32_label),
        re.escape("model output 'label' is tensor(int32), the manifest says int64"),
    ),
    "input-declared-with-2^26-rows": Case(
        edited(fixed_batch(1 << 26)),
        re.escape(
            "model.onnx: input 'input': a float32 [67108864, 6] tensor (1,610,612,736 bytes at "
            "512 rows) takes the graph over its 536,870,912-byte budget"
        ),
    ),
    "nodes-over-the-cap": Case(
        edited(chain(MAX_NODES)), rf"model\.onnx: \d+ nodes, over the cap of {MAX_NODES}"
    ),
    "a-hundred-thousand-nodes": Case(
        edited(chain(100_000)),
        r"model\.onnx: graph\.node\[\d+\]: more than 100000 protobuf fields in all",
    ),
}


def hostile_bundle(bundles: dict[Spec, bytes], case: Case, keys: KeyFiles) -> bytes:
    base = bundles[case.base]
    model = case.hostile(read_members_unverified(base)["model.onnx"])
    key = load_private_key(keys.private, None)
    return repacked(base, key, Version.parse(HOSTILE), {"model.onnx": model})


def scores(store: Store) -> dict[str, np.ndarray]:
    loaded = store.load_active("credit")
    assert loaded.version == Version.parse("1.0.0")
    return loaded.scorer.predict(features(64, seed=5))


# --- the store --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_graph_is_refused_and_nothing_else_moves(
    name: str, store: Store, bundles: dict[Spec, bytes], keys: KeyFiles
) -> None:
    data = hostile_bundle(bundles, CASES[name], keys)
    before, answers = snapshot(store.root), scores(store)
    events = len(audit_events(store.root))
    with pytest.raises(SelftestError) as info:
        store.install(data, origin=name)
    assert re.fullmatch(re.escape(REFUSED) + CASES[name].refusal, str(info.value)), info.value
    assert snapshot(store.root) == before
    [event] = audit_events(store.root)[events:]
    assert (event.event, event.model, event.version) == ("refused", "credit", HOSTILE)
    assert event.reason == str(info.value)
    for output, values in scores(store).items():
        np.testing.assert_array_equal(values, answers[output])


# --- the real CLI, in a process of its own --------------------------------------------------

# ru_maxrss of a process started from this one counts this process's memory too (the child is
# a copy until it execs), so a small interpreter starts the CLI and reports its peak alone.
_PEAK_OF = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], peak_file: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_OF, str(peak_file), str(BIN / "bundle-runtime"), *args],
        capture_output=True,
        text=True,
        timeout=60,  # the endless Loop would otherwise hang here
        check=False,
    )
    return proc, int(peak_file.read_text())


CLI_CASES = {
    # Without the check each of these takes 4.1 GB and installs (ConstantOfShape: 12 s) ...
    "constant-of-shape-4GiB": CASES["constant-of-shape-4GiB"],
    "expand-rows-by-2^27": CASES["expand-rows-by-2^27"],
    # ... or never returns.
    "loop-10^9": CASES["loop-10^9"],
    # Past the check, onnxruntime refuses it itself: still one line, no log of its own.
    "feature-out-of-range": Case(
        edited(feature_out_of_range),
        r"onnxruntime failed to score: Non-zero status code returned while running TreeEnsemble"
        r" node\. .*",
        FLOAT,
    ),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_install_cli_refuses_in_one_line_and_bounded_memory(
    name: str, store: Store, bundles: dict[Spec, bytes], keys: KeyFiles, tmp_path: Path
) -> None:
    bundle = tmp_path / "hostile.bundle"
    bundle.write_bytes(hostile_bundle(bundles, CLI_CASES[name], keys))
    before = snapshot(store.root)
    proc, peak = run_measured(
        ["install", str(bundle), "--store", str(store.root)], tmp_path / "peak"
    )
    assert proc.returncode == 3, proc.stderr
    assert re.fullmatch(
        "error: " + re.escape(REFUSED) + CLI_CASES[name].refusal + "\n", proc.stderr
    ), proc.stderr
    assert proc.stdout == ""
    assert peak < 400 * 1024 * 1024, peak
    assert snapshot(store.root) == before
    scores(store)


def test_score_cli_refuses_a_hostile_bundle_too(
    bundles: dict[Spec, bytes], keys: KeyFiles, tmp_path: Path
) -> None:
    bundle = tmp_path / "hostile.bundle"
    bundle.write_bytes(hostile_bundle(bundles, CASES["expand-4GiB"], keys))
    args = ["score", "--bundle", str(bundle), "--trust", str(keys.public)]
    proc, peak = run_measured(args, tmp_path / "peak")
    assert proc.returncode == 3, proc.stderr
    assert re.fullmatch("error: " + _budget("[1073741824]", 4 * GIB) + "\n", proc.stderr)
    assert peak < 400 * 1024 * 1024, peak


# --- what the builder emits passes --------------------------------------------------------------


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, int]]:
    """Every graph kind the builder writes, per objective: float, and int8 with 8- and 16-bit
    leaves in both layouts; plus trees that are single leaves (int8 then has no levels), and
    the zoo's models (gblinear, dart, several quantiles and targets, category sets) in both
    precisions."""
    models: dict[str, tuple[bytes, int]] = {}
    for objective in (*OBJECTIVES, "stumps"):
        directory = tmp_path_factory.mktemp(objective.replace(":", "_"))
        extra = {"min_split_loss": 1e9} if objective == "stumps" else {}
        trained = train("reg:squarederror" if extra else objective, directory, rounds=3, **extra)
        source = load_model(trained.path)
        ensemble = source.ensemble
        graphs = {"float": emit_float(ensemble)}
        for bits in (8, 16):
            for layout in LAYOUTS:
                graphs[f"int{bits}-{layout}"] = emit_int8(ensemble, bits, layout)
        models.update(_assembled(objective, source, graphs))
    root = tmp_path_factory.mktemp("zoo")
    # cat-1000-partition stores its category sets as sparse steps (category_tables.py)
    for name in (*ZOO, "cat-50-partition", "cat-1000-partition"):
        source = load_model(train_zoo(name, root).path)
        if source.linear is None:
            graphs = {"float": emit_float(source.ensemble), "int8": emit_int8(source.ensemble)}
        else:
            bound = np.ones(source.ensemble.num_features, np.float32)
            graphs = {
                "float": emit_linear_float(source.linear),
                "int8": emit_linear_int8(source.linear, 8, bound),
            }
        models.update(_assembled(name, source, graphs))
    return models


def _assembled(
    name: str, source: SourceModel, graphs: dict[str, MarginGraph]
) -> dict[str, tuple[bytes, int]]:
    ensemble = source.ensemble
    return {
        f"{name} {kind}": (
            assemble(
                graph,
                source.objective.link,
                ensemble.num_features,
                ensemble.num_outputs,
                source.output_columns,
            ).onnx_bytes,
            ensemble.num_features,
        )
        for kind, graph in graphs.items()
    }


def test_every_graph_the_builder_emits_passes(emitted: dict[str, tuple[bytes, int]]) -> None:
    for name, (model, num_features) in emitted.items():
        try:
            check_model(model, num_features, MAX_ROWS_PER_RUN)
        except FormatError as e:
            pytest.fail(f"{name}: {e}")


def test_the_allowed_ops_are_exactly_those_the_builder_emits(
    emitted: dict[str, tuple[bytes, int]],
) -> None:
    used = {
        (each.domain, each.op_type)
        for model, _ in emitted.values()
        for each in onnx.load_from_string(model).graph.node
    }
    assert used == set(OPS)


# --- the reader itself ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_model(bundles: dict[Spec, bytes]) -> bytes:
    return read_members_unverified(bundles[INT8])["model.onnx"]


def test_a_truncated_model_is_refused(real_model: bytes) -> None:
    with pytest.raises(FormatError, match=r"^model\.onnx: graph: a \d+-byte field with \d+ bytes"):
        check_model(real_model[:-100], 6, MAX_ROWS_PER_RUN)


def test_a_singular_field_given_twice_is_refused(real_model: bytes) -> None:
    # protobuf would merge the two graphs into one, silently
    model = onnx.load_from_string(real_model)
    graph = model.graph.SerializeToString()
    with pytest.raises(FormatError, match=r"^model\.onnx: graph: given twice$"):
        check_model(real_model + _field(7, graph), 6, MAX_ROWS_PER_RUN)


def test_a_field_of_the_wrong_wire_type_is_refused(real_model: bytes) -> None:
    with pytest.raises(FormatError, match="varint where a length-delimited value belongs"):
        check_model(_varint(7 << 3) + b"\x01" + real_model, 6, MAX_ROWS_PER_RUN)
