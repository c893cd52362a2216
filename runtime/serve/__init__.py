"""``bundle-runtime serve``: the HTTP server (``server``: start to drain; ``loop``: the
connections' one thread; ``connection``: a client's bytes and deadlines; ``http_request`` and
``http_response``: HTTP/1.1 to and from bytes; ``dispatch`` and ``routing``: a request to its
endpoint; ``config``: its limits), its endpoints (``endpoints``: Open Inference Protocol v2 in
``oip``, MLflow-style ``invocations``, Prometheus ``metrics``), the models it serves and swaps
(``serving``), and sampled data capture (``capture``)."""
