"""Read and write TensorFlow checkpoints and SavedModels without TensorFlow."""

from ._impl import IMPLEMENTATION
from .checkpoint import (CheckpointReader, latest_checkpoint, list_variables, load_checkpoint,
                         open_checkpoint)
from .dtypes import DType, as_dtype
from .errors import (ChecksumError, CheckpointNotFoundError, DeviceError, FormatError,
                     TensorNotFoundError, TFFormatsError, UnsupportedError)
from .writer import BundleWriter, CheckpointManager, save_checkpoint
from .convert import (checkpoint_to_npz, checkpoint_to_safetensors, npz_to_checkpoint,
                      safetensors_to_checkpoint)
from .saved_model import SavedModel, load_saved_model
from .graph import graph_constants, load_graph_def
from .tensor_proto import from_numpy as make_tensor_proto, to_numpy as make_ndarray

__version__ = "0.1.0"


def implementation():
    """"native" when the compiled hot paths are in use, else "python"."""
    return IMPLEMENTATION


__all__ = [
    "CheckpointNotFoundError", "CheckpointReader", "ChecksumError", "DType", "DeviceError",
    "FormatError", "TFFormatsError", "TensorNotFoundError", "UnsupportedError", "as_dtype",
    "implementation", "latest_checkpoint", "list_variables", "load_checkpoint",
    "open_checkpoint",
    "BundleWriter", "CheckpointManager", "save_checkpoint",
    "checkpoint_to_npz", "checkpoint_to_safetensors", "npz_to_checkpoint",
    "safetensors_to_checkpoint",
    "SavedModel", "load_saved_model", "graph_constants", "load_graph_def",
    "make_tensor_proto", "make_ndarray",
]
