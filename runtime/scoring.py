"""One scorer for stdin, HTTP and the install-time selftest: an onnxruntime session on the bundle.

The graph contract: one input ``"input"`` float32 ``[N, F]`` with NaN for missing
values, and one graph output per manifest ``OutputSpec`` carrying the same name, element type
and rank. It is checked once at load, so a bundle that would score wrongly is refused before
the first row rather than failing on every row. Even earlier, ``runtime.graphcheck`` reads the
model itself and refuses a graph edgebundle would not have built, or one that could outgrow
its memory budget: onnxruntime never parses those.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edgebundle.runtime.errors import CompatibilityError, InputError
from edgebundle.runtime.graphcheck import (
    INPUT_NAME as INPUT_NAME,  # re-exported: runtime.serve.oip reads it
)
from edgebundle.runtime.graphcheck import check_model
from edgebundle.runtime.graphcheck.shapes import ROWS, Shape, fixed
from edgebundle.runtime.manifest import OutputSpec
from edgebundle.runtime.memory import return_freed_memory
from edgebundle.runtime.rows.categories import CategoryNames, category_names

if TYPE_CHECKING:
    from edgebundle.runtime.bundle import VerifiedBundle

DEFAULT_THREADS = 1  # see Scorer
# The int8 graph's intermediates grow with rows × trees (~23 KB per row for 1000 trees), so
# large batches are scored in slices to keep a 256 MB device's peak memory bounded; 512-row
# slices also stay in the CPU caches better (10k rows: 456 → 405 ms, 1000 trees, vs 1024).
MAX_ROWS_PER_RUN = 512
_ORT_TYPES = {"float32": "tensor(float)", "int64": "tensor(int64)"}
_FLOAT32 = np.dtype(np.float32)
_NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "int64": np.dtype(np.int64),
}


class Scorer:
    """A loaded model: ``predict`` maps float32 ``[N, F]`` rows to one array per output.

    Thread-safe: the only state is the session, whose ``run`` onnxruntime allows concurrently.

    ``threads`` is onnxruntime's intra-op thread count (0: its own choice, one per core). The
    default is 1 because with more threads the tree ensemble kernels split the sum over trees
    differently for different batch sizes, so the same row could score a last bit differently
    alone than in a batch; with 1 thread an answer never depends on what arrived with it.
    """

    def __init__(
        self,
        model_bytes: bytes,
        features: Sequence[str],
        outputs: Sequence[OutputSpec],
        threads: int = DEFAULT_THREADS,
        category_names: CategoryNames = (),
    ) -> None:
        if threads < 0:
            raise ValueError("threads must be >= 0 (0 = onnxruntime's default)")
        self.features = tuple(features)
        self.outputs = tuple(outputs)
        # what input rows may name categories by (rows/categories.py)
        self.category_names = category_names
        self._output_names = [spec.name for spec in self.outputs]
        self._first_name = self._output_names[:1]
        # A signed model can still be hostile: onnxruntime sees it only once this passes.
        shapes = check_model(model_bytes, len(self.features), MAX_ROWS_PER_RUN)
        self._session = _open_session(model_bytes, threads)
        _check_input(self._session, len(self.features))
        _check_outputs(self._session, self.outputs)
        # check_model's shapes are exact (it refuses where it cannot tell): when they are the
        # manifest's, every result has its promised shape and none is checked per call.
        self._fast_path = all(
            _exact_shape(shapes.get(spec.name), spec.shape) for spec in self.outputs
        )
        self._row_shape = (len(self.features),)
        self._session_run = _run_function(self._session)

    @classmethod
    def from_bundle(cls, bundle: VerifiedBundle, threads: int = DEFAULT_THREADS) -> Scorer:
        manifest = bundle.manifest
        check_onnxruntime(manifest.requirements.onnxruntime, ort.__version__)
        features = [feature.name for feature in manifest.inputs.features]
        names = category_names(manifest.inputs.features)
        return cls(bundle.files["model.onnx"], features, manifest.outputs, threads, names)

    @property
    def num_features(self) -> int:
        return len(self.features)

    def predict(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        """Score ``x`` (float32 ``[N, F]``, NaN = missing); keys follow the manifest's outputs."""
        # The common case (one request, one stdin batch) costs one test and one session call:
        # the identity test stands for ``dtype == float32`` (a byte-swapped float32 is not
        # the same object and takes the checked path), the shape test for rank and width.
        if x.dtype is _FLOAT32 and x.shape[1:] == self._row_shape and self._fast_path:
            n = x.shape[0]
            if 0 < n <= MAX_ROWS_PER_RUN:
                return dict(zip(self._output_names, self._run(x, self._output_names), strict=True))
        return self._predict_checked(x)

    def predict_first(self, x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        """``predict(x)``'s first output alone: what ``Model.predict`` returns, asked of the
        session alone on the fast path (no dict of the other outputs is built)."""
        if x.dtype is _FLOAT32 and x.shape[1:] == self._row_shape and self._fast_path:
            n = x.shape[0]
            if 0 < n <= MAX_ROWS_PER_RUN:
                return self._run(x, self._first_name)[0]
        return self.predict(x)[self._output_names[0]]

    def _predict_checked(self, x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        if x.dtype != np.float32:
            raise InputError(f"input must be float32, got {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise InputError(f"input must have shape [N, {self.num_features}], got {list(x.shape)}")
        n = x.shape[0]
        if n == 0:
            # Tree-ensemble kernels are not required to accept empty batches; none is needed.
            return {spec.name: _empty(spec) for spec in self.outputs}
        chunks = [
            self._run(x[i : i + MAX_ROWS_PER_RUN], self._output_names)
            for i in range(0, n, MAX_ROWS_PER_RUN)
        ]
        if len(chunks) > 1:
            # glibc keeps the slices' freed intermediates mapped (65 MB after 10k rows, 1000
            # trees); handing them back costs 1-3 ms, a few percent of scoring such a batch.
            return_freed_memory()
        scored = {
            name: chunks[0][k] if len(chunks) == 1 else np.concatenate([c[k] for c in chunks])
            for k, name in enumerate(self._output_names)
        }
        for spec in self.outputs:
            _check_result(spec, scored[spec.name], n)
        return scored

    def _run(self, x: npt.NDArray[np.float32], names: list[str]) -> list[npt.NDArray[Any]]:
        # onnxruntime copies a non-contiguous array itself (tested), so none is made here.
        try:
            results: list[npt.NDArray[Any]] = self._session_run(names, {INPUT_NAME: x}, None)
        except Exception as e:  # onnxruntime's errors share no base class below Exception
            raise CompatibilityError(f"onnxruntime failed to score: {_first_line(e)}") from None
        return results


def check_onnxruntime(required: str, installed: str) -> None:
    """Refuse a bundle built for a newer onnxruntime than this device has, in words, before
    onnxruntime fails on an unknown kernel."""
    # Debian's onnxruntime calls itself "1.21": a missing part counts as 0, as in "1.21.0".
    have = _release(re.findall(r"\d+", installed))
    need = _release(required.split("."))
    if have < need:
        raise CompatibilityError(
            f"the bundle needs onnxruntime >= {required}; this device has {installed}"
        )


def _release(parts: list[str]) -> tuple[int, int, int]:
    major, minor, micro = ([int(part) for part in parts[:3]] + [0, 0, 0])[:3]
    return major, minor, micro


def _open_session(model_bytes: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Rows are batched by the caller; a second thread pool would only add contention.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # onnxruntime's memory arena keeps the peak of every run for the process's lifetime: one
    # 10k-row batch left the 1000-tree int8 model at 54 MB resident instead of 18. Plain malloc
    # hands it back, and single rows score ~9% faster without the arena's bookkeeping.
    options.enable_cpu_mem_arena = False
    # Failures surface as exceptions; onnxruntime's own log lines (errors too: it logs a
    # failing node before raising) would only clutter stderr, where the CLI promises one line
    # per problem.
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime's errors share no base class below Exception
        raise CompatibilityError(f"onnxruntime cannot load the model: {_first_line(e)}") from None
    return_freed_memory()
    return session


def _check_input(session: ort.InferenceSession, num_features: int) -> None:
    [arg] = session.get_inputs()  # named INPUT_NAME: check_model refuses any other
    if arg.type != _ORT_TYPES["float32"]:
        raise CompatibilityError(f"model input {INPUT_NAME!r} must be float32, is {arg.type}")
    if not _shape_matches(arg.shape, (-1, num_features)):
        raise CompatibilityError(
            f"model input {INPUT_NAME!r} has shape {arg.shape}, "
            f"the manifest lists {num_features} features"
        )


_Run = Callable[[list[str], dict[str, npt.NDArray[np.float32]], Any], list[npt.NDArray[Any]]]


def _run_function(session: ort.InferenceSession) -> _Run:
    """The session's run, without the wrapper's per-call checks where it has them apart.

    ``InferenceSession.run`` checks that every input is fed, that no OrtValue belongs to
    another session, and retries on a failed execution provider before it calls the native
    session: ~1.5 µs of a 4 µs run of a small model. Our one input is always fed as a numpy
    array, and the CPU provider has no fallback, so none of it applies. The native session is
    a private attribute: where a future onnxruntime has no such attribute, the public run it is.
    """
    native = getattr(session, "_sess", None)
    run = getattr(native, "run", None)
    return run if callable(run) else session.run  # type: ignore[no-any-return]


def _check_outputs(session: ort.InferenceSession, specs: Sequence[OutputSpec]) -> None:
    graph = {arg.name: arg for arg in session.get_outputs()}
    expected = [spec.name for spec in specs]
    if sorted(graph) != sorted(expected):
        raise CompatibilityError(
            f"model outputs {sorted(graph)} do not match the manifest's {sorted(expected)}"
        )
    for spec in specs:
        arg = graph[spec.name]
        if arg.type != _ORT_TYPES[spec.dtype]:
            raise CompatibilityError(
                f"model output {spec.name!r} is {arg.type}, the manifest says {spec.dtype}"
            )
        if not _shape_matches(arg.shape, spec.shape):
            raise CompatibilityError(
                f"model output {spec.name!r} has shape {arg.shape}, "
                f"the manifest says {list(spec.shape)}"
            )


def _exact_shape(shape: Shape | None, spec_shape: Sequence[int]) -> bool:
    """Whether ``shape`` (N rows by fixed sizes) is ``spec_shape`` for every batch size N."""
    if shape is None or len(shape) != len(spec_shape):
        return False
    return all(
        dim == (ROWS if want == -1 else fixed(want))
        for dim, want in zip(shape, spec_shape, strict=True)
    )


def _shape_matches(graph_shape: object, spec_shape: Sequence[int]) -> bool:
    """Same rank, and equal wherever both sides are fixed (-1 and symbolic dims match anything).

    onnxruntime reports an unknown rank as ``[]``; that passes here and ``_check_result``
    checks the arrays the session returns instead (a spec always has rank >= 1).
    """
    if not isinstance(graph_shape, list) or not graph_shape:
        return True
    if len(graph_shape) != len(spec_shape):
        return False
    return all(
        not isinstance(dim, int) or want == -1 or dim == want
        for dim, want in zip(graph_shape, spec_shape, strict=True)
    )


def _check_result(spec: OutputSpec, value: object, n: int) -> None:
    expected = (n, *spec.shape[1:])
    if not isinstance(value, np.ndarray):
        raise CompatibilityError(f"model output {spec.name!r} is not a tensor")
    if value.dtype != _NUMPY_TYPES[spec.dtype] or value.shape != expected:
        raise CompatibilityError(
            f"model output {spec.name!r} came back as {value.dtype} {list(value.shape)}, "
            f"expected {spec.dtype} {list(expected)}"
        )


def _empty(spec: OutputSpec) -> npt.NDArray[Any]:
    return np.zeros((0, *spec.shape[1:]), dtype=_NUMPY_TYPES[spec.dtype])


# onnxruntime prefixes its messages with a status code and often the C++ source location and
# function signature; the user needs only what follows.
_ORT_NOISE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (?:\S+:\d+ [^(]*\([^)]*\) )?")


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return _ORT_NOISE.sub("", lines[0]) if lines else type(error).__name__


def to_records(outputs: Mapping[str, npt.NDArray[Any]]) -> list[dict[str, object]]:
    """One ``{output name: value}`` dict per row, ready for JSON or CSV.

    float32 values become the Python float whose repr is the shortest decimal that reads back
    as the same float32, so ``0.1f`` is written ``0.1``, not ``0.10000000149011612``.
    Non-finite floats become ``None``: JSON has no spelling for them. Integers become ``int``
    and ``[N, C]`` outputs become lists.
    """
    columns = {name: to_python(value) for name, value in outputs.items()}
    rows = len(next(iter(columns.values()), []))
    return [{name: column[i] for name, column in columns.items()} for i in range(rows)]


# Up to this many values, rendering one at a time beats numpy's per-call overhead (a
# single-row answer: ~3 µs instead of ~30 µs).
_FEW_VALUES = 16


def to_python(value: npt.NDArray[Any]) -> list[Any]:
    """``value.tolist()``, with float32 rendered as in ``to_records`` (non-finite as ``None``)."""
    if value.dtype != np.float32:
        return value.tolist()  # type: ignore[no-any-return]
    if value.size <= _FEW_VALUES:
        flat = [_shortest_float(v) for v in value.reshape(-1)]
        if value.ndim == 1:
            return flat
        return np.array(flat, dtype=object).reshape(value.shape).tolist()  # type: ignore[no-any-return]
    rendered = _shortest_floats(value.reshape(-1)).reshape(value.shape).astype(object)
    rendered[~np.isfinite(value)] = None
    return rendered.tolist()  # type: ignore[no-any-return]


def _shortest_float(value: np.float32) -> float | None:
    """``_shortest_floats`` for one value."""
    if not np.isfinite(value):
        return None
    shortest = float(str(value))
    return shortest if np.float32(shortest) == value else float(value)


def _shortest_floats(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    # numpy (>= 1.14) formats float32 with the shortest digits that uniquely identify it
    # (Dragon4). Reading those digits as float64 gives a double whose repr is the same short
    # text. Verifying the round trip makes this exact whatever the numpy version or its print
    # options; a value that fails keeps its exact float64 widening, which always round-trips.
    shortest = values.astype(str).astype(np.float64)
    same = (shortest.astype(np.float32) == values) | ~np.isfinite(values)
    return np.where(same, shortest, values.astype(np.float64))
