"""The parts of the int8 emitter (``builder/convert/emit_int8.py``): ``codebook`` (split
thresholds as uint8 codes in segments), ``leaves`` (per-tree leaf quantization), the two
layouts ``perfect`` and ``node_array`` (integer tables over the ``tables`` contract), and
``traversal`` (the ONNX graph walking those tables)."""
