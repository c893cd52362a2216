"""edgebundle device runtime: verify signed bundles and score them.

Depends only on onnxruntime, numpy, cryptography and the standard library.
"""

import os

__version__ = "0.1.0"

# onnxruntime (1.32 here) starts its telemetry when it is imported: it writes a device id under
# $XDG_CACHE_HOME or ~/.cache, warns on stderr when that is not writable (a service user's
# HOME often is not), and uploads events. Its Privacy.md documents ORT_DISABLE_TELEMETRY=1,
# read before onnxruntime initializes, as turning all of that off; every import of onnxruntime
# in edgebundle comes after this package's. An operator who sets the variable keeps their value.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
