"""``bundle compare``: score two bundles on the same rows through the device's own scorer.

The check before ``bundle publish``: how often the new model's labels agree with the old one's,
how far its predictions move, whether its task metric on labelled rows got better or worse, and
what it costs in bytes and latency. It is a report, not a gate: a worse model is a finding.

``bundles`` verifies, loads and scores both (reading labels with ``labels``); the pure parts
are ``agreement`` (OLD's outputs against NEW's) and ``metrics`` (each against the labels);
``results`` holds what is found and its JSON form, ``text`` the table, both writing numbers as
``display`` does.
"""
