"""Exception classes shared by the native and the pure-Python implementation.

Every class derives from `TFFormatsError` and from the built-in exception a
caller would naturally catch, so `except KeyError` and `except ValueError`
keep working for people who do not know tfformats' own classes.

`Finding` is the other way a problem is reported: by the checks that go on
after one (tfformats.validate, `SavedModel.findings()`), instead of raising.
"""

from typing import Iterable, NamedTuple, Optional


class TFFormatsError(Exception):
    """Base class of every error tfformats raises on purpose."""


class FormatError(TFFormatsError, ValueError):
    """A file is not what it claims to be: truncated, corrupt, out of bounds."""


class ChecksumError(FormatError):
    """A CRC-32C stored in a file does not match the bytes it covers."""


class LimitError(FormatError):
    """A file asks for more than one of tfformats' limits on untrusted input
    allows (tfformats/limits.py). `limit` is the limit's name; the message
    says how to raise it when the file is trusted."""

    def __init__(self, message: str, limit: Optional[str] = None) -> None:
        super().__init__(message)
        self.limit = limit


class StorageError(TFFormatsError, OSError):
    """Writing failed for a reason of the storage, not of the data: a full
    disk, a file too large for the file system, no permission. Nothing was
    committed; the message names the file being written. Also: remote storage
    failed a request (network, server, timeout) or ignores byte ranges."""


class TensorNotFoundError(TFFormatsError, KeyError):
    """A tensor name is not in the checkpoint."""

    def __str__(self):  # KeyError quotes its argument; a sentence reads better
        return str(self.args[0]) if self.args else ""


class AmbiguousNameError(TensorNotFoundError):
    """A name (a TF1/Keras variable name, usually) stands for several different
    tensors; `candidates` lists their checkpoint keys. See tfformats/names.py."""

    def __init__(self, message: str, candidates: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


class CheckpointNotFoundError(TFFormatsError, FileNotFoundError):
    """A path names no checkpoint, or a file the checkpoint needs is missing."""


class NoCheckpointError(CheckpointNotFoundError, ValueError):
    """A directory holds no checkpoint tfformats can find. Also a ValueError,
    which is what `tf.train.load_checkpoint` raises for such a directory."""


class UnsupportedError(TFFormatsError, NotImplementedError):
    """Valid data that tfformats cannot handle (yet), e.g. DT_VARIANT tensors."""


class DeviceError(TFFormatsError, RuntimeError):
    """A GPU was asked for but CuPy or a CUDA device is not available."""


class InvalidDeviceError(DeviceError, ValueError):
    """A device specification that names no CUDA device ("cuda:x", "tpu")."""


class Finding(NamedTuple):
    """One problem a check found. `check` names its kind ("crc", "index",
    "entry", "shard", "bounds", "tensor", "object-graph", "proto", "path",
    "signature", "assets", "variables", "fingerprint", "error", ...),
    `message` says what is wrong (without the file in front), `file` is the
    file concerned, `tensor` and `offset` locate it there when known."""

    check: str
    message: str
    file: Optional[str] = None
    tensor: Optional[str] = None
    offset: Optional[int] = None
