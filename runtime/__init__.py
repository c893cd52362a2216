"""edgebundle device runtime: verify signed bundles and score them.

Depends only on onnxruntime, numpy, cryptography and the standard library.
"""

__version__ = "0.1.0"
