"""SavedModel directories: read what `saved_model_cli show --all` shows, edit, save.

`load_saved_model(dir)` parses `saved_model.pb` (or `.pbtxt`) and nothing
else; signatures, the object graph and the rest are decoded on first use, and
`variables/` is opened only when `.variables` is touched.

Names of variables. A TF2 SavedModel stores each variable under a checkpoint
key built from its object path (`layer_with_weights-0/kernel/.ATTRIBUTES/
VARIABLE_VALUE`), while people know it by its TF name (`dense/kernel`, from
`SavedVariable.name`). `SavedModel.variables` accepts all three forms. A TF1
SavedModel (SavedModelBuilder) keys its bundle by TF1 variable names, which
are then the only names.

Editing. `set_variable`, `rename_signature`, `remove_signature` and
`set_tags` record changes on this object; `save(new_dir)` writes a complete
SavedModel (built in a temporary directory, then renamed into place) that
TensorFlow loads: the bundle keeps every key of the original, including the
object graph, with only the edited tensors replaced, and `fingerprint.pb` is
recomputed. A TF1 partitioned variable is edited whole, under its full name
(`part`, not `part/part_0`), and saved with its original partitioning.
"""

import os
from collections import namedtuple
from collections.abc import Mapping

import numpy as np
from google.protobuf import text_format

from . import dtypes, fileio, fingerprint as _fingerprint, protos, slices, wire
from .checkpoint import OBJECT_GRAPH_KEY, CheckpointReader
from .errors import (CheckpointNotFoundError, Finding, FormatError, TensorNotFoundError,
                     TFFormatsError, UnsupportedError)
from .fingerprint import (FINGERPRINT_FILENAME as FINGERPRINT, SAVED_MODEL_CPB, SAVED_MODEL_PB,
                          SAVED_MODEL_PBTXT)
from .graph import parse_message
from .tensor_proto import to_numpy

VARIABLES_DIR = "variables"
VARIABLES_PREFIX = os.path.join(VARIABLES_DIR, "variables")
ASSETS_DIR = "assets"
ASSETS_EXTRA_DIR = "assets.extra"
KERAS_METADATA = "keras_metadata.pb"
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
SIGNATURES_CHILD = "signatures"
_VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

_DATA_TYPE = protos.POOL.FindEnumTypeByName("tfformats.DataType")
_TYPE_SPEC_CLASS = protos.POOL.FindEnumTypeByName("tfformats.TypeSpecProto.TypeSpecClass")
_VariableDef = protos.message_class("tfformats.VariableDef")
_AssetFileDef = protos.message_class("tfformats.AssetFileDef")
_TF1_ASSETS = "saved_model_assets"   # TF1's collection of AssetFileDefs (as Any)
_KerasVersionDef = protos.message_class("tfformats.keras.VersionDef")


def dtype_enum_name(enum):
    """"DT_FLOAT" for 1: the DataType name saved_model_cli prints."""
    value = _DATA_TYPE.values_by_number.get(enum)
    return value.name if value is not None else f"DT_UNKNOWN_{enum}"


def shape_from_proto(shape_proto):
    """None for unknown rank, else a list with None for unknown dimensions."""
    if shape_proto.unknown_rank:
        return None
    return [None if d.size < 0 else d.size for d in shape_proto.dim]


def _dtype_or_none(enum):
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

    __slots__ = ("key", "dtype_enum", "shape", "tensor_name", "encoding", "components",
                 "type_spec", "proto")

    def __init__(self, key, proto):
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
    def dtype(self):
        return _dtype_or_none(self.dtype_enum)

    @property
    def dtype_name(self):
        return dtype_enum_name(self.dtype_enum)

    def tensor_names(self):
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


def _signature(name, proto):
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


def _decode_type_spec(proto):
    cls = _TYPE_SPEC_CLASS.values_by_number.get(proto.type_spec_class)
    return TypeSpec(cls.name if cls else str(proto.type_spec_class), proto.type_spec_class_name,
                    proto.num_flat_components, decode_structure(proto.type_state))


def decode_structure(value):
    """A StructuredValue as Python: None, numbers, str, lists, tuples, dicts,
    NamedTupleValue, TensorSpec (BoundedTensorSpec), TypeSpec, DType, shapes
    (TensorShape, a list; None for an unknown rank) and numpy arrays."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "none_value":
        return None
    if kind in ("float64_value", "int64_value", "string_value", "bool_value"):
        return getattr(value, kind)
    if kind == "tensor_shape_value":
        dims = shape_from_proto(value.tensor_shape_value)
        return None if dims is None else TensorShape(dims)
    if kind == "tensor_dtype_value":
        return _dtype_or_none(value.tensor_dtype_value)
    if kind in ("tensor_spec_value", "bounded_tensor_spec_value"):
        spec = getattr(value, kind)
        cls = TensorSpec if kind == "tensor_spec_value" else BoundedTensorSpec
        return cls(spec.name or None, shape_from_proto(spec.shape), _dtype_or_none(spec.dtype))
    if kind == "type_spec_value":
        return _decode_type_spec(value.type_spec_value)
    if kind == "list_value":
        return [decode_structure(v) for v in value.list_value.values]
    if kind == "tuple_value":
        return tuple(decode_structure(v) for v in value.tuple_value.values)
    if kind == "dict_value":
        fields = value.dict_value.fields
        return {k: decode_structure(fields[k]) for k in sorted(fields)}
    if kind == "named_tuple_value":
        nt = value.named_tuple_value
        return NamedTupleValue(nt.name, {p.key: decode_structure(p.value) for p in nt.values})
    if kind in ("tensor_value", "numpy_value"):
        return to_numpy(getattr(value, kind), "StructuredValue tensor")
    return None


ConcreteFunction = namedtuple("ConcreteFunction", "name args kwargs outputs bound_inputs")
ConcreteFunction.__doc__ = """A saved concrete function: its positional `args` and keyword
`kwargs` specs (TensorSpec or plain Python values, as in TF's structured_input_signature),
its decoded output structure and the object-graph node ids of its captured inputs."""


def _concrete_function(name, proto):
    inputs = decode_structure(proto.canonicalized_input_signature)
    args, kwargs = [], {}
    if isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[1], dict):
        args, kwargs = list(inputs[0]) if inputs[0] is not None else [], inputs[1]
    elif inputs is not None:
        args = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    return ConcreteFunction(name, args, kwargs, decode_structure(proto.output_signature),
                            list(proto.bound_inputs))


# --- object graph ------------------------------------------------------------------

VariableInfo = namedtuple("VariableInfo", "name path key dtype shape trainable node_id")
VariableInfo.__doc__ = """A variable of the SavedModel: TF `name` ("dense/kernel"), object
`path` ("layer_with_weights-0/kernel"; None in TF1), bundle `key`, DType, `shape` (None
entries for unknown dims), `trainable`, object-graph `node_id` (None in TF1)."""

Asset = namedtuple("Asset", "filename path exists tensor_name")
Asset.__doc__ = """An asset file: `filename` as recorded, `path` under assets/, whether it
`exists`, and the graph tensor that receives its path at load time."""


class ObjectNode:
    """One SavedObject of the object graph.

    `kind` is the SavedObject kind ("user_object", "variable", "function",
    "bare_concrete_function", "asset", "constant", "resource",
    "captured_tensor"); `children` maps local names to ObjectNode; `path` is
    the shortest object path from the root ("" for the root, None if
    unreachable). Kind-specific: `identifier` (user objects), `variable`
    (VariableInfo), `concrete_functions` (function names), `asset` (Asset),
    `operation` (constants).
    """

    __slots__ = ("node_id", "kind", "path", "children", "proto", "identifier", "variable",
                 "concrete_functions", "asset", "operation")

    def __init__(self, node_id, proto):
        self.node_id = node_id
        self.proto = proto
        self.kind = proto.WhichOneof("kind")
        self.path = None
        self.children = {}
        self.identifier = proto.user_object.identifier if self.kind == "user_object" else None
        self.variable = None
        self.asset = None
        if self.kind == "function":
            self.concrete_functions = list(proto.function.concrete_functions)
        elif self.kind == "bare_concrete_function":
            self.concrete_functions = [proto.bare_concrete_function.concrete_function_name]
        else:
            self.concrete_functions = []
        self.operation = proto.constant.operation if self.kind == "constant" else None

    def walk(self):
        """(path, node) for this node and everything below, each node once."""
        seen = {self.node_id}
        queue = [self]
        for node in queue:
            yield node.path, node
            for child in node.children.values():
                if child.node_id not in seen:
                    seen.add(child.node_id)
                    queue.append(child)

    def __getitem__(self, local_name):
        return self.children[local_name]

    def __repr__(self):
        extra = self.identifier or (self.variable.name if self.variable else "")
        return (f"<ObjectNode {self.node_id} {self.kind}{' ' + extra if extra else ''} "
                f"path={self.path!r} children={list(self.children)}>")


def _escape(local_name):
    return local_name.replace(".", "..").replace("/", ".S")


def _build_object_tree(object_graph):
    nodes = [ObjectNode(i, proto) for i, proto in enumerate(object_graph.nodes)]
    if not nodes:
        return nodes
    for node in nodes:
        for ref in node.proto.children:
            if 0 <= ref.node_id < len(nodes):
                node.children[ref.local_name] = nodes[ref.node_id]
    nodes[0].path = ""
    queue = [nodes[0]]
    for node in queue:  # breadth first: shortest paths, as checkpoint keys use
        for local_name, child in node.children.items():
            if child.path is None and child is not nodes[0]:
                child.path = (f"{node.path}/{_escape(local_name)}" if node.path
                              else _escape(local_name))
                queue.append(child)
    for node in nodes:
        if node.kind == "variable":
            var = node.proto.variable
            key = None if node.path is None else node.path + _VARIABLE_SUFFIX
            node.variable = VariableInfo(var.name, node.path, key, _dtype_or_none(var.dtype),
                                         shape_from_proto(var.shape), var.trainable, node.node_id)
    return nodes


# --- one meta graph ----------------------------------------------------------------

def _node_name(tensor_name):
    name = tensor_name[1:] if tensor_name.startswith("^") else tensor_name
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def ops_used(graph_def):
    """Sorted op types a GraphDef uses, as TF's `ops_used_by_graph_def` finds them.

    Library functions are entered when a node's op names one or when a
    (Stateful)PartitionedCall's `f` attr does, so functions nothing calls are
    left out; function names themselves are not ops.
    """
    functions = {f.signature.name: f for f in graph_def.library.function}
    used = set()
    todo = []

    def mark(op):
        if op not in used and op in functions:
            todo.append(functions[op])
        used.add(op)

    def visit(node):
        mark(node.op)
        if node.op in ("PartitionedCall", "StatefulPartitionedCall"):
            mark(node.attr["f"].func.name if "f" in node.attr else "")

    for node in graph_def.node:
        visit(node)
    while todo:
        for node in todo.pop().node_def:
            visit(node)
    return sorted(op for op in used if op not in functions)


class MetaGraph:
    """One MetaGraphDef of a SavedModel. `proto` is the message itself."""

    def __init__(self, proto, export_dir):
        self.proto = proto
        self._export_dir = export_dir
        self._signatures = None
        self._objects = None
        self._functions = None

    @property
    def tags(self):
        """The tags in file order; `tag_set` for comparisons."""
        return list(self.proto.meta_info_def.tags)

    @property
    def tag_set(self):
        return frozenset(self.proto.meta_info_def.tags)

    @property
    def tensorflow_version(self):
        return self.proto.meta_info_def.tensorflow_version

    @property
    def tensorflow_git_version(self):
        return self.proto.meta_info_def.tensorflow_git_version

    @property
    def graph_def(self):
        return self.proto.graph_def

    @property
    def saver_def(self):
        return self.proto.saver_def if self.proto.HasField("saver_def") else None

    @property
    def collections(self):
        return self.proto.collection_def

    @property
    def is_tf2(self):
        """True when the meta graph has an object graph (written by tf.saved_model.save)."""
        return self.proto.HasField("object_graph_def")

    @property
    def signatures(self):
        """Signature key -> Signature, sorted by key (as saved_model_cli lists them)."""
        if self._signatures is None:
            defs = self.proto.signature_def
            self._signatures = {k: _signature(k, defs[k]) for k in sorted(defs)}
        return self._signatures

    def ops(self):
        """Sorted names of the ops the graph uses, following its function calls
        (the set `saved_model_cli show --all` prints; see `ops_used`)."""
        return ops_used(self.proto.graph_def)

    # object graph
    def _tree(self):
        if self._objects is None:
            self._objects = (_build_object_tree(self.proto.object_graph_def)
                             if self.is_tf2 else [])
        return self._objects

    @property
    def object_graph(self):
        """The root ObjectNode of the object graph, or None for a TF1 meta graph."""
        nodes = self._tree()
        return nodes[0] if nodes else None

    @property
    def object_nodes(self):
        """Every ObjectNode by node id (a list)."""
        return self._tree()

    @property
    def concrete_functions(self):
        """Function name -> ConcreteFunction for every saved concrete function."""
        if self._functions is None:
            funcs = self.proto.object_graph_def.concrete_functions
            self._functions = {n: _concrete_function(n, funcs[n]) for n in sorted(funcs)}
        return self._functions

    def functions(self):
        """What `saved_model_cli show --all` lists under "Concrete Functions".

        Child name of the root -> its ConcreteFunctions sorted by name, for the
        root's children that are functions, sorted by child name. A bare
        concrete function saved without an input signature lists its argument
        keywords (strings) as `args`, as TensorFlow does for it.
        """
        root = self.object_graph
        if root is None:
            return {}
        saved = self.proto.object_graph_def.concrete_functions
        out = {}
        for name in sorted(root.children):
            node = root.children[name]
            if node.kind == "function":
                out[name] = [self.concrete_functions[f] for f in sorted(node.concrete_functions)
                             if f in self.concrete_functions]
            elif node.kind == "bare_concrete_function":
                (f,) = node.concrete_functions
                fn = self.concrete_functions.get(f)
                signature = saved[f].canonicalized_input_signature if fn is not None else None
                if signature is None or signature.WhichOneof("kind") in (None, "none_value"):
                    keywords = list(node.proto.bare_concrete_function.argument_keywords)
                    fn = (ConcreteFunction(f, keywords, {}, None, []) if fn is None
                          else fn._replace(args=keywords, kwargs={}))
                out[name] = [fn]
        return out

    def variable_infos(self):
        """VariableInfo of every variable (object-graph nodes, or TF1 collections)."""
        if self.is_tf2:
            return [n.variable for n in self._tree() if n.variable is not None]
        return self._tf1_variables()

    def _tf1_variables(self):
        collections = self.proto.collection_def
        trainable = set()
        if "trainable_variables" in collections:
            for raw in collections["trainable_variables"].bytes_list.value:
                trainable.add(_VariableDef.FromString(raw).variable_name)
        nodes = {n.name: n for n in self.proto.graph_def.node}
        out = []
        seen = set()
        for collection in ("variables", "global_variables", "local_variables"):
            if collection not in collections:
                continue
            for raw in collections[collection].bytes_list.value:
                try:
                    vdef = _VariableDef.FromString(raw)
                except Exception:
                    raise FormatError(f"{self._export_dir}: collection {collection!r} holds a "
                                      "value that is not a VariableDef") from None
                name = _node_name(vdef.variable_name)
                if name in seen:
                    continue
                seen.add(name)
                node = nodes.get(name)
                dtype = shape = None
                if node is not None:
                    attr = node.attr
                    dtype = _dtype_or_none(attr["dtype"].type) if "dtype" in attr else None
                    shape = shape_from_proto(attr["shape"].shape) if "shape" in attr else None
                # A partition of a TF1 partitioned variable is stored as a
                # slice of the full tensor, under the full tensor's key.
                key = vdef.save_slice_info_def.full_name or name
                if collection == "local_variables":
                    # Metric accumulators and the like: TF1 savers store global variables
                    # only, so a local one has no key in the checkpoint.
                    key = None
                out.append(VariableInfo(name, None, key, dtype, shape,
                                        vdef.variable_name in trainable or vdef.trainable, None))
        return out

    def assets(self):
        """Asset of every AssetFileDef, resolved under `assets/`: the meta graph's
        own list, or the "saved_model_assets" collection where TF1's builder keeps them."""
        out = []
        asset_defs = list(self.proto.asset_file_def)
        if not asset_defs and _TF1_ASSETS in self.proto.collection_def:
            try:
                asset_defs = [_AssetFileDef.FromString(a.value)
                              for a in self.proto.collection_def[_TF1_ASSETS].any_list.value]
            except Exception:
                raise FormatError(f"{self._export_dir}: collection {_TF1_ASSETS!r} holds a "
                                  "value that is not an AssetFileDef") from None
        for asset in asset_defs:
            path = os.path.join(self._export_dir, ASSETS_DIR, asset.filename)
            out.append(Asset(asset.filename, path, fileio.isfile(path), asset.tensor_info.name))
        return list(dict.fromkeys(out))   # TF1's builder can list one asset twice

    def findings(self):
        """Finding of every dangling reference inside this meta graph: signature
        tensors the graph lacks, missing asset files, object-graph references to
        nodes or concrete functions that are not there."""
        out = []
        node_names = {n.name for n in self.proto.graph_def.node}
        for key, sig in self.signatures.items():
            for side, infos in (("input", sig.inputs), ("output", sig.outputs)):
                for info in infos.values():
                    for tensor in info.tensor_names():
                        if _node_name(tensor) not in node_names:
                            out.append(Finding("signature", f"signature {key!r} {side} {info.key!r} "
                                               f"names tensor {tensor!r}, but the graph has no "
                                               f"node {_node_name(tensor)!r}", None))
        for asset in self.assets():
            if not asset.exists:
                out.append(Finding("assets", f"asset {asset.filename!r} (for tensor "
                                   f"{asset.tensor_name!r}) is missing", asset.path))
        if self.is_tf2:
            out.extend(self._object_graph_findings())
        return out

    def _object_graph_findings(self):
        out = []
        graph = self.proto.object_graph_def
        n = len(graph.nodes)
        functions = graph.concrete_functions
        library = {f.signature.name for f in self.proto.graph_def.library.function}

        def add(message):
            out.append(Finding("object-graph", message, None))

        for node in self._tree():
            node_id = node.node_id
            for what, refs in (("child", node.proto.children), ("dependency", node.proto.dependencies)):
                for ref in refs:
                    if not 0 <= ref.node_id < n:
                        add(f"SavedObjectGraph node {node_id} {what} {ref.local_name!r} points to "
                            f"node {ref.node_id}; the graph has {n} nodes")
            for name in node.concrete_functions:
                if name not in functions:
                    add(f"SavedObjectGraph node {node_id} names concrete function {name!r}, "
                        "which the object graph does not describe")
                elif library and name not in library:
                    add(f"SavedObjectGraph node {node_id} names function {name!r}, which is not "
                        "in the graph's function library")
        for name, fn in functions.items():
            for bound in fn.bound_inputs:
                if not 0 <= bound < n:
                    add(f"concrete function {name!r} captures node {bound}; the graph has {n} nodes")
        return out

    def validate(self):
        """`findings()` as strings, each starting with the meta graph's tags."""
        return [f"meta graph {self.tags}: {f.message}" for f in self.findings()]

    def __repr__(self):
        return f"<MetaGraph tags={self.tags} signatures={list(self.signatures)}>"


# --- variables ----------------------------------------------------------------------

class SavedModelVariables(Mapping):
    """The variables of a SavedModel, read lazily from `variables/variables`.

    Iterates over canonical names: object paths for TF2, TF1 names for TF1.
    Lookup also accepts TF names (`dense/kernel`), object paths and raw bundle
    keys. Assigning (`variables[name] = array`) records an edit for `save()`.
    """

    def __init__(self, saved_model):
        self._sm = saved_model
        self._reader = None
        self._aliases = None   # any accepted name -> tuple of bundle keys
        self._canonical = None  # canonical name -> bundle key

    @property
    def reader(self):
        """The CheckpointReader over variables/variables (opened on first use)."""
        if self._reader is None:
            prefix = os.path.join(self._sm.path, VARIABLES_PREFIX)
            if not fileio.isfile(prefix + ".index"):
                raise CheckpointNotFoundError(f"{self._sm.path}: SavedModel has no variables "
                                              f"(no {prefix}.index)")
            self._reader = CheckpointReader(prefix)
        return self._reader

    def _has_bundle(self):
        return fileio.isfile(os.path.join(self._sm.path, VARIABLES_PREFIX) + ".index")

    def _index(self):
        if self._aliases is not None:
            return
        aliases, canonical = {}, {}
        if self._has_bundle():
            reader = self.reader
            keys = set(reader.keys())
            meta = self._sm.meta_graphs[0] if self._sm.meta_graphs else None
            if meta is not None and meta.is_tf2:
                by_name = {}
                for info in meta.variable_infos():
                    if info.key in keys:
                        canonical[info.path] = info.key
                        by_name.setdefault(info.name, []).append(info.key)
                for key, var in reader.object_variables().items():
                    if var.path and var.attribute == "VARIABLE_VALUE" and var.path not in canonical:
                        canonical[var.path] = key
                        if var.full_name:
                            by_name.setdefault(var.full_name, []).append(key)
                for name, ks in by_name.items():
                    aliases[name] = tuple(dict.fromkeys(ks))
            else:
                for key in keys:
                    if key != OBJECT_GRAPH_KEY:
                        canonical[key] = key
            for path, key in canonical.items():
                aliases[path] = (key,)
            for key in keys:
                aliases[key] = (key,)
        self._canonical = dict(sorted(canonical.items()))
        self._aliases = aliases

    def keys_for(self, name):
        """The bundle keys `name` stands for (several when one TF variable is
        tracked under several object paths, as Keras 3 exports do)."""
        self._index()
        keys = self._aliases.get(name)
        if keys is None and name.endswith(":0"):
            keys = self._aliases.get(name[:-2])
        if keys is None:
            raise TensorNotFoundError(f"{self._sm.path}: no variable named {name!r} (try a TF "
                                      "name like 'dense/kernel', an object path or a bundle key)")
        return keys

    def key(self, name):
        """The bundle key of `name`; KeyError if it names several different variables."""
        keys = self.keys_for(name)
        if len(keys) > 1 and not self._same_tensor(keys):
            raise TensorNotFoundError(
                f"{self._sm.path}: {name!r} is ambiguous, it names the different variables "
                f"{list(keys)}; use an object path")
        return keys[0]

    def _same_tensor(self, keys):
        reader = self.reader
        first = reader.entry(keys[0])
        if any(reader.shape(k) != list(first.shape) or reader.dtype(k) != first.dtype
               for k in keys[1:]):
            return False
        value = self._value(keys[0])
        return all(np.array_equal(self._value(k), value) for k in keys[1:])

    def _value(self, key):
        edited = self._sm._edits.get(key)
        return edited if edited is not None else self.reader.get_tensor(key)

    def __getitem__(self, name):
        return self._value(self.key(name))

    def __setitem__(self, name, value):
        self._sm.set_variable(name, value)

    def __iter__(self):
        self._index()
        return iter(self._canonical)

    def __len__(self):
        self._index()
        return len(self._canonical)

    def __contains__(self, name):
        try:
            self.keys_for(name)
        except KeyError:
            return False
        return True

    def shape(self, name):
        return self.reader.shape(self.key(name))

    def dtype(self, name):
        return self.reader.dtype(self.key(name))

    def names(self):
        """TF name -> bundle keys, for TF2 models (empty for TF1, whose names are keys)."""
        self._index()
        return {n: ks for n, ks in self._aliases.items()
                if n not in self._canonical and ks != (n,)}

    def close(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __repr__(self):
        return f"<SavedModelVariables of {self._sm.path!r}>"


# --- keras_metadata.pb -----------------------------------------------------------------

def parse_keras_metadata(data, path="keras_metadata.pb"):
    """A SavedMetadata message; nodes from the older layout (version in field 1)
    get that version copied into `version` (field 6)."""
    metadata = parse_message(protos.SavedMetadata, data, path)
    raw_nodes = [v for num, kind, v in wire.fields(data, path) if num == 1 and kind == 2]
    for node, raw in zip(metadata.nodes, raw_nodes):
        if node.HasField("version"):
            continue
        for num, kind, value in wire.fields(raw, path):
            if num == 1 and kind == 2:
                node.version.CopyFrom(_KerasVersionDef.FromString(value))
    return metadata


# --- the SavedModel ---------------------------------------------------------------------

class SavedModel:
    """A SavedModel directory. See the module docstring; build with `load_saved_model`.

    `proto` is the parsed protos.SavedModel message; `meta_graphs` its
    MetaGraph objects. The single-meta-graph conveniences (`signatures`,
    `ops()`, `object_graph`, ...) describe `meta_graphs[0]`; use
    `meta_graph(tags)` to pick another.
    """

    def __init__(self, path, proto, file_format, raw=None):
        self.path = path
        self.proto = proto
        self._raw = raw  # the file's bytes, written back verbatim while unedited
        self.format = file_format  # "pb" or "pbtxt"
        self.meta_graphs = [MetaGraph(m, path) for m in proto.meta_graphs]
        self._variables = None
        self._edits = {}
        self._keras_metadata = False  # False: not read yet

    def meta_graph(self, tags=None):
        """The MetaGraph with exactly this tag set (default: the first one)."""
        if not self.meta_graphs:
            raise FormatError(f"{self.path}: SavedModel has no meta graphs")
        if tags is None:
            return self.meta_graphs[0]
        want = frozenset([tags] if isinstance(tags, str) else tags)
        for meta in self.meta_graphs:
            if meta.tag_set == want:
                return meta
        have = [sorted(m.tag_set) for m in self.meta_graphs]
        raise KeyError(f"{self.path}: no meta graph with tags {sorted(want)}; have {have}")

    @property
    def tag_sets(self):
        return [m.tags for m in self.meta_graphs]

    @property
    def signatures(self):
        return self.meta_graph().signatures

    def ops(self):
        return self.meta_graph().ops()

    @property
    def object_graph(self):
        return self.meta_graph().object_graph

    @property
    def concrete_functions(self):
        return self.meta_graph().concrete_functions

    def functions(self):
        return self.meta_graph().functions()

    def variable_infos(self):
        return self.meta_graph().variable_infos()

    @property
    def assets(self):
        return self.meta_graph().assets()

    @property
    def assets_extra(self):
        """Paths (relative to assets.extra/) of every file under assets.extra/."""
        root = os.path.join(self.path, ASSETS_EXTRA_DIR)
        return sorted(fileio.walk_files(root))

    @property
    def keras_metadata(self):
        """Parsed keras_metadata.pb (tf_keras SavedModels), or None."""
        if self._keras_metadata is False:
            path = os.path.join(self.path, KERAS_METADATA)
            data = fileio.read_file_if_present(path)
            self._keras_metadata = None if data is None else parse_keras_metadata(data, path)
        return self._keras_metadata

    @property
    def fingerprint(self):
        """Parsed fingerprint.pb, or None when there is none."""
        if not fileio.exists(os.path.join(self.path, FINGERPRINT)):
            return None
        return _fingerprint.read_fingerprint(self.path)

    @property
    def variables(self):
        if self._variables is None:
            self._variables = SavedModelVariables(self)
        return self._variables

    def findings(self):
        """Finding of every inconsistency in the directory; empty when there is none.

        Covers what `MetaGraph.findings()` does for each meta graph, variables
        missing from (or no) variables bundle, and a fingerprint.pb that does
        not match the files (or cannot be read).
        """
        out = []
        for meta in self.meta_graphs:
            out.extend(meta.findings())
        return out + self._directory_findings()

    def _directory_findings(self):
        out = []
        infos = [v for v in self.variable_infos() if v.key is not None] if self.meta_graphs else []
        if infos:
            index = os.path.join(self.path, VARIABLES_PREFIX) + ".index"
            try:
                reader = self.variables.reader
            except CheckpointNotFoundError:
                out.append(Finding("variables", f"SavedModel has no variables (no {index})", index))
            except TFFormatsError as e:
                out.append(Finding("variables", f"variables bundle unreadable ({e})", index))
            else:
                for info in infos:
                    if info.key not in reader:
                        out.append(Finding("variables", f"variable {info.name!r} "
                                           f"({info.path or info.key}) is not in the checkpoint "
                                           f"under {info.key!r}", index))
        path = os.path.join(self.path, FINGERPRINT)
        if self.format == "pb" and fileio.exists(path):
            try:
                out.extend(Finding("fingerprint", m, path)
                           for m in _fingerprint.check_fingerprint(self.path))
            except TFFormatsError as e:
                out.append(Finding("fingerprint", str(e), path))
        return out

    def validate(self):
        """`findings()` as strings, each starting with the directory (and, for
        those about a meta graph, its tags)."""
        out = []
        for meta in self.meta_graphs:
            out.extend(f"{self.path}: {m}" for m in meta.validate())
        return out + [f"{self.path}: {f.message}" for f in self._directory_findings()]

    # --- editing ------------------------------------------------------------------

    def set_variable(self, name, value):
        """Replace a variable's value for `save()`. Same shape and dtype required.

        A numpy array must have the variable's dtype exactly; other values
        (lists, Python numbers) are converted to it.
        """
        variables = self.variables
        keys = variables.keys_for(name)
        if len(keys) > 1:
            variables.key(name)  # raises unless the keys hold one variable
        reader = variables.reader
        entry = reader.entry(keys[0])
        if entry.dtype.is_string or entry.dtype.as_numpy_dtype is None:
            raise UnsupportedError(f"{self.path}: variable {name!r} has dtype "
                                   f"{entry.dtype.name}; only numeric variables can be replaced")
        want = entry.dtype.as_numpy_dtype
        if isinstance(value, (np.ndarray, np.generic)):
            array = np.asarray(value)
            if array.dtype != want:
                raise FormatError(f"{self.path}: variable {name!r} is {entry.dtype.name}; "
                                  f"got an array of {array.dtype} (convert it explicitly)")
        else:
            array = np.asarray(value, dtype=want)
        if tuple(array.shape) != tuple(entry.shape):
            raise FormatError(f"{self.path}: variable {name!r} has shape {list(entry.shape)}; "
                              f"got shape {list(array.shape)}")
        array = np.array(array, copy=True)
        array.flags.writeable = False
        for key in keys:
            self._edits[key] = array

    def rename_signature(self, old, new):
        """Rename a signature key in every meta graph that has it (and, in TF2,
        the matching child of the object graph's `signatures` map)."""
        if old == new:
            return
        found = False
        for meta in self.meta_graphs:
            defs = meta.proto.signature_def
            if old not in defs:
                continue
            if new in defs:
                raise ValueError(f"{self.path}: signature {new!r} already exists")
            found = True
            defs[new].CopyFrom(defs[old])
            del defs[old]
            signature_map = _signature_map(meta.proto)
            if signature_map is not None:
                for ref in signature_map.children:
                    if ref.local_name == old:
                        ref.local_name = new
            meta._signatures = meta._objects = None
        if not found:
            raise KeyError(f"{self.path}: no signature named {old!r}")

    def remove_signature(self, key):
        """Drop a signature from every meta graph that has it."""
        found = False
        for meta in self.meta_graphs:
            defs = meta.proto.signature_def
            if key not in defs:
                continue
            found = True
            del defs[key]
            signature_map = _signature_map(meta.proto)
            if signature_map is not None:
                kept = [ref for ref in signature_map.children if ref.local_name != key]
                del signature_map.children[:]
                signature_map.children.extend(kept)
            meta._signatures = meta._objects = None
        if not found:
            raise KeyError(f"{self.path}: no signature named {key!r}")

    def set_tags(self, tags, meta_graph=0):
        """Replace the tags of `meta_graphs[meta_graph]`."""
        tags = [tags] if isinstance(tags, str) else list(tags)
        meta = self.meta_graphs[meta_graph]
        if any(m is not meta and m.tag_set == frozenset(tags) for m in self.meta_graphs):
            raise ValueError(f"{self.path}: another meta graph already has tags {sorted(tags)}")
        del meta.proto.meta_info_def.tags[:]
        meta.proto.meta_info_def.tags.extend(tags)

    def serialize(self):
        """saved_model.pb bytes of the current, possibly edited, proto.

        Unedited, these are the original file's bytes. Otherwise the
        serialization is deterministic and the same under every protobuf
        backend (C++ `SerializeToStringDeterministic` order).
        """
        if self._raw is not None and protos.SavedModel.FromString(self._raw) == self.proto:
            return self._raw
        return _fingerprint.canonical_serialize(self.proto)

    def save(self, export_dir, overwrite=False, fingerprint=None):
        """Write the SavedModel with all edits to a new directory; returns it loaded.

        The directory is built next to `export_dir` under a temporary name and
        renamed into place, so readers never see a half-written model.
        `fingerprint`: None writes fingerprint.pb when the source had one,
        True always (binary .pb only), False never.
        """
        export_dir = os.path.abspath(os.fspath(export_dir))
        if fileio.exists(export_dir):
            if not overwrite:
                raise FileExistsError(f"{export_dir}: already exists (pass overwrite=True)")
        parent = os.path.dirname(export_dir)
        fileio.makedirs(parent)
        tmp = fileio.make_temp_dir(parent, f".{os.path.basename(export_dir)}.tmp-")
        try:
            self._copy_other_files(tmp)
            self._write_variables(tmp)
            if self.format == "pbtxt":
                fileio.write_file(os.path.join(tmp, SAVED_MODEL_PBTXT),
                                  text_format.MessageToString(self.proto).encode("utf-8"))
            else:
                fileio.write_file(os.path.join(tmp, SAVED_MODEL_PB), self.serialize())
            had_fingerprint = fileio.exists(os.path.join(self.path, FINGERPRINT))
            if fingerprint is None:
                fingerprint = had_fingerprint
            if fingerprint and self.format == "pb":
                _fingerprint.write_fingerprint(tmp)
            _replace_dir(tmp, export_dir)
        except BaseException:
            fileio.rmtree(tmp)
            raise
        return load_saved_model(export_dir)

    def _copy_other_files(self, out):
        """Copy everything except what save() regenerates (assets, assets.extra,
        keras_metadata.pb, debug info, unknown files alike)."""
        skip = {SAVED_MODEL_PB, SAVED_MODEL_PBTXT, FINGERPRINT, VARIABLES_DIR}
        for name in fileio.listdir(self.path):
            if name not in skip:
                _copy_entry(os.path.join(self.path, name), os.path.join(out, name))

    def _write_variables(self, out):
        src = os.path.join(self.path, VARIABLES_DIR)
        if not fileio.isdir(src):
            return
        dst = os.path.join(out, VARIABLES_DIR)
        if not self._edits:
            fileio.copytree(src, dst)
            return
        from .writer import BundleWriter  # the writer is only needed to edit

        reader = self.variables.reader
        bundle = reader._bundle
        # (stored entry, tensor entry, extents, bounds): a partitioned tensor
        # contributes one item per part, extents None marks a plain tensor.
        # Parts are checked to tile their tensor before anything is written.
        items = []
        for entry in bundle.entries().values():
            if entry.slices:
                items.extend((part, entry, extents, bounds) for extents, (bounds, part)
                             in zip(entry.slices, bundle._parts(entry)))
            else:
                items.append((entry, entry, None, None))
        fileio.makedirs(dst)
        for name in fileio.listdir(src):  # anything besides the bundle itself
            if not name.startswith("variables."):
                _copy_entry(os.path.join(src, name), os.path.join(dst, name))
        # Added in the original data-file order, as TF did when it saved; the
        # stored dtype is kept (an int8 array stays qint8 where it was), and a
        # partitioned tensor keeps its parts: the same keys TF wrote, and each
        # TF1 restore op (one per partition) still finds its slice stored whole.
        with BundleWriter(os.path.join(out, VARIABLES_PREFIX)) as writer:
            for stored, entry, extents, bounds in sorted(
                    items, key=lambda i: (i[0].shard_id, i[0].offset, i[0].name)):
                value = self._edits.get(entry.name)
                if extents is None:
                    if value is None:
                        value = reader.get_tensor(entry.name)
                    writer.add(entry.name, value, dtype=entry.dtype)
                    continue
                if value is None:
                    value = bundle.read_entry(stored, verify=bundle.verify)
                else:
                    value = value[slices.index(bounds)]
                writer.add_slice(entry.name, entry.shape, extents, value, dtype=entry.dtype)

    def close(self):
        if self._variables is not None:
            self._variables.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<SavedModel {self.path!r} tag-sets={self.tag_sets}>"


def _signature_map(meta_proto):
    """The SavedObject holding the signatures as children (TF2), or None."""
    nodes = meta_proto.object_graph_def.nodes
    if not nodes:
        return None
    for ref in nodes[0].children:
        if ref.local_name == SIGNATURES_CHILD and 0 <= ref.node_id < len(nodes):
            return nodes[ref.node_id]
    return None


def _copy_entry(src, dst):
    """Copy a file or a whole directory."""
    (fileio.copytree if fileio.isdir(src) else fileio.copy)(src, dst)


def _replace_dir(tmp, export_dir):
    if not fileio.exists(export_dir):
        fileio.rename(tmp, export_dir)
        return
    old = fileio.make_temp_dir(os.path.dirname(export_dir),
                               f".{os.path.basename(export_dir)}.old-")
    fileio.rmdir(old)
    fileio.rename(export_dir, old)
    try:
        fileio.rename(tmp, export_dir)
    except BaseException:
        fileio.rename(old, export_dir)
        raise
    fileio.rmtree(old)


def load_saved_model(export_dir):
    """Parse the SavedModel in `export_dir` (saved_model.pb, else saved_model.pbtxt).

    `export_dir` may also name the saved_model.pb/.pbtxt file itself.

    Only the graph file is read; variables, fingerprint and keras metadata
    are read when asked for. Raises CheckpointNotFoundError when the directory
    holds no SavedModel, FormatError for a corrupt one, UnsupportedError for
    the chunked `.cpb` format.
    """
    export_dir = os.fspath(export_dir)
    if os.path.basename(export_dir) in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT) and fileio.isfile(
            export_dir):
        export_dir = os.path.dirname(export_dir) or "."
    if not fileio.isdir(export_dir):
        raise CheckpointNotFoundError(f"{export_dir}: not a directory; a SavedModel is a "
                                      f"directory holding {SAVED_MODEL_PB} or {SAVED_MODEL_PBTXT}")
    cpb = os.path.join(export_dir, SAVED_MODEL_CPB)
    if fileio.exists(cpb):
        raise UnsupportedError(f"{cpb}: chunked SavedModel (.cpb) not supported yet")
    pb = os.path.join(export_dir, SAVED_MODEL_PB)
    pbtxt = os.path.join(export_dir, SAVED_MODEL_PBTXT)
    if fileio.isfile(pb):
        raw = fileio.read_file(pb)
        proto = parse_message(protos.SavedModel, raw, pb)
        file_format = "pb"
    elif fileio.isfile(pbtxt):
        proto = parse_message(protos.SavedModel, fileio.read_file(pbtxt), pbtxt, text=True)
        file_format, raw = "pbtxt", None
    else:
        raise CheckpointNotFoundError(f"{export_dir}: no SavedModel here (expected "
                                      f"{SAVED_MODEL_PB} or {SAVED_MODEL_PBTXT})")
    if not proto.meta_graphs:
        raise FormatError(f"{pb if file_format == 'pb' else pbtxt}: SavedModel has no meta graphs")
    return SavedModel(export_dir, proto, file_format, raw)
