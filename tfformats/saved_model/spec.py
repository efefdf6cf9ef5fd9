"""SavedModel spec decoding: the directory's file names, signatures
(TensorInfo), function argument specs (StructuredValue: TensorSpec, TypeSpec,
named tuples), concrete functions and keras_metadata.pb."""

from __future__ import annotations

import os
from collections import namedtuple
from typing import Any

from .. import dtypes, limits, protos, wire
from ..errors import UnsupportedError
from ..fingerprint import FINGERPRINT_FILENAME as FINGERPRINT  # noqa: F401
from ..graph import (SAVED_MODEL_CPB, SAVED_MODEL_PB, SAVED_MODEL_PBTXT,  # noqa: F401
                     parse_message)
from ..tensor_proto import to_numpy
from ..dtypes import DType

# --- the directory layout -------------------------------------------------------------

VARIABLES_DIR = "variables"
VARIABLES_PREFIX = os.path.join(VARIABLES_DIR, "variables")
ASSETS_DIR = "assets"
ASSETS_EXTRA_DIR = "assets.extra"
KERAS_METADATA = "keras_metadata.pb"
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
SIGNATURES_CHILD = "signatures"

_DATA_TYPE = protos.POOL.FindEnumTypeByName("tfformats.DataType")
_TYPE_SPEC_CLASS = protos.POOL.FindEnumTypeByName("tfformats.TypeSpecProto.TypeSpecClass")
_KerasVersionDef = protos.message_class("tfformats.keras.VersionDef")


def dtype_enum_name(enum: int) -> str:
    """"DT_FLOAT" for 1: the DataType name saved_model_cli prints."""
    value = _DATA_TYPE.values_by_number.get(enum)
    return value.name if value is not None else f"DT_UNKNOWN_{enum}"


def shape_from_proto(shape_proto: Any) -> list[int | None] | None:
    """None for unknown rank, else a list with None for unknown dimensions."""
    if shape_proto.unknown_rank:
        return None
    return [None if d.size < 0 else d.size for d in shape_proto.dim]


def dtype_or_none(enum: int) -> DType | None:
    if enum == 0:
        return None
    try:
        return dtypes.from_enum(enum)
    except UnsupportedError:
        return None


# --- signatures ----------------------------------------------------------------

class TensorInfo:
    """One signature input or output.

    `key` is its name in the signature, `dtype` a tfformats DType (None for
    DT_INVALID), `dtype_name` the enum name ("DT_FLOAT"), `shape` a list with
    None for unknown dimensions or None for unknown rank, `tensor_name` the
    graph tensor ("serving_default_x:0"; None unless `encoding == "name"`).
    `encoding` is "name", "coo_sparse" or "composite_tensor"; for coo_sparse
    `components` is {"values": .., "indices": .., "dense_shape": ..} tensor
    names, for composite_tensor a list of TensorInfo and `type_spec` the
    decoded TypeSpec.
    """

    components: Any   # a dict or list of components, or None
    type_spec: Any

    __slots__ = ("key", "dtype_enum", "shape", "tensor_name", "encoding", "components",
                 "type_spec", "proto")

    def __init__(self, key: str, proto: Any) -> None:
        self.key = key
        self.proto = proto
        self.dtype_enum = proto.dtype
        self.shape = shape_from_proto(proto.tensor_shape)
        self.encoding = proto.WhichOneof("encoding") or "name"
        self.tensor_name = proto.name if self.encoding == "name" else None
        self.type_spec = None
        if self.encoding == "coo_sparse":
            coo = proto.coo_sparse
            self.components = {"values": coo.values_tensor_name,
                               "indices": coo.indices_tensor_name,
                               "dense_shape": coo.dense_shape_tensor_name}
        elif self.encoding == "composite_tensor":
            self.components = [TensorInfo(f"{key}[{i}]", c)
                               for i, c in enumerate(proto.composite_tensor.components)]
            self.type_spec = _decode_type_spec(proto.composite_tensor.type_spec)
        else:
            self.components = None

    @property
    def dtype(self) -> DType | None:
        return dtype_or_none(self.dtype_enum)

    @property
    def dtype_name(self) -> str:
        return dtype_enum_name(self.dtype_enum)

    def tensor_names(self) -> list[str]:
        """Every graph tensor this input/output refers to."""
        if self.encoding == "name":
            return [self.tensor_name] if self.tensor_name else []
        if self.encoding == "coo_sparse":
            return [n for n in self.components.values() if n]
        return [n for c in self.components for n in c.tensor_names()]

    def __repr__(self):
        where = self.tensor_name if self.encoding == "name" else self.encoding
        return f"TensorInfo({self.key!r}, {self.dtype_name}, shape={self.shape}, {where})"


Signature = namedtuple("Signature", "name method_name inputs outputs defaults")
Signature.__doc__ = """One SignatureDef: `inputs`/`outputs` map names to TensorInfo (sorted
by name); `defaults` maps input names to numpy arrays (TF 2.21 field, usually empty)."""


def decode_signature(name: str, proto: Any) -> Signature:
    return Signature(
        name, proto.method_name,
        {k: TensorInfo(k, proto.inputs[k]) for k in sorted(proto.inputs)},
        {k: TensorInfo(k, proto.outputs[k]) for k in sorted(proto.outputs)},
        {k: to_numpy(proto.defaults[k], f"signature {name!r} default {k!r}")
         for k in sorted(proto.defaults)})


# --- StructuredValue (function argument specs) -----------------------------------

class TensorSpec(namedtuple("TensorSpec", "name shape dtype")):
    """A tf.TensorSpec from a function signature; prints the way TF prints one."""

    __slots__ = ()

    def __repr__(self):
        if self.shape is None:
            shape = "<unknown>"
        else:
            dims = ", ".join("None" if d is None else str(d) for d in self.shape)
            shape = f"({dims},)" if len(self.shape) == 1 else f"({dims})"
        dtype = f"tf.{self.dtype.name}" if self.dtype is not None else "tf.invalid"
        name = "None" if self.name is None else repr(self.name)
        return f"{type(self).__name__}(shape={shape}, dtype={dtype}, name={name})"


class BoundedTensorSpec(TensorSpec):
    """A tf.BoundedTensorSpec (its minimum/maximum are not kept); a TensorSpec otherwise."""

    __slots__ = ()


class TensorShape(list):
    """A tf.TensorShape value of known rank: a list of dims, None for an unknown one."""

    __slots__ = ()


TypeSpec = namedtuple("TypeSpec", "type_spec_class class_name num_flat_components state")
TypeSpec.__doc__ = """A composite tensor's spec (RaggedTensorSpec, SparseTensorSpec, ...)."""
NamedTupleValue = namedtuple("NamedTupleValue", "name fields")


def _decode_type_spec(proto, depth=0):
    cls = _TYPE_SPEC_CLASS.values_by_number.get(proto.type_spec_class)
    return TypeSpec(cls.name if cls else str(proto.type_spec_class), proto.type_spec_class_name,
                    proto.num_flat_components, decode_structure(proto.type_state, depth + 1))


def decode_structure(value: Any, depth: int = 0) -> Any:
    """A StructuredValue as Python: None, numbers, str, lists, tuples, dicts,
    NamedTupleValue, TensorSpec (BoundedTensorSpec), TypeSpec, DType, shapes
    (TensorShape, a list; None for an unknown rank) and numpy arrays.
    Nested deeper than the limit max_proto_depth: LimitError (`depth` is
    this value's own)."""
    limits.check("max_proto_depth", depth, "StructuredValue: nesting depth")
    depth += 1
    kind = value.WhichOneof("kind")
    if kind is None or kind == "none_value":
        return None
    if kind in ("float64_value", "int64_value", "string_value", "bool_value"):
        return getattr(value, kind)
    if kind == "tensor_shape_value":
        dims = shape_from_proto(value.tensor_shape_value)
        return None if dims is None else TensorShape(dims)
    if kind == "tensor_dtype_value":
        return dtype_or_none(value.tensor_dtype_value)
    if kind in ("tensor_spec_value", "bounded_tensor_spec_value"):
        spec = getattr(value, kind)
        cls = TensorSpec if kind == "tensor_spec_value" else BoundedTensorSpec
        return cls(spec.name or None, shape_from_proto(spec.shape), dtype_or_none(spec.dtype))
    if kind == "type_spec_value":
        return _decode_type_spec(value.type_spec_value, depth)
    if kind == "list_value":
        return [decode_structure(v, depth) for v in value.list_value.values]
    if kind == "tuple_value":
        return tuple(decode_structure(v, depth) for v in value.tuple_value.values)
    if kind == "dict_value":
        fields = value.dict_value.fields
        return {k: decode_structure(fields[k], depth) for k in sorted(fields)}
    if kind == "named_tuple_value":
        nt = value.named_tuple_value
        return NamedTupleValue(nt.name, {p.key: decode_structure(p.value, depth)
                                         for p in nt.values})
    if kind in ("tensor_value", "numpy_value"):
        return to_numpy(getattr(value, kind), "StructuredValue tensor")
    return None


ConcreteFunction = namedtuple("ConcreteFunction", "name args kwargs outputs bound_inputs")
ConcreteFunction.__doc__ = """A saved concrete function: its positional `args` and keyword
`kwargs` specs (TensorSpec or plain Python values, as in TF's structured_input_signature),
its decoded output structure and the object-graph node ids of its captured inputs."""


def decode_concrete_function(name: str, proto: Any) -> ConcreteFunction:
    inputs = decode_structure(proto.canonicalized_input_signature)
    args, kwargs = [], {}
    if isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], dict):
        args, kwargs = list(inputs[0]) if inputs[0] is not None else [], inputs[1]
    elif inputs is not None:
        args = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    return ConcreteFunction(name, args, kwargs, decode_structure(proto.output_signature),
                            list(proto.bound_inputs))


# --- keras_metadata.pb -----------------------------------------------------------------

def parse_keras_metadata(data: bytes, path: str = "keras_metadata.pb") -> Any:
    """A SavedMetadata message; nodes from the older layout (version in field 1)
    get that version copied into `version` (field 6)."""
    metadata = parse_message(protos.SavedMetadata, data, path)
    raw_nodes = [v for num, kind, v in wire.fields(data, path) if num == 1 and kind == 2]
    for node, raw in zip(metadata.nodes, raw_nodes):
        if node.HasField("version"):
            continue
        for num, kind, value in wire.fields(raw, path):
            if num == 1 and kind == 2:
                node.version.CopyFrom(parse_message(_KerasVersionDef, value, path))
    return metadata
