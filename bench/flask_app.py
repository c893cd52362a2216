"""The usual baseline: a Flask + XGBoost server written the way data scientists write one.

Load the Booster, build a DMatrix per request, predict, jsonify. ``python -m bench.flask_app
MODEL PORT`` serves ``POST /predict`` with ``{"instances": [[...], ...]}``.
"""

from __future__ import annotations

import sys

import numpy as np
import xgboost as xgb
from flask import Flask, Response, jsonify, request

app = Flask(__name__)
booster = xgb.Booster()


@app.route("/predict", methods=["POST"])
def predict() -> Response:
    rows = request.get_json()["instances"]
    dmatrix = xgb.DMatrix(np.array(rows, dtype=float))
    return jsonify({"predictions": booster.predict(dmatrix).tolist()})


if __name__ == "__main__":
    booster.load_model(sys.argv[1])
    print(f"serving on http://127.0.0.1:{sys.argv[2]}", flush=True)
    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
