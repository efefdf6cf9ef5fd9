"""Our protos against TensorFlow's: same messages, field numbers, types and labels,
and the compiled descriptor set in sync with proto/*.proto."""

import importlib
import pathlib

import pytest

from tfformats import protos

from conftest import requires_tf

RENAMED = {"tensorflow": "tfformats", "third_party.py.tf_keras.protobuf": "tfformats.keras"}
TF_MODULES = ["tensorflow.core.protobuf.saved_model_pb2", "tensorflow.core.protobuf.fingerprint_pb2",
              "tensorflow.core.protobuf.tensor_bundle_pb2",
              "tensorflow.core.protobuf.trackable_object_graph_pb2",
              "tensorflow.python.training.checkpoint_state_pb2",
              "tensorflow.core.util.saved_tensor_slice_pb2",
              "tf_keras.protobuf.saved_metadata_pb2"]


def _ours(full_name):
    for old, new in sorted(RENAMED.items(), key=lambda kv: -len(kv[0])):
        if full_name.startswith(old + "."):
            return new + full_name[len(old):]
    return full_name


def _shape(field):
    """What the wire format depends on: name aside, type and repeatedness."""
    repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
    return field.name, field.type, repeated


def _messages(file_descriptor, seen):
    """Every message descriptor of a file and the files it imports."""
    if file_descriptor.name in seen:
        return
    seen.add(file_descriptor.name)
    for dep in file_descriptor.dependencies:
        yield from _messages(dep, seen)
    todo = list(file_descriptor.message_types_by_name.values())
    while todo:
        message = todo.pop()
        todo.extend(message.nested_types)
        yield message


@requires_tf
def test_every_tensorflow_message_has_a_wire_compatible_twin():
    seen, checked = set(), 0
    for module in TF_MODULES:
        for theirs in _messages(importlib.import_module(module).DESCRIPTOR, seen):
            if theirs.full_name.startswith("google.protobuf."):
                continue
            ours = protos.POOL.FindMessageTypeByName(_ours(theirs.full_name))
            assert {f.number: _shape(f) for f in ours.fields} == {
                f.number: _shape(f) for f in theirs.fields}, theirs.full_name
            for field in theirs.fields:
                if field.message_type is not None:
                    assert ours.fields_by_number[field.number].message_type.full_name == _ours(
                        field.message_type.full_name)
            checked += 1
    assert checked > 100


def test_descriptor_set_matches_proto_sources():
    """tools/build_protos.py output is up to date with proto/*.proto (names and fields)."""
    sources = pathlib.Path(__file__).parent.parent / "proto"
    for path in sorted(sources.glob("*.proto")):
        text = path.read_text()
        package = next(line.split()[1].rstrip(";") for line in text.splitlines()
                       if line.startswith("package "))
        for line in text.splitlines():
            if line.startswith("message "):
                name = f"{package}.{line.split()[1]}"
                assert protos.POOL.FindMessageTypeByName(name), name
