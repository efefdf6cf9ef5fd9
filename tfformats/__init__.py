"""Read and write TensorFlow checkpoints and SavedModels without TensorFlow.

`load_checkpoint`, `list_variables`, `load_variable` and `latest_checkpoint`
are TensorFlow's (`tf.train`, see tfformats/train.py): `load_checkpoint(path)`
returns a reader, as `tf.train.load_checkpoint` does. A dict of arrays comes
from `load_tensors(path, names=None, ...)`; `open_checkpoint` is the reader
with tfformats' zero-copy defaults.
"""

from __future__ import annotations

from . import checkpoint as _checkpoint
from . import train
from ._impl import IMPLEMENTATION
from .checkpoint import CheckpointReader, load_tensors, open_checkpoint
from .dtypes import DType, as_dtype
from .errors import (AmbiguousNameError, ChecksumError, CheckpointNotFoundError, DeviceError,
                     FormatError, InvalidDeviceError, LimitError, NoCheckpointError, StorageError,
                     TensorNotFoundError, TFFormatsError, UnsupportedError)
from . import limits
from .train import latest_checkpoint, list_variables, load_checkpoint, load_variable

__version__ = "0.1.0"

# Writing, SavedModels and converters load on first use, so that reading a
# checkpoint (and `tfformats ls`) does not pay for them at start-up.
_LAZY = {
    "BundleWriter": ("writer", "BundleWriter"),
    "CheckpointManager": ("writer", "CheckpointManager"),
    "save_checkpoint": ("writer", "save_checkpoint"),
    "checkpoint_to_checkpoint": ("convert", "checkpoint_to_checkpoint"),
    "checkpoint_to_npz": ("convert", "checkpoint_to_npz"),
    "checkpoint_to_safetensors": ("convert", "checkpoint_to_safetensors"),
    "npz_to_checkpoint": ("convert", "npz_to_checkpoint"),
    "KerasReader": ("keras", "KerasReader"),
    "keras_to_checkpoint": ("keras", "keras_to_checkpoint"),
    "safetensors_to_checkpoint": ("convert", "safetensors_to_checkpoint"),
    "SavedModel": ("saved_model", "SavedModel"),
    "load_saved_model": ("saved_model", "load_saved_model"),
    "graph_constants": ("graph", "graph_constants"),
    "load_graph_def": ("graph", "load_graph_def"),
    "make_tensor_proto": ("tensor_proto", "from_numpy"),
    "make_ndarray": ("tensor_proto", "to_numpy"),
}


def _cuda():
    from . import cuda   # on first use of device=: only GPU users need it (and CuPy)
    return cuda


# The readers serve `device=` through this front end without importing it.
_checkpoint.set_device_front_end(_cuda)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfformats' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazily imported names too, for IPython completion and help()
    return sorted({*globals(), *_LAZY})


def implementation() -> str:
    """"native" when the compiled hot paths are in use, else "python"."""
    return IMPLEMENTATION


__all__ = [
    "AmbiguousNameError", "CheckpointNotFoundError", "CheckpointReader", "ChecksumError",
    "DType", "DeviceError", "FormatError", "InvalidDeviceError", "LimitError",
    "NoCheckpointError", "StorageError", "TFFormatsError", "TensorNotFoundError",
    "UnsupportedError", "as_dtype", "implementation", "latest_checkpoint", "limits",
    "list_variables", "load_checkpoint", "load_tensors", "load_variable", "open_checkpoint",
    "train", *_LAZY,
]
