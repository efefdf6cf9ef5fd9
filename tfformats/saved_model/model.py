"""A SavedModel directory read: meta graphs, the object tree, variables.

`load_saved_model(dir)` parses `saved_model.pb` (or `.pbtxt`) and nothing
else; signatures, the object graph and the rest are decoded on first use
(see `spec`), and `variables/` is opened only when `.variables` is touched.
Editing and saving are in `editing`.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Mapping
from typing import Any, Iterable, Iterator

import numpy as np

from .. import fileio, fingerprint as _fingerprint, protos
from ..checkpoint import CheckpointReader
from ..errors import (CheckpointNotFoundError, Finding, FormatError, TensorNotFoundError,
                      TFFormatsError)
from ..graph import SAVED_MODEL_FILES, parse_message, read_saved_model_file, saved_model_file
from ..names import Names
from ..objgraph import (OBJECT_GRAPH_KEY, VARIABLE_SUFFIX, VARIABLE_VALUE, check_node_count,
                        node_paths)
from .editing import SavedModelEditing
from .spec import (ASSETS_DIR, ASSETS_EXTRA_DIR, FINGERPRINT, KERAS_METADATA,
                   SAVED_MODEL_PB, SAVED_MODEL_PBTXT, VARIABLES_PREFIX, ConcreteFunction,
                   decode_concrete_function, decode_signature, dtype_or_none,
                   parse_keras_metadata, shape_from_proto)
from ..dtypes import DType
from .spec import Signature

_VariableDef = protos.message_class("tfformats.VariableDef")
_AssetFileDef = protos.message_class("tfformats.AssetFileDef")
_TF1_ASSETS = "saved_model_assets"   # TF1's collection of AssetFileDefs (as Any)


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

    children: dict[str, ObjectNode]

    __slots__ = ("node_id", "kind", "path", "children", "proto", "identifier", "variable",
                 "concrete_functions", "asset", "operation")

    def __init__(self, node_id: int, proto: Any) -> None:
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

    def walk(self) -> Iterator[tuple[str | None, ObjectNode]]:
        """(path, node) for this node and everything below, each node once."""
        seen = {self.node_id}
        queue = [self]
        for node in queue:
            yield node.path, node
            for child in node.children.values():
                if child.node_id not in seen:
                    seen.add(child.node_id)
                    queue.append(child)

    def __getitem__(self, local_name: str) -> ObjectNode:
        return self.children[local_name]

    def __repr__(self):
        extra = self.identifier or (self.variable.name if self.variable else "")
        return (f"<ObjectNode {self.node_id} {self.kind}{' ' + extra if extra else ''} "
                f"path={self.path!r} children={list(self.children)}>")


def _build_object_tree(object_graph, where):
    check_node_count(object_graph, where)
    nodes = [ObjectNode(i, proto) for i, proto in enumerate(object_graph.nodes)]
    if not nodes:
        return nodes
    for node in nodes:
        for ref in node.proto.children:
            if 0 <= ref.node_id < len(nodes):
                node.children[ref.local_name] = nodes[ref.node_id]
    for node_id, path in node_paths(object_graph.nodes).items():
        nodes[node_id].path = path
    for node in nodes:
        if node.kind == "variable":
            var = node.proto.variable
            key = None if node.path is None else node.path + VARIABLE_SUFFIX
            node.variable = VariableInfo(var.name, node.path, key, dtype_or_none(var.dtype),
                                         shape_from_proto(var.shape), var.trainable, node.node_id)
    return nodes


# --- one meta graph ----------------------------------------------------------------

def _node_name(tensor_name):
    name = tensor_name[1:] if tensor_name.startswith("^") else tensor_name
    head, sep, tail = name.rpartition(":")
    return head if sep and tail.isdigit() else name


def ops_used(graph_def: Any) -> list[str]:
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

    _signatures: dict[str, Signature] | None
    _functions: dict[str, ConcreteFunction] | None

    def __init__(self, proto: Any, export_dir: str) -> None:
        self.proto = proto
        self._export_dir = export_dir
        self._signatures = None
        self._objects = None
        self._functions = None

    def proto_changed(self) -> None:
        """Forget what was decoded from `proto`: it was edited (see `editing`)."""
        self._signatures = self._objects = None

    @property
    def tags(self) -> list[str]:
        """The tags in file order; `tag_set` for comparisons."""
        return list(self.proto.meta_info_def.tags)

    @property
    def tag_set(self) -> frozenset[str]:
        return frozenset(self.proto.meta_info_def.tags)

    @property
    def tensorflow_version(self) -> str:
        return self.proto.meta_info_def.tensorflow_version

    @property
    def tensorflow_git_version(self) -> str:
        return self.proto.meta_info_def.tensorflow_git_version

    @property
    def graph_def(self) -> Any:
        return self.proto.graph_def

    @property
    def saver_def(self) -> Any:
        return self.proto.saver_def if self.proto.HasField("saver_def") else None

    @property
    def collections(self) -> Any:
        return self.proto.collection_def

    @property
    def is_tf2(self) -> bool:
        """True when the meta graph has an object graph (written by tf.saved_model.save)."""
        return self.proto.HasField("object_graph_def")

    @property
    def signatures(self) -> dict[str, Signature]:
        """Signature key -> Signature, sorted by key (as saved_model_cli lists them)."""
        if self._signatures is None:
            defs = self.proto.signature_def
            self._signatures = {k: decode_signature(k, defs[k]) for k in sorted(defs)}
        return self._signatures

    def ops(self) -> list[str]:
        """Sorted names of the ops the graph uses, following its function calls
        (the set `saved_model_cli show --all` prints; see `ops_used`)."""
        return ops_used(self.proto.graph_def)

    # object graph
    def _tree(self):
        if self._objects is None:
            self._objects = (_build_object_tree(self.proto.object_graph_def,
                                                f"{self._export_dir}: SavedObjectGraph")
                             if self.is_tf2 else [])
        return self._objects

    @property
    def object_graph(self) -> ObjectNode | None:
        """The root ObjectNode of the object graph, or None for a TF1 meta graph."""
        nodes = self._tree()
        return nodes[0] if nodes else None

    @property
    def object_nodes(self) -> list[ObjectNode]:
        """Every ObjectNode by node id (a list)."""
        return self._tree()

    @property
    def concrete_functions(self) -> dict[str, ConcreteFunction]:
        """Function name -> ConcreteFunction for every saved concrete function."""
        if self._functions is None:
            funcs = self.proto.object_graph_def.concrete_functions
            self._functions = {n: decode_concrete_function(n, funcs[n]) for n in sorted(funcs)}
        return self._functions

    def functions(self) -> dict[str, list[ConcreteFunction]]:
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
        out: dict[str, list] = {}
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

    def variable_infos(self) -> list[VariableInfo]:
        """VariableInfo of every variable (object-graph nodes, or TF1 collections)."""
        if self.is_tf2:
            return [n.variable for n in self._tree() if n.variable is not None]
        return self._tf1_variables()

    def _tf1_variables(self):
        collections = self.proto.collection_def
        trainable = set()
        if "trainable_variables" in collections:
            for raw in collections["trainable_variables"].bytes_list.value:
                trainable.add(parse_message(
                    _VariableDef, raw, f"{self._export_dir}: collection 'trainable_variables'")
                    .variable_name)
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
                    dtype = dtype_or_none(attr["dtype"].type) if "dtype" in attr else None
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

    def assets(self) -> list[Asset]:
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

    def findings(self) -> list[Finding]:
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

    def validate(self) -> list[str]:
        """`findings()` as strings, each starting with the meta graph's tags."""
        return [f"meta graph {self.tags}: {f.message}" for f in self.findings()]

    def __repr__(self):
        return f"<MetaGraph tags={self.tags} signatures={list(self.signatures)}>"


# --- variables ----------------------------------------------------------------------

@fileio.keeps_storage
class SavedModelVariables(Mapping):
    """The variables of a SavedModel, read lazily from `variables/variables`.

    Iterates over canonical names: object paths for TF2, TF1 names for TF1.
    Lookup also accepts TF names (`dense/kernel`), object paths and raw bundle
    keys. Assigning (`variables[name] = array`) records an edit for `save()`.
    """

    _reader: CheckpointReader | None
    _names: Any       # a names.Names once _index() ran
    _canonical: Any

    def __init__(self, saved_model: SavedModel) -> None:
        self._sm = saved_model
        self._reader = None
        self._names = None      # names.Names: every accepted name -> bundle keys
        self._canonical = None  # canonical name -> bundle key

    @property
    def reader(self) -> CheckpointReader:
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
        """Canonical names, and the one resolver (tfformats/names.py) fed with the
        SavedModel's own object paths and variable names besides the checkpoint's."""
        if self._names is not None:
            return
        canonical, by_name = {}, {}
        if not self._has_bundle():
            self._names = Names(set(), where=self._sm.path)
        else:
            reader = self.reader
            keys = set(reader.keys())
            meta = self._sm.meta_graphs[0] if self._sm.meta_graphs else None
            if meta is not None and meta.is_tf2:
                for info in meta.variable_infos():
                    if info.key in keys:
                        canonical[info.path] = info.key
                        by_name.setdefault(info.name, []).append(info.key)
                for key, var in reader.object_variables().items():
                    if var.path and var.attribute == VARIABLE_VALUE and var.path not in canonical:
                        canonical[var.path] = key
            else:
                canonical = {key: key for key in keys if key != OBJECT_GRAPH_KEY}
            self._names = Names.of_reader(reader, paths=canonical, full_names=by_name,
                                          same=self._same_tensor)
        self._canonical = dict(sorted(canonical.items()))

    def keys_for(self, name: str) -> tuple[str, ...]:
        """The bundle keys `name` stands for (several when one TF variable is
        tracked under several object paths, as Keras 3 exports do)."""
        self._index()
        keys = self._names.candidates(name)
        if not keys:
            raise TensorNotFoundError(self._names.missing_message(name))
        return tuple(keys)

    def key(self, name: str) -> str:
        """The bundle key of `name`; AmbiguousNameError (a KeyError) if it names
        several different variables."""
        self._index()
        return self._names.resolve(name)

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

    def __getitem__(self, name: str) -> Any:
        return self._value(self.key(name))

    def __setitem__(self, name, value):
        self._sm.set_variable(name, value)

    def __iter__(self) -> Iterator[str]:
        self._index()
        return iter(self._canonical)

    def __len__(self) -> int:
        self._index()
        return len(self._canonical)

    def __contains__(self, name: Any) -> bool:
        try:
            self.keys_for(name)
        except KeyError:
            return False
        return True

    def shape(self, name: str) -> list[int]:
        return self.reader.shape(self.key(name))

    def dtype(self, name: str) -> DType:
        return self.reader.dtype(self.key(name))

    def names(self) -> dict[str, tuple[str, ...]]:
        """TF name -> bundle keys, for TF2 models (empty for TF1, whose names are keys)."""
        self._index()
        return {n: tuple(ks) for n, ks in self._names.full_names.items()
                if n not in self._canonical and ks != [n]}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __repr__(self):
        return f"<SavedModelVariables of {self._sm.path!r}>"


# --- the SavedModel ---------------------------------------------------------------------

@fileio.keeps_storage
class SavedModel(SavedModelEditing):
    """A SavedModel directory. See the module docstring; build with `load_saved_model`.

    `proto` is the parsed protos.SavedModel message; `meta_graphs` its
    MetaGraph objects. The single-meta-graph conveniences (`signatures`,
    `ops()`, `object_graph`, ...) describe `meta_graphs[0]`; use
    `meta_graph(tags)` to pick another.
    """

    _variables: SavedModelVariables | None
    _edits: dict[str, Any]
    _keras_metadata: Any

    def __init__(self, path: str, proto: Any, file_format: str, raw: bytes | None = None) -> None:
        self.path = path
        self.proto = proto
        self._raw = raw  # the file's bytes, written back verbatim while unedited
        self.format = file_format  # "cpb", "pb" or "pbtxt"
        self.meta_graphs = [MetaGraph(m, path) for m in proto.meta_graphs]
        self._variables = None
        self._edits = {}
        self._keras_metadata = False  # False: not read yet

    def meta_graph(self, tags: str | Iterable[str] | None = None) -> MetaGraph:
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
    def tag_sets(self) -> list[list[str]]:
        return [m.tags for m in self.meta_graphs]

    @property
    def signatures(self) -> dict[str, Signature]:
        return self.meta_graph().signatures

    def ops(self) -> list[str]:
        return self.meta_graph().ops()

    @property
    def object_graph(self) -> ObjectNode | None:
        return self.meta_graph().object_graph

    @property
    def concrete_functions(self) -> dict[str, ConcreteFunction]:
        return self.meta_graph().concrete_functions

    def functions(self) -> dict[str, list[ConcreteFunction]]:
        return self.meta_graph().functions()

    def variable_infos(self) -> list[VariableInfo]:
        return self.meta_graph().variable_infos()

    @property
    def assets(self) -> list[Asset]:
        return self.meta_graph().assets()

    @property
    def assets_extra(self) -> list[str]:
        """Paths (relative to assets.extra/) of every file under assets.extra/."""
        root = os.path.join(self.path, ASSETS_EXTRA_DIR)
        return sorted(fileio.walk_files(root))

    @property
    def keras_metadata(self) -> Any:
        """Parsed keras_metadata.pb (tf_keras SavedModels), or None."""
        if self._keras_metadata is False:
            path = os.path.join(self.path, KERAS_METADATA)
            data = fileio.read_file_if_present(path)
            self._keras_metadata = None if data is None else parse_keras_metadata(data, path)
        return self._keras_metadata

    @property
    def fingerprint(self) -> Any:
        """Parsed fingerprint.pb, or None when there is none."""
        if not fileio.exists(os.path.join(self.path, FINGERPRINT)):
            return None
        return _fingerprint.read_fingerprint(self.path)

    @property
    def variables(self) -> SavedModelVariables:
        if self._variables is None:
            self._variables = SavedModelVariables(self)
        return self._variables

    def findings(self) -> list[Finding]:
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
        if self.format in ("pb", "cpb") and fileio.exists(path):
            try:
                out.extend(Finding("fingerprint", m, path)
                           for m in _fingerprint.check_fingerprint(self.path))
            except TFFormatsError as e:
                out.append(Finding("fingerprint", str(e), path))
        return out

    def validate(self) -> list[str]:
        """`findings()` as strings, each starting with the directory (and, for
        those about a meta graph, its tags)."""
        out: list[str] = []
        for meta in self.meta_graphs:
            out.extend(f"{self.path}: {m}" for m in meta.validate())
        return out + [f"{self.path}: {f.message}" for f in self._directory_findings()]

    def close(self) -> None:
        if self._variables is not None:
            self._variables.close()

    def __enter__(self) -> SavedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self):
        return f"<SavedModel {self.path!r} tag-sets={self.tag_sets}>"


@fileio.with_storage
def load_saved_model(export_dir: str | os.PathLike) -> SavedModel:
    """Parse the SavedModel in `export_dir` (saved_model.cpb, .pb, else .pbtxt).

    `export_dir` may also name the saved_model.cpb/.pb/.pbtxt file itself.

    Only the graph file is read; variables, fingerprint and keras metadata
    are read when asked for. Raises CheckpointNotFoundError when the directory
    holds no SavedModel, FormatError for a corrupt one. A chunked
    `saved_model.cpb` is merged back into one message (tfformats/chunked.py).
    """
    export_dir = os.fspath(export_dir)
    if os.path.basename(export_dir) in SAVED_MODEL_FILES and fileio.isfile(export_dir):
        export_dir = os.path.dirname(export_dir) or "."
    if not fileio.isdir(export_dir):
        raise CheckpointNotFoundError(f"{export_dir}: not a directory; a SavedModel is a "
                                      f"directory holding {SAVED_MODEL_PB} or {SAVED_MODEL_PBTXT}")
    path = saved_model_file(export_dir)
    if path is None:
        raise CheckpointNotFoundError(f"{export_dir}: no SavedModel here (expected "
                                      f"{SAVED_MODEL_PB} or {SAVED_MODEL_PBTXT})")
    file_format = os.path.splitext(path)[1][1:]   # "cpb", "pb" or "pbtxt"
    raw = None
    if file_format == "pb":   # kept: the bytes TensorFlow hashes and loads
        raw = fileio.read_file(path)
        proto = parse_message(protos.SavedModel, raw, path)
    else:
        proto = read_saved_model_file(path)
    if not proto.meta_graphs:
        raise FormatError(f"{path}: SavedModel has no meta graphs")
    return SavedModel(export_dir, proto, file_format, raw)
