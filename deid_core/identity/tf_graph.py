"""Minimal reader of a frozen TensorFlow ``GraphDef`` (.pb) without TensorFlow.

The message types (GraphDef, NodeDef, AttrValue, TensorProto, TensorShapeProto; field numbers
from tensorflow/core/framework/*.proto) are declared here and parsed with ``google.protobuf``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deid_core.errors import DeidError

_MESSAGES = None
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_, 4: np.uint8}


def _messages():
    global _MESSAGES
    if _MESSAGES is not None:
        return _MESSAGES
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # optional (onnx's)
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="deid_tf_graph.proto", package="deidtf", syntax="proto3")

    def msg(name, fields, nested=()):
        m = fdp.message_type.add(name=name)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        return m

    O, R = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg("Dim", [("size", 1, F.TYPE_INT64, O, None), ("name", 2, F.TYPE_STRING, O, None)])
    msg("TensorShapeProto", [("dim", 2, F.TYPE_MESSAGE, R, ".deidtf.Dim"),
                             ("unknown_rank", 3, F.TYPE_BOOL, O, None)])
    msg("TensorProto", [("dtype", 1, F.TYPE_INT32, O, None),
                        ("tensor_shape", 2, F.TYPE_MESSAGE, O, ".deidtf.TensorShapeProto"),
                        ("version_number", 3, F.TYPE_INT32, O, None),
                        ("tensor_content", 4, F.TYPE_BYTES, O, None),
                        ("float_val", 5, F.TYPE_FLOAT, R, None),
                        ("double_val", 6, F.TYPE_DOUBLE, R, None),
                        ("int_val", 7, F.TYPE_INT32, R, None),
                        ("string_val", 8, F.TYPE_BYTES, R, None),
                        ("int64_val", 10, F.TYPE_INT64, R, None),
                        ("bool_val", 11, F.TYPE_BOOL, R, None)])
    msg("ListValue", [("s", 2, F.TYPE_BYTES, R, None), ("i", 3, F.TYPE_INT64, R, None),
                      ("f", 4, F.TYPE_FLOAT, R, None), ("b", 5, F.TYPE_BOOL, R, None),
                      ("type", 6, F.TYPE_INT32, R, None),
                      ("shape", 7, F.TYPE_MESSAGE, R, ".deidtf.TensorShapeProto"),
                      ("tensor", 8, F.TYPE_MESSAGE, R, ".deidtf.TensorProto")])
    msg("AttrValue", [("list", 1, F.TYPE_MESSAGE, O, ".deidtf.ListValue"), ("s", 2, F.TYPE_BYTES, O, None),
                      ("i", 3, F.TYPE_INT64, O, None), ("f", 4, F.TYPE_FLOAT, O, None),
                      ("b", 5, F.TYPE_BOOL, O, None), ("type", 6, F.TYPE_INT32, O, None),
                      ("shape", 7, F.TYPE_MESSAGE, O, ".deidtf.TensorShapeProto"),
                      ("tensor", 8, F.TYPE_MESSAGE, O, ".deidtf.TensorProto"),
                      ("placeholder", 9, F.TYPE_STRING, O, None)])
    entry = descriptor_pb2.DescriptorProto(name="AttrEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=O)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=O, type_name=".deidtf.AttrValue")
    msg("NodeDef", [("name", 1, F.TYPE_STRING, O, None), ("op", 2, F.TYPE_STRING, O, None),
                    ("input", 3, F.TYPE_STRING, R, None), ("device", 4, F.TYPE_STRING, O, None),
                    ("attr", 5, F.TYPE_MESSAGE, R, ".deidtf.NodeDef.AttrEntry")], nested=[entry])
    msg("GraphDef", [("node", 1, F.TYPE_MESSAGE, R, ".deidtf.NodeDef"), ("version", 3, F.TYPE_INT32, O, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    _MESSAGES = {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"deidtf.{n}"))
                 for n in ("GraphDef", "NodeDef", "TensorProto")}
    return _MESSAGES


def read_graph(path: Path):
    """Parse a frozen GraphDef file; returns the message (``.node`` is the list of NodeDef)."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"TensorFlow graph not found: {path}")
    g = _messages()["GraphDef"]()
    try:
        g.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise DeidError(f"{path}: not a TensorFlow GraphDef ({exc})") from exc
    return g


def tensor_value(t) -> np.ndarray:
    """A TensorProto as a numpy array."""
    dtype = _DTYPES.get(t.dtype)
    if dtype is None:
        raise DeidError(f"unsupported TensorProto dtype {t.dtype}")
    shape = [d.size for d in t.tensor_shape.dim]
    if t.tensor_content:
        arr = np.frombuffer(t.tensor_content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:
        vals = {np.float32: t.float_val, np.float64: t.double_val, np.int32: t.int_val,
                np.int64: t.int64_val, np.bool_: t.bool_val, np.uint8: t.int_val}[dtype]
        arr = np.array(list(vals), dtype=dtype)
        if arr.size == 1 and int(np.prod(shape)) > 1:
            arr = np.full(shape, arr[0], dtype=dtype)
    return arr.reshape(shape)


def constants(graph) -> dict[str, np.ndarray]:
    """All ``Const`` nodes by name."""
    return {n.name: tensor_value(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}
