"""The compiled anchors: a plain C walk over an XGBoost model's trees, called from Python, and
tl2cgen's generated C (where it installs: the ``bench`` extra).

Built at bench time only (gcc, ctypes); the runtime never loads it. The model's trees are
flattened into arrays (child indices, feature, threshold, default direction, leaf value) and
one generic loop walks them, as a hand-written C scorer would: no per-model code generation,
no SIMD. A row goes left where its value is below the threshold (float32 compare, as XGBoost
does) and follows the default direction where it is missing. The transform (sigmoid, softmax)
is done in C too, so the call returns what ``Model.predict`` returns. The base margin is
taken from XGBoost itself (its margin minus the trees' sum on one row) and every anchor is
checked against XGBoost on a batch of rows before it is timed.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* Trees share flat arrays; tree t starts at node roots[t] and adds to class classes[t]. */
typedef struct {
    int64_t features, trees, k, transform;
    const int32_t *roots, *classes, *left, *right, *feature;
    const float *threshold;
    const uint8_t *default_left;
    const float *value;
    const double *base;
} Model;

void walk(const Model *m, const float *x, int64_t rows, float *out) {
    int64_t features = m->features, trees = m->trees, k = m->k;
    int transform = (int)m->transform;
    const int32_t *roots = m->roots, *classes = m->classes, *left = m->left, *right = m->right;
    const int32_t *feature = m->feature;
    const float *threshold = m->threshold, *value = m->value;
    const uint8_t *default_left = m->default_left;
    const double *base = m->base;
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * features;
        double margin[64];
        for (int64_t c = 0; c < k; c++) margin[c] = base[c];
        for (int64_t t = 0; t < trees; t++) {
            int32_t n = roots[t];
            while (left[n] >= 0) {
                float v = row[feature[n]];
                n = isnan(v) ? (default_left[n] ? left[n] : right[n])
                             : (v < threshold[n] ? left[n] : right[n]);
            }
            margin[classes[t]] += value[n];
        }
        float *o = out + r * k;
        if (transform == 1) {
            o[0] = (float)(1.0 / (1.0 + exp(-margin[0])));
        } else if (transform == 2) {
            double top = margin[0], sum = 0;
            for (int64_t c = 1; c < k; c++) if (margin[c] > top) top = margin[c];
            for (int64_t c = 0; c < k; c++) sum += exp(margin[c] - top);
            for (int64_t c = 0; c < k; c++) o[c] = (float)(exp(margin[c] - top) / sum);
        } else {
            for (int64_t c = 0; c < k; c++) o[c] = (float)margin[c];
        }
    }
}
"""


class _Model(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("features", "trees", "k", "transform")] + [
        (name, ctypes.c_void_p)
        for name in ("roots", "classes", "left", "right", "feature", "threshold",
                     "default_left", "value", "base")
    ]


def compile_walk(work: Path) -> Path:
    """The shared library, compiled once per bench run with the system's gcc."""
    source, library = work / "walk.c", work / "walk.so"
    source.write_text(_SOURCE)
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source), "-lm"], check=True
    )
    return library


class CWalk:
    """An XGBoost model as flat arrays, scored by the compiled walk: ``predict(x)``."""

    def __init__(self, library: Path, model: Path) -> None:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(model))
        document = json.loads(booster.save_raw("json"))
        learner = document["learner"]
        trees = learner["gradient_booster"]["model"]["trees"]
        info = learner["gradient_booster"]["model"]["tree_info"]
        objective = learner["objective"]["name"]
        self.k = max(1, int(learner["learner_model_param"]["num_class"]))
        self._transform = {"binary:logistic": 1, "multi:softprob": 2}.get(objective, 0)
        arrays: dict[str, list[Any]] = {n: [] for n in ("l", "r", "f", "t", "d", "v")}
        roots = []
        for tree in trees:
            offset = len(arrays["l"])
            roots.append(offset)
            left, right = tree["left_children"], tree["right_children"]
            arrays["l"] += [c + offset if c >= 0 else -1 for c in left]
            arrays["r"] += [c + offset if c >= 0 else -1 for c in right]
            arrays["f"] += tree["split_indices"]
            arrays["t"] += tree["split_conditions"]  # a leaf's value where it is a leaf
            arrays["d"] += tree["default_left"]
            arrays["v"] += tree["split_conditions"]
        self._keep: list[np.ndarray] = [
            np.ascontiguousarray(roots, np.int32),
            np.ascontiguousarray(info, np.int32),
            np.ascontiguousarray(arrays["l"], np.int32),
            np.ascontiguousarray(arrays["r"], np.int32),
            np.ascontiguousarray(arrays["f"], np.int32),
            np.ascontiguousarray(arrays["t"], np.float32),
            np.ascontiguousarray(arrays["d"], np.uint8),
            np.ascontiguousarray(arrays["v"], np.float32),
        ]
        self._trees = len(trees)
        self._features = int(learner["learner_model_param"]["num_feature"])
        self._base = np.zeros(self.k, np.float64)
        self._walk = ctypes.CDLL(str(library)).walk
        self._walk.restype = None
        self._walk.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
        # One struct of the model's fixed arguments: the call converts four, not sixteen.
        self._model = _Model(self._features, self._trees, self.k, 0,
                             *(a.ctypes.data for a in self._keep), self._base.ctypes.data)
        self._model_pointer = ctypes.addressof(self._model)
        self._calibrate(booster)
        self._model.transform = self._transform

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.k), np.float32)
        self._walk(self._model_pointer, x.__array_interface__["data"][0], x.shape[0],
                   out.__array_interface__["data"][0])
        return out[:, 0] if self.k == 1 else out

    def _calibrate(self, booster: Any) -> None:
        """The base margin, from XGBoost's own margin on a row of zeros."""
        import xgboost as xgb

        zeros = np.zeros((1, self._features), np.float32)
        want = booster.predict(xgb.DMatrix(zeros), output_margin=True).reshape(-1)
        self._base[:] = want - self.predict(zeros).reshape(-1)  # transform 0: margins

    def check(self, booster_path: Path, x: np.ndarray) -> float:
        """The largest difference from XGBoost's predictions on ``x``."""
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(booster_path))
        want = booster.predict(xgb.DMatrix(x, missing=np.nan))
        return float(np.max(np.abs(self.predict(x) - want)))


def c_walk_loader(library: Path) -> Callable[[Path, int], Callable[[np.ndarray], Any]]:
    def load(model: Path, threads: int) -> Callable[[np.ndarray], Any]:
        del threads  # the walk is single-threaded, as the runtime's default
        return CWalk(library, model).predict

    return load


def compile_tl2cgen(model: Path, work: Path) -> Path | None:
    """tl2cgen's shared library of ``model`` (per-model generated C, gcc), or None where
    tl2cgen cannot be had. m2cgen, the other code generator, is not an anchor: 0.10 (its latest)
    reads no XGBoost 3 model (it takes ``base_score`` from the wrapper, which is None now)."""
    try:
        import tl2cgen
        import treelite
    except ImportError:
        return None
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model))
    library = work / f"{model.stem}-tl2cgen.so"
    # One source file per ~25 trees: gcc -O3 on one file of 1000 deep trees ran for over 13
    # minutes and 1.4 GB here; split in 40 it takes 14 s.
    files = max(1, booster.num_boosted_rounds() // 25)
    tl2cgen.export_lib(
        treelite.frontend.from_xgboost(booster),
        toolchain="gcc",
        libpath=str(library),
        params={"parallel_comp": files},
        nthread=os.cpu_count() or 1,
    )
    return library


def tl2cgen_loader(library: Path, threads: int) -> Callable[[np.ndarray], Any]:
    """tl2cgen's own Python entry point, as its users call it: a DMatrix per call."""
    import tl2cgen

    predictor = tl2cgen.Predictor(str(library), nthread=threads)
    return lambda x: predictor.predict(tl2cgen.DMatrix(x))
