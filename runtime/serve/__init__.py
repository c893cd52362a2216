"""``bundle-runtime serve``: the HTTP server (``server``), its endpoints (``endpoints``: Open
Inference Protocol v2 in ``oip``, MLflow-style ``invocations``, Prometheus ``metrics``), the
models it serves and swaps (``serving``), and sampled data capture (``capture``)."""
