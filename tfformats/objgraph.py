"""Object graphs: how TF2 names what it saves after the objects that own it.

A checkpoint's `_CHECKPOINTABLE_OBJECT_GRAPH` (a TrackableObjectGraph) and a
SavedModel's object graph (a SavedObjectGraph) are both lists of nodes whose
children are (node id, local name) references from the root, node 0. An
object's path is the local names along the shortest way from the root, each
escaped (`escape`) and joined by "/"; a variable's checkpoint key is its path
plus `/.ATTRIBUTES/<attribute>`. Optimizer slots are no one's children: an
optimizer node lists them as slot variables, and they are named
`<variable path>/.OPTIMIZER_SLOT/<optimizer path>/<slot name>`.
The byte layout is described in docs/formats.md ("Object graph").
"""

from __future__ import annotations

import bisect
from collections import namedtuple
from typing import Any, Iterable, Mapping, Sequence

from . import limits
from .errors import FormatError

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
ATTRIBUTES = "/.ATTRIBUTES/"
OPTIMIZER_SLOT = ".OPTIMIZER_SLOT"
VARIABLE_VALUE = "VARIABLE_VALUE"
VARIABLE_SUFFIX = ATTRIBUTES + VARIABLE_VALUE

ObjectVariable = namedtuple("ObjectVariable", "key path attribute full_name slot_of slot_name")
ObjectVariable.__doc__ = """What the object graph says about one checkpoint key.

`path` is the object path (`model/layer_with_weights-0/kernel`), `attribute`
the attribute name (`VARIABLE_VALUE`), `full_name` the TF1-style variable name
if recorded, and for optimizer slots `slot_of` is the object path of the
variable the slot belongs to and `slot_name` the slot (`m`, `v`)."""


# --- names --------------------------------------------------------------------------

def escape(local_name: str) -> str:
    """A local name as one path component: "." becomes "..", "/" becomes ".S"."""
    return local_name.replace(".", "..").replace("/", ".S")


def unescape(component: str, name: str) -> str:
    """An escaped path component back to the local name it stands for;
    `name` (the tensor being named) is only for the error message."""
    out = []
    i = 0
    while i < len(component):
        c = component[i]
        if c == ".":
            code = component[i + 1:i + 2]
            if code not in (".", "S"):
                raise FormatError(
                    f"tensor {name!r}: {component!r} is not an escaped object-path component "
                    "('.' must be written '..' and '/' as '.S'); pass object_graph=False to "
                    "store names as they are")
            out.append("." if code == "." else "/")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# --- reading a graph ------------------------------------------------------------------

def parse_graph(raw: bytes, where: str) -> Any:
    """The TrackableObjectGraph serialized in `raw` (bytes); `where` names it in errors."""
    from . import protos   # here, so that reading tensors never imports protobuf
    graph = protos.TrackableObjectGraph()
    try:
        graph.ParseFromString(bytes(raw))
    except Exception:
        raise FormatError(f"{where}: {OBJECT_GRAPH_KEY} is not a TrackableObjectGraph") from None
    check_node_count(graph, where)
    return graph


def check_node_count(graph: Any, where: str) -> None:
    """LimitError if an object graph (checkpoint or SavedModel) has more nodes
    than the limit max_object_graph_nodes: every path walk is linear in them."""
    limits.check("max_object_graph_nodes", len(graph.nodes), f"{where}: nodes of the object graph")


def node_paths(nodes: Sequence[Any]) -> dict[int, str]:
    """node id -> object path for every node reachable from the root (""),
    breadth first, so that every node gets its shortest path, as TF names it.
    `nodes` are the nodes of a TrackableObjectGraph or a SavedObjectGraph."""
    paths = {0: ""} if len(nodes) else {}
    queue = list(paths)
    for node_id in queue:
        base = paths[node_id]
        for child in nodes[node_id].children:
            if child.node_id not in paths and 0 <= child.node_id < len(nodes):
                name = escape(child.local_name)
                paths[child.node_id] = f"{base}/{name}" if base else name
                queue.append(child.node_id)
    return paths


def slot_variables(nodes: Sequence[Any]) -> dict[int, tuple[int, str, int]]:
    """slot variable node -> (variable node, slot name, optimizer node)."""
    return {ref.slot_variable_node_id: (ref.original_variable_node_id, ref.slot_name, node_id)
            for node_id, node in enumerate(nodes) for ref in node.slot_variables}


def object_variables(graph: Any) -> dict[str, ObjectVariable]:
    """ObjectVariable for every attribute in a TrackableObjectGraph, by key."""
    nodes = graph.nodes
    paths = node_paths(nodes)
    slots = slot_variables(nodes)
    out = {}
    for node_id, node in enumerate(nodes):
        path = paths.get(node_id)
        slot_of = slot_name = None
        if node_id in slots:
            original, slot_name, optimizer = slots[node_id]
            slot_of = paths.get(original)
            if path is None and slot_of is not None and optimizer in paths:
                path = f"{slot_of}/{OPTIMIZER_SLOT}/{paths[optimizer]}/{escape(slot_name)}"
        for attr in node.attributes:
            out[attr.checkpoint_key] = ObjectVariable(
                attr.checkpoint_key, path, attr.name, attr.full_name or None, slot_of, slot_name)
    return out


def saveable_keys(checkpoint_key: str, sorted_names: Sequence[str]) -> list[str]:
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


# --- building a graph for writing ---------------------------------------------------

def _parse_object_name(name):
    """An object path or checkpoint key -> (key, object path parts, slot, attribute).

    `slot` is None or (variable parts, optimizer parts, slot name part).
    """
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be str, got {type(name).__name__} {name!r}")
    path, sep, attribute = name.partition(ATTRIBUTES)
    if not sep:
        attribute = VARIABLE_VALUE
    parts = path.split("/")
    if "" in parts or not attribute:
        raise FormatError(f"tensor {name!r} is not an object path such as "
                          "'model/layer_with_weights-0/kernel'; pass object_graph=False to "
                          "store names as they are")
    slot = None
    if OPTIMIZER_SLOT in parts:
        at = parts.index(OPTIMIZER_SLOT)
        if at == 0 or len(parts) - at < 3:
            raise FormatError(f"tensor {name!r}: expected '<variable path>/{OPTIMIZER_SLOT}/"
                              "<optimizer path>/<slot name>'")
        slot = (tuple(parts[:at]), tuple(parts[at + 1:-1]), parts[-1])
    return f"{path}{ATTRIBUTES}{attribute}", tuple(parts), slot, attribute


def build_object_graph(names: Iterable[str], full_names: Mapping[str, str] | None = None
                       ) -> tuple[Any, dict[str, str]]:
    """A TrackableObjectGraph for object paths / checkpoint keys, and their keys.

    Returns (graph, {name: checkpoint key}). Each path component becomes a
    child edge from the root; `.OPTIMIZER_SLOT` paths become slot variables
    of their optimizer. `full_names` maps names or keys to the TF1-style
    variable names to record (default: the object path).
    """
    from . import protos
    full_names = full_names or {}
    graph = protos.TrackableObjectGraph()
    graph.nodes.add()
    ids = {(): 0}

    def node(parts, name):
        if parts not in ids:
            parent = node(parts[:-1], name)
            ids[parts] = len(graph.nodes)
            graph.nodes.add()
            graph.nodes[parent].children.add(node_id=ids[parts],
                                             local_name=unescape(parts[-1], name))
        return ids[parts]

    keys = {}
    taken = set()
    for name in names:
        key, parts, slot, attribute = _parse_object_name(name)
        if key in taken:
            raise FormatError(f"tensor {name!r}: another name also stands for {key!r}")
        keys[name] = key
        taken.add(key)
        if slot is None:
            node_id = node(parts, name)
        else:
            variable, optimizer, slot_name = slot
            node_id = ids.get(parts)
            if node_id is None:  # slot variables hang off their optimizer, not a parent
                node_id = ids[parts] = len(graph.nodes)
                graph.nodes.add()
                graph.nodes[node(optimizer, name)].slot_variables.add(
                    original_variable_node_id=node(variable, name),
                    slot_name=unescape(slot_name, name), slot_variable_node_id=node_id)
        graph.nodes[node_id].attributes.add(
            name=unescape(attribute, name), checkpoint_key=key,
            full_name=full_names.get(name, full_names.get(key, key.partition(ATTRIBUTES)[0])))
    for n in graph.nodes:
        n.has_checkpoint_values.value = True
    return graph, keys
