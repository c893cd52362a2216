"""XGBoost model → ONNX: ``load`` (into the IR of ``ir``, refusing what is unsupported), the
emitters ``emit_float`` and ``emit_int8`` over the ``graph`` contract, ``link`` (each
objective's output in-graph, per ``objectives``), and ``check`` (parity with XGBoost)."""
