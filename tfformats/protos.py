"""Message classes for the TensorFlow protos tfformats reads and writes.

`tools/build_protos.py` compiles `proto/*.proto` (package `tfformats`,
wire-compatible with TensorFlow's `tensorflow` package) into
`_descriptors.pb`. Loading that set into a private descriptor pool keeps
these classes apart from TensorFlow's own, so both can live in one process,
and ties no generated code to one protobuf release (protobuf >= 4.21).
"""

import importlib.resources

from google.protobuf import descriptor_pb2, descriptor_pool

try:
    from google.protobuf.message_factory import GetMessageClass as _message_class
except ImportError:  # protobuf < 4.22
    from google.protobuf.message_factory import MessageFactory as _Factory

    _message_class = _Factory().GetPrototype

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(
    importlib.resources.files(__package__).joinpath("_descriptors.pb").read_bytes()
).file:
    POOL.Add(_file)


def is_repeated(field):
    """Whether FieldDescriptor `field` is repeated, across protobuf releases."""
    try:
        return field.is_repeated  # protobuf >= 5.29; `label` is gone in 7
    except AttributeError:
        return field.label == field.LABEL_REPEATED


def message_class(full_name):
    """The message class for `full_name`, e.g. "tfformats.SavedModel"."""
    return _message_class(POOL.FindMessageTypeByName(full_name))


BundleHeaderProto = message_class("tfformats.BundleHeaderProto")
BundleEntryProto = message_class("tfformats.BundleEntryProto")
TensorShapeProto = message_class("tfformats.TensorShapeProto")
TensorSliceProto = message_class("tfformats.TensorSliceProto")
TensorProto = message_class("tfformats.TensorProto")
TrackableObjectGraph = message_class("tfformats.TrackableObjectGraph")
CheckpointState = message_class("tfformats.CheckpointState")
SavedTensorSlices = message_class("tfformats.SavedTensorSlices")   # TF1 V1 checkpoints
SavedTensorSliceMeta = message_class("tfformats.SavedTensorSliceMeta")
SavedSliceMeta = message_class("tfformats.SavedSliceMeta")
SavedSlice = message_class("tfformats.SavedSlice")
SavedModel = message_class("tfformats.SavedModel")
MetaGraphDef = message_class("tfformats.MetaGraphDef")
GraphDef = message_class("tfformats.GraphDef")
SignatureDef = message_class("tfformats.SignatureDef")
SavedObjectGraph = message_class("tfformats.SavedObjectGraph")
FingerprintDef = message_class("tfformats.FingerprintDef")
SavedMetadata = message_class("tfformats.keras.SavedMetadata")
ChunkMetadata = message_class("tfformats.proto_splitter.ChunkMetadata")   # saved_model.cpb
ChunkedMessage = message_class("tfformats.proto_splitter.ChunkedMessage")
FieldIndex = message_class("tfformats.proto_splitter.FieldIndex")
