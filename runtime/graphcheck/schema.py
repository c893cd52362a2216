"""What of onnx.proto (onnx/onnx.proto) edgebundle's emitters write: the fields the reader may
meet, and the tensor element types."""

from __future__ import annotations

from edgebundle.runtime.graphcheck.protowire import Field, Kind, Schema

WHAT = "model.onnx"  # the file every refusal names

FLOAT32 = 1
INT64 = 7
BOOL = 9
# onnx TensorProto.DataType: (name, bytes per element) of the element types edgebundle writes
DTYPES = {
    FLOAT32: ("float32", 4),
    2: ("uint8", 1),
    3: ("int8", 1),
    4: ("uint16", 2),
    5: ("int16", 2),
    6: ("int32", 4),
    INT64: ("int64", 8),
    BOOL: ("bool", 1),
}
EXTERNAL = 1  # TensorProto.DataLocation

# Per message, the fields the emitters write: the reader refuses any other. "Unread" fields are
# ones this check needs nothing from: free text, and the number lists of a tree ensemble's
# attributes (onnxruntime validates those).
_STRING_PAIR = {1: Field("key", Kind.STRING), 2: Field("value", Kind.STRING)}
SCHEMA: Schema = {
    "ModelProto": {
        1: Field("ir_version", Kind.UNREAD),
        2: Field("producer_name", Kind.UNREAD),
        3: Field("producer_version", Kind.UNREAD),
        4: Field("domain", Kind.UNREAD),
        5: Field("model_version", Kind.UNREAD),
        6: Field("doc_string", Kind.UNREAD),
        7: Field("graph", Kind.MESSAGE, message="GraphProto"),
        8: Field("opset_import", Kind.MESSAGE, repeated=True, message="OperatorSetIdProto"),
        14: Field("metadata_props", Kind.UNREAD, repeated=True),
    },
    "OperatorSetIdProto": {1: Field("domain", Kind.STRING), 2: Field("version", Kind.INT)},
    "GraphProto": {
        1: Field("node", Kind.MESSAGE, repeated=True, message="NodeProto"),
        2: Field("name", Kind.UNREAD),
        5: Field("initializer", Kind.MESSAGE, repeated=True, message="TensorProto"),
        10: Field("doc_string", Kind.UNREAD),
        11: Field("input", Kind.MESSAGE, repeated=True, message="ValueInfoProto"),
        12: Field("output", Kind.MESSAGE, repeated=True, message="ValueInfoProto"),
    },
    "NodeProto": {
        1: Field("input", Kind.STRING, repeated=True),
        2: Field("output", Kind.STRING, repeated=True),
        3: Field("name", Kind.STRING),
        4: Field("op_type", Kind.STRING),
        5: Field("attribute", Kind.MESSAGE, repeated=True, message="AttributeProto"),
        6: Field("doc_string", Kind.UNREAD),
        7: Field("domain", Kind.STRING),
    },
    "AttributeProto": {
        1: Field("name", Kind.STRING),
        2: Field("f", Kind.UNREAD),
        3: Field("i", Kind.INT),
        4: Field("s", Kind.UNREAD),
        5: Field("t", Kind.MESSAGE, message="TensorProto"),
        # Read only to be refused by name: a graph-valued attribute is a subgraph.
        6: Field("g", Kind.BYTES),
        7: Field("floats", Kind.UNREAD, repeated=True),
        8: Field("ints", Kind.COUNT),  # a tree ensemble's sizes are how long its lists are
        9: Field("strings", Kind.UNREAD, repeated=True),
        11: Field("graphs", Kind.BYTES, repeated=True),
        13: Field("doc_string", Kind.UNREAD),
        20: Field("type", Kind.UNREAD),
    },
    "TensorProto": {
        1: Field("dims", Kind.INTS),
        2: Field("data_type", Kind.INT),
        8: Field("name", Kind.STRING),
        9: Field("raw_data", Kind.BYTES),
        12: Field("doc_string", Kind.UNREAD),
        # Read only to be refused by name, with the file it points at.
        13: Field("external_data", Kind.MESSAGE, repeated=True, message="StringStringEntryProto"),
        14: Field("data_location", Kind.INT),
    },
    "StringStringEntryProto": _STRING_PAIR,
    "ValueInfoProto": {
        1: Field("name", Kind.STRING),
        2: Field("type", Kind.MESSAGE, message="TypeProto"),
        3: Field("doc_string", Kind.UNREAD),
    },
    "TypeProto": {
        1: Field("tensor_type", Kind.MESSAGE, message="TypeProto.Tensor"),
        6: Field("denotation", Kind.UNREAD),
    },
    "TypeProto.Tensor": {
        1: Field("elem_type", Kind.INT),
        2: Field("shape", Kind.MESSAGE, message="TensorShapeProto"),
    },
    "TensorShapeProto": {
        1: Field("dim", Kind.MESSAGE, repeated=True, message="TensorShapeProto.Dimension"),
    },
    "TensorShapeProto.Dimension": {
        1: Field("dim_value", Kind.INT),
        2: Field("dim_param", Kind.STRING),
        3: Field("denotation", Kind.UNREAD),
    },
}
