"""``bundle drift``: a device's drift report read as a verdict, a table and an HTML page.

The report is what a device answers on ``GET /v2/models/{name}/stats`` (``runtime.monitor``).
Everything here is pure: ``analysis`` picks a window and ranks the features, and the
formatters (``text``, ``summary`` for JSON, ``page`` with ``chart``'s SVG for HTML, all
writing numbers as ``formats`` does) return text, HTML or a dict; the CLI does the reading,
printing and writing. PSI, p-values, verdicts and the missing-rate shift come from the
device's report (``runtime.monitor``), so that workstation and device never disagree.

Feature and model names come from the device and are untrusted: the HTML escapes every one,
the text replaces control characters so a name cannot drive the terminal.
"""

# The report's two windows: "recent" (the last rows) and "since_start" (since the model loaded).
WINDOWS = ("recent", "since_start")
