"""Write proto/*.proto from the descriptors compiled into an installed TensorFlow.

Only facts travel (message names, field names, numbers, types, labels); no
source text or comments. The packages are renamed so that TensorFlow and
tfformats can be imported into one process without descriptor clashes:

    tensorflow                         -> tfformats
    third_party.py.tf_keras.protobuf   -> tfformats.keras

Run it with a Python that has TensorFlow and tf_keras installed; then run
tools/build_protos.py to compile the result. Both steps are only needed when
the proto set changes.
"""

import importlib
import pathlib
import sys

from google.protobuf import descriptor_pb2

ROOTS = [
    "tensorflow.core.protobuf.saved_model_pb2",
    "tensorflow.core.protobuf.fingerprint_pb2",
    "tensorflow.core.protobuf.tensor_bundle_pb2",
    "tensorflow.core.protobuf.trackable_object_graph_pb2",
    "tensorflow.python.training.checkpoint_state_pb2",
    "tensorflow.core.util.saved_tensor_slice_pb2",
    "tf_keras.protobuf.saved_metadata_pb2",
]
PACKAGES = {
    "tensorflow": "tfformats",
    "third_party.py.tf_keras.protobuf": "tfformats.keras",
}
F = descriptor_pb2.FieldDescriptorProto
TYPE_NAMES = {
    F.TYPE_DOUBLE: "double", F.TYPE_FLOAT: "float", F.TYPE_INT64: "int64",
    F.TYPE_UINT64: "uint64", F.TYPE_INT32: "int32", F.TYPE_FIXED64: "fixed64",
    F.TYPE_FIXED32: "fixed32", F.TYPE_BOOL: "bool", F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes", F.TYPE_UINT32: "uint32", F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64", F.TYPE_SINT32: "sint32", F.TYPE_SINT64: "sint64",
}


def out_name(fd):
    """Flat file name under proto/; Keras files get a prefix (versions.proto twice)."""
    base = fd.name.rsplit("/", 1)[-1]
    return ("keras_" + base) if fd.package.startswith("third_party") else base


def rename(type_name):
    for old, new in sorted(PACKAGES.items(), key=lambda kv: -len(kv[0])):
        if type_name.startswith("." + old + "."):
            return "." + new + type_name[len(old) + 1:]
    return type_name


def field_type(f, maps):
    if f.type in (F.TYPE_MESSAGE, F.TYPE_ENUM, F.TYPE_GROUP):
        name = rename(f.type_name)
        if name in maps:
            k, v = maps[name]
            return f"map<{field_type(k, maps)}, {field_type(v, maps)}>"
        return name
    return TYPE_NAMES[f.type]


def emit_enum(e, ind, out):
    out.append(f"{ind}enum {e.name} {{")
    if e.options.allow_alias:
        out.append(f"{ind}  option allow_alias = true;")
    for v in e.value:
        out.append(f"{ind}  {v.name} = {v.number};")
    for r in e.reserved_range:
        out.append(f"{ind}  reserved {r.start} to {r.end};")
    out.append(f"{ind}}}")


def emit_field(f, ind, syntax, maps, in_oneof):
    t = field_type(f, maps)
    label = ""
    if not in_oneof and not t.startswith("map<"):
        if f.label == F.LABEL_REPEATED:
            label = "repeated "
        elif syntax == "proto2":
            label = "required " if f.label == F.LABEL_REQUIRED else "optional "
        elif f.proto3_optional:
            label = "optional "
    opts = []
    if f.HasField("default_value"):
        d = f.default_value
        opts.append(f'default = "{d}"' if f.type in (F.TYPE_STRING, F.TYPE_BYTES) else f"default = {d}")
    if f.options.HasField("packed"):
        opts.append(f"packed = {str(f.options.packed).lower()}")
    if f.options.deprecated:
        opts.append("deprecated = true")
    suffix = f" [{', '.join(opts)}]" if opts else ""
    return f"{ind}{label}{t} {f.name} = {f.number}{suffix};"


def emit_message(m, scope, ind, syntax, maps, out):
    out.append(f"{ind}message {m.name} {{")
    inner = ind + "  "
    for n in m.nested_type:
        if not n.options.map_entry:
            emit_message(n, f"{scope}.{m.name}", inner, syntax, maps, out)
    for e in m.enum_type:
        emit_enum(e, inner, out)
    real_oneofs = {i for i, _ in enumerate(m.oneof_decl)
                   if not any(f.oneof_index == i and f.proto3_optional for f in m.field)}
    done_oneofs = set()
    for f in m.field:
        if f.HasField("oneof_index") and f.oneof_index in real_oneofs:
            i = f.oneof_index
            if i in done_oneofs:
                continue
            done_oneofs.add(i)
            out.append(f"{inner}oneof {m.oneof_decl[i].name} {{")
            for g in m.field:
                if g.HasField("oneof_index") and g.oneof_index == i:
                    out.append(emit_field(g, inner + "  ", syntax, maps, True))
            out.append(f"{inner}}}")
        else:
            out.append(emit_field(f, inner, syntax, maps, False))
    for r in m.reserved_range:
        out.append(f"{inner}reserved {r.start} to {r.end - 1};")
    for name in m.reserved_name:
        out.append(f'{inner}reserved "{name}";')
    out.append(f"{ind}}}")


def collect_maps(m, scope, maps):
    full = f"{scope}.{m.name}"
    for n in m.nested_type:
        if n.options.map_entry:
            maps[f"{full}.{n.name}"] = (n.field[0], n.field[1])
        collect_maps(n, full, maps)


def render(fd, files):
    p = descriptor_pb2.FileDescriptorProto.FromString(fd.serialized_pb)
    syntax = p.syntax or "proto2"
    package = PACKAGES[p.package]
    maps = {}
    for m in p.message_type:
        collect_maps(m, "." + package, maps)
    out = [f"// Generated by tools/protos_from_tf.py from TensorFlow's descriptors of {p.name}.",
           f'syntax = "{syntax}";', "", f"package {package};", ""]
    for dep in p.dependency:
        out.append(f'import "{dep if dep.startswith("google/") else files[dep]}";')
    if p.dependency:
        out.append("")
    for e in p.enum_type:
        emit_enum(e, "", out)
        out.append("")
    for m in p.message_type:
        emit_message(m, "." + package, "", syntax, maps, out)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(dest="proto"):
    seen = {}

    def walk(fd):
        if fd.name not in seen:
            seen[fd.name] = fd
            for dep in fd.dependencies:
                walk(dep)

    for mod in ROOTS:
        walk(importlib.import_module(mod).DESCRIPTOR)
    ours = {n: fd for n, fd in seen.items() if not n.startswith("google/")}
    files = {n: out_name(fd) for n, fd in ours.items()}
    for n, fd in ours.items():
        path = pathlib.Path(dest) / files[n]
        path.write_text(render(fd, files))
        print("wrote", path)


if __name__ == "__main__":
    main(*sys.argv[1:])
