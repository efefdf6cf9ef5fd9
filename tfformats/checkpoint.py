"""Checkpoints: path forms, the `checkpoint` state file, the object graph.

`CheckpointReader` is the user-facing reader: a Mapping of tensor name to
numpy array with TensorFlow's familiar method names on top.
"""

import bisect
import math
import os
import re
from collections import namedtuple
from collections.abc import Mapping

from . import fileio, v1
from .bundle import DATA_SUFFIX, BundleReader
from .errors import CheckpointNotFoundError, FormatError, UnsupportedError
from .progress import bar

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
STATE_FILENAME = "checkpoint"

ObjectVariable = namedtuple("ObjectVariable", "key path attribute full_name slot_of slot_name")
ObjectVariable.__doc__ = """What the object graph says about one checkpoint key.

`path` is the object path (`model/layer_with_weights-0/kernel`), `attribute`
the attribute name (`VARIABLE_VALUE`), `full_name` the TF1-style variable name
if recorded, and for optimizer slots `slot_of` is the object path of the
variable the slot belongs to and `slot_name` the slot (`m`, `v`)."""


# --- the `checkpoint` state file ------------------------------------------------

def read_state(directory, filename=STATE_FILENAME):
    """The parsed CheckpointState of `directory`, or None if it has none."""
    path = os.path.join(directory, filename)
    data = fileio.read_file_if_present(path)
    if data is None:
        return None
    text = data.decode("utf-8")
    from google.protobuf import text_format

    from . import protos   # here, so that reading tensors never imports protobuf
    state = protos.CheckpointState()
    try:
        text_format.Merge(text, state)
    except text_format.ParseError as exc:
        raise FormatError(f"{path}: not a CheckpointState text proto ({exc})") from None
    if not state.model_checkpoint_path:
        raise FormatError(f"{path}: model_checkpoint_path is empty")
    return state


def latest_checkpoint(directory, filename=STATE_FILENAME):
    """Like `tf.train.latest_checkpoint`: the newest prefix listed, or None."""
    state = read_state(directory, filename)
    if state is None:
        return None
    return _listed_prefix(directory, state.model_checkpoint_path)


def _listed_prefix(directory, listed):
    """Where a prefix named in a state file is, or None.

    As written (a relative path is relative to the directory); failing that,
    the same name in the directory itself: TF1 savers record absolute paths,
    which break when a checkpoint directory is moved or copied from another
    machine (TensorFlow then gives up; the checkpoint is plainly right here).
    A V1 checkpoint is listed as its file, or as a shard pattern.
    """
    for prefix in (os.path.join(directory, listed),
                   os.path.join(directory, re.split(r"[\\/]", listed)[-1])):
        if fileio.isfile(prefix + ".index") or v1.is_v1(prefix):
            return prefix
    return None


def is_v1_prefix(prefix):
    """Whether a prefix from `resolve_prefix` is a TF1 V1 checkpoint: a V2
    bundle wherever there is an index, else a V1 table file (or shard set)."""
    return not fileio.isfile(prefix + ".index") and v1.is_v1(prefix)


def is_saved_model_dir(path):
    """Whether directory `path` holds a saved_model.pb, .pbtxt or .cpb."""
    return any(fileio.exists(os.path.join(path, n))
               for n in ("saved_model.pb", "saved_model.pbtxt", "saved_model.cpb"))


def resolve_prefix(path):
    """The bundle prefix a user path stands for.

    Accepts a prefix, a `.index` or `.data-XXXXX-of-YYYYY` file, a directory
    with a `checkpoint` state file (its latest checkpoint) or a single
    bundle, and a SavedModel directory (its `variables/variables`). A TF1 V1
    checkpoint is its own "prefix": its file, or one shard or the shard
    pattern of a sharded one (see `tfformats.v1`).
    """
    path = os.fspath(path)
    if fileio.isdir(path):
        if is_saved_model_dir(path) or fileio.isfile(os.path.join(path, "variables", "variables.index")):
            prefix = os.path.join(path, "variables", "variables")
            if not fileio.isfile(prefix + ".index"):
                raise CheckpointNotFoundError(f"{path}: SavedModel directory without variables "
                                              f"(no {prefix}.index)")
            return prefix
        state = read_state(path)
        if state is not None:
            prefix = _listed_prefix(path, state.model_checkpoint_path)
            if prefix is None:
                raise CheckpointNotFoundError(
                    f"{path}/{STATE_FILENAME} names {state.model_checkpoint_path!r} but "
                    f"neither {os.path.join(path, state.model_checkpoint_path)}.index nor a "
                    "V1 checkpoint of that name exists")
            return prefix
        indexes = sorted(n for n in fileio.listdir(path) if n.endswith(".index"))
        if len(indexes) == 1:
            return os.path.join(path, indexes[0][:-len(".index")])
        found = ", ".join(indexes[:5]) if indexes else "no .index file"
        raise CheckpointNotFoundError(
            f"{path}: directory has no '{STATE_FILENAME}' state file and no SavedModel; "
            f"expected one of those or exactly one .index file, found {found} (a TF1 V1 "
            "checkpoint: pass its file)")
    if path.endswith(".index") and fileio.isfile(path):
        return path[:-len(".index")]
    if DATA_SUFFIX.search(path) and fileio.isfile(path):
        return DATA_SUFFIX.sub("", path)
    if fileio.isfile(path + ".index"):
        return path
    if v1.is_v1(path):
        return path
    if fileio.isfile(path):
        raise CheckpointNotFoundError(
            f"{path}: a file, but not a checkpoint (expected a prefix, a .index file, a "
            ".data-XXXXX-of-YYYYY file or a TF1 V1 checkpoint file)")
    raise CheckpointNotFoundError(
        f"{path}: no checkpoint here (expected a prefix with a {os.path.basename(path)}.index "
        "file, a .index or .data file, a checkpoint directory or a SavedModel directory)")


# --- object graph ----------------------------------------------------------------

def _escape(local_name):
    return local_name.replace(".", "..").replace("/", ".S")


def object_variables(graph):
    """ObjectVariable for every attribute in a TrackableObjectGraph, by key."""
    nodes = graph.nodes
    paths = {0: ""}
    queue = [0]
    for node_id in queue:  # breadth first, so every node gets its shortest path
        for child in nodes[node_id].children:
            if child.node_id not in paths and 0 <= child.node_id < len(nodes):
                base = paths[node_id]
                paths[child.node_id] = f"{base}/{_escape(child.local_name)}" if base else _escape(child.local_name)
                queue.append(child.node_id)
    slots = {}  # slot variable node -> (variable node, slot name, optimizer node)
    for node_id, node in enumerate(nodes):
        for ref in node.slot_variables:
            slots[ref.slot_variable_node_id] = (ref.original_variable_node_id, ref.slot_name, node_id)
    out = {}
    for node_id, node in enumerate(nodes):
        path = paths.get(node_id)
        slot_of = slot_name = None
        if node_id in slots:
            original, slot_name, optimizer = slots[node_id]
            slot_of = paths.get(original)
            if path is None and slot_of is not None and optimizer in paths:
                # Slots are not children of anything; TF names them like this.
                path = f"{slot_of}/.OPTIMIZER_SLOT/{paths[optimizer]}/{_escape(slot_name)}"
        for attr in node.attributes:
            out[attr.checkpoint_key] = ObjectVariable(
                attr.checkpoint_key, path, attr.name, attr.full_name or None, slot_of, slot_name)
    return out


def saveable_keys(checkpoint_key, sorted_names):
    """The bundle keys that hold an object attribute's tensors.

    Usually the attribute's checkpoint key itself. Saveables of several
    tensors store each under the key plus a suffix instead (a tf.data
    iterator `..._STATE`, a MutableHashTable `...-keys` and `...-values`).
    """
    i = bisect.bisect_left(sorted_names, checkpoint_key)
    if i < len(sorted_names) and sorted_names[i] == checkpoint_key:
        return [checkpoint_key]
    out = []
    while i < len(sorted_names) and sorted_names[i].startswith(checkpoint_key):
        out.append(sorted_names[i])
        i += 1
    return out


# --- the reader -------------------------------------------------------------------

class CheckpointReader(Mapping):
    """A checkpoint as a Mapping of tensor name -> numpy array.

    Arrays of numeric tensors are read-only views over the memory-mapped
    data files (pass `copy=True` to `get_tensor` for a private array).
    CRC-32C of index blocks and tensors is verified unless `verify=False`.
    """

    def __init__(self, path, verify=True, opener=fileio.open_file):
        self.path = os.fspath(path)
        self.prefix = resolve_prefix(self.path)
        if is_v1_prefix(self.prefix):
            self._bundle = v1.V1Reader(self.prefix, verify=verify, opener=opener)
        else:
            self._bundle = BundleReader(self.prefix, verify=verify, opener=opener)
        self._objects = None
        self._spare_listing = None  # (shapes or None, dtypes or None), see _listing

    @property
    def bundle(self):
        """The format-level reader underneath: a bundle.BundleReader, or a v1.V1Reader."""
        return self._bundle

    # Mapping
    def __getitem__(self, name):
        return self._bundle.read(name)

    def __iter__(self):
        return (name for name, _ in self._bundle.decoded_entries())  # in key order

    def __len__(self):
        return len(self._bundle.decoded_entries())

    def __contains__(self, name):
        return self.has_tensor(name)

    # cheap, index-only information
    def shape(self, name):
        return list(self._bundle.entry(name).shape)

    def dtype(self, name):
        return self._bundle.entry(name).dtype

    def entry(self, name):
        return self._bundle.entry(name)

    def get_variable_to_shape_map(self):
        return self._listing(0)

    def get_variable_to_dtype_map(self):
        return self._listing(1)

    def _listing(self, which):
        """One of the two listing maps. One pass over the index builds both; the
        other is kept and handed out by the next call that asks for it, so every
        caller still gets dicts of its own."""
        spare = self._spare_listing
        if spare is not None and spare[which] is not None:
            self._spare_listing = None
            return spare[which]
        maps = self._bundle.listing()
        self._spare_listing = (None, maps[1]) if which == 0 else (maps[0], None)
        return maps[which]

    def has_tensor(self, name):
        if not isinstance(name, str):
            return False
        try:
            self._bundle.entry(name)
        except KeyError:
            return False
        return True

    # data
    def get_tensor(self, name, copy=False, device=None):
        """The tensor `name` as numpy, or with `device="cuda:0"` as a CuPy array."""
        if device is not None:
            from . import cuda  # lazily: only GPU users need CuPy
            return cuda.to_device(self, name, device, verify=self._bundle.verify)
        return self._bundle.read(name, copy=copy)

    def get_slice(self, name):
        """A lazy handle: `reader.get_slice(name)[10:20]` reads only those bytes."""
        self._bundle.entry(name)  # fail early on unknown names
        return TensorSlice(self._bundle, name)

    # object graph
    def object_graph(self):
        """The TrackableObjectGraph proto, or None for a name-based checkpoint."""
        if OBJECT_GRAPH_KEY not in self:
            return None
        from . import protos
        graph = protos.TrackableObjectGraph()
        try:
            graph.ParseFromString(self.get_tensor(OBJECT_GRAPH_KEY).item())
        except Exception:
            raise FormatError(f"{self.prefix}: {OBJECT_GRAPH_KEY} is not a TrackableObjectGraph") from None
        return graph

    def object_variables(self):
        """key -> ObjectVariable for every key the object graph names, and for
        the suffixed keys of saveables with several tensors (`saveable_keys`)."""
        if self._objects is None:
            graph = self.object_graph()
            objects = {} if graph is None else object_variables(graph)
            if objects:
                names = list(self)   # in key order
                present = set(names)
                for key, var in list(objects.items()):
                    if key not in present:
                        for name in saveable_keys(key, names):
                            objects.setdefault(name, var._replace(key=name))
            self._objects = objects
        return self._objects

    def object_paths(self):
        """Object path (`model/layer_with_weights-0/kernel`) -> checkpoint key."""
        return {v.path: k for k, v in self.object_variables().items()
                if v.path is not None and v.attribute == "VARIABLE_VALUE"}

    def close(self):
        self._bundle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<CheckpointReader {self.prefix!r}>"


class TensorSlice:
    """Returned by `get_slice`: index it to read part of a tensor."""

    def __init__(self, bundle, name):
        self._bundle = bundle
        self.name = name

    @property
    def shape(self):
        return list(self._bundle.entry(self.name).shape)

    @property
    def dtype(self):
        return self._bundle.entry(self.name).dtype

    def __getitem__(self, index):
        return self._bundle.read_region(self.name, index)


def open_checkpoint(path, verify=True):
    """Open any checkpoint path form; see `resolve_prefix`."""
    return CheckpointReader(path, verify=verify)


def list_variables(path):
    """Like `tf.train.list_variables`: sorted (name, shape) pairs."""
    with CheckpointReader(path) as reader:
        return sorted(reader.get_variable_to_shape_map().items())


def load_checkpoint(path, verify=True, copy=True, device=None, skip_unsupported=False, progress=False):
    """Every tensor of a checkpoint as a dict of numpy arrays (copies by default).

    Tensors no numpy array can hold (DT_VARIANT, e.g. a tf.data iterator's
    state; DT_RESOURCE) raise UnsupportedError, or are left out with
    `skip_unsupported=True`. With `device="cuda:0"` numeric tensors are CuPy
    arrays on that GPU (string tensors stay numpy); see `tfformats.cuda.load`.
    `progress` (False, True or a callable; see tfformats.progress) counts the
    bytes read, on the host.
    """
    if device is not None:
        from . import cuda  # lazily: only GPU users need CuPy
        return cuda.load(path, device, verify=verify, skip_unsupported=skip_unsupported)
    with CheckpointReader(path, verify=verify) as reader:
        skip = unsupported_tensors(reader, skip_unsupported)
        names = [name for name in reader if name not in skip]
        sizes = [tensor_nbytes(reader, name) for name in names]
        tensors = {}
        with bar(progress, sum(sizes), f"loading {os.path.basename(reader.prefix)}") as shown:
            for name, size in zip(names, sizes):
                tensors[name] = reader.get_tensor(name, copy=copy)
                shown.update(size)
        return tensors


def tensor_nbytes(reader, name):
    """The bytes a tensor's values take as an array, from the index alone (0 for
    strings and variants, whose size the index does not say): what progress counts."""
    itemsize = reader.dtype(name).itemsize
    return math.prod(reader.shape(name)) * itemsize if itemsize else 0


def unsupported_tensors(reader, skip):
    """Names of the tensors with no array form (variant, resource): returned
    when `skip` is true, else UnsupportedError naming the first."""
    names = {name: dtype for name, dtype in reader.get_variable_to_dtype_map().items()
             if dtype.as_numpy_dtype is None}
    if names and not skip:
        name = min(names)
        raise UnsupportedError(
            f"{reader.prefix}: tensor {name!r} has dtype {names[name].name}, which has "
            "no array form (TensorFlow's reader cannot return it either); pass "
            "skip_unsupported=True to load the other tensors")
    return set(names)
