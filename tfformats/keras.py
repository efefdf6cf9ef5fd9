"""Keras weight files: the `.keras` archive, Keras 3 `.weights.h5` and legacy
Keras 2 `.h5` (full model or weights only), read like checkpoints.

`KerasReader` is a Mapping of tensor name -> numpy array with the reader API
of `tfformats.checkpoint.CheckpointReader` (`shape`, `dtype`, `get_tensor`,
`get_slice`, ...). Tensors are named by their HDF5 dataset path
(`layers/dense/vars/0`, `model_weights/dense/dense/kernel:0`); every lookup
also accepts the variable name Keras shows (`dense/kernel`, `Variable.path`
in Keras 3, `Variable.name` without `:0` in tf-keras). `checkpoint_keys()`
says which key each variable has in the TF checkpoint tf-keras'
`save_weights` writes for the same model, which is what `to_checkpoint`
produces. The layouts are described in docs/keras.md.

HDF5 is decoded by h5py (the `tfformats[keras]` extra), given a file object
over `tfformats.fileio`; the data of contiguous, unfiltered datasets is
served as zero-copy views of the file's memory map (also through an
uncompressed `.keras` zip member). Untrusted input: zip members are checked
(names, sizes, compression ratio) before any is read, every dataset offset
and size is checked against the bytes that are there, a dataset h5py must
decode may not claim more than its stored bytes can expand to, and nothing
is unpickled: a `model.weights.npz` (pickled dicts, which Keras itself then
refuses to load) raises UnsupportedError.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
import zipfile
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import dtypes, fileio
from .errors import CheckpointNotFoundError, FormatError, TensorNotFoundError, UnsupportedError

if TYPE_CHECKING:
    import numpy as np
else:   # imported on first use (tfformats/_lazy.py): `ls` of a checkpoint passes through here
    from ._lazy import numpy as np

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
EXTENSIONS = (".keras", ".h5", ".hdf5")
_MAX_JSON = 64 << 20          # config.json / metadata.json
_MAX_ZIP_RATIO = 1032         # deflate expands at most about this much (see convert.py)
_MAX_DATASETS = 1_000_000
_SMALL = 1 << 20              # a fill-value dataset may be this big without stored bytes
_ATTRIBUTES = "/.ATTRIBUTES/VARIABLE_VALUE"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise UnsupportedError("reading Keras .keras/.h5 files needs h5py: "
                               "pip install 'tfformats[keras]'") from None
    return h5py


def is_keras_path(path: str | os.PathLike) -> bool:
    """Whether `path` names a Keras weight file by its extension (`.keras`,
    `.h5`, `.hdf5`, `.weights.h5`)."""
    return os.fspath(path).lower().endswith(EXTENSIONS)


# --- file objects over a fileio source ----------------------------------------------

class _Window(io.RawIOBase):
    """A read-only, seekable file object over bytes [start, start+size) of a
    `fileio` source: how h5py reads a file (or a stored zip member) without
    opening it itself."""

    def __init__(self, source, start, size):
        self.source, self.start, self.length, self.pos = source, start, size, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        base = (0, self.pos, self.length)[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, buffer):
        n = max(0, min(len(buffer), self.length - self.pos))
        buffer[:n] = self.source.view(self.start + self.pos, n)
        self.pos += n
        return n


class _Bytes:
    """A `fileio` source look-alike over bytes in memory (a deflated member)."""

    def __init__(self, path, data):
        self.path, self._view = path, memoryview(data).toreadonly()

    def size(self):
        return len(self._view)

    def view(self, offset, n, what="read"):
        if offset < 0 or n < 0 or offset + n > len(self._view):
            raise FormatError(f"{self.path}: {what} of {n} bytes at offset {offset} lies "
                              f"outside its {len(self._view)} bytes")
        return self._view[offset:offset + n]

    def close(self):
        pass


# --- the .keras archive ---------------------------------------------------------------

def _member_problem(info, file_size):
    name = info.filename
    parts = re.split(r"[\\/]", name)
    if (not name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name)
            or ".." in parts or "\0" in name):
        return "a name that escapes the archive"
    if info.compress_size > file_size:
        return f"{info.compress_size} stored bytes, more than the file's {file_size}"
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        return f"{info.file_size} bytes stored as {info.compress_size} without compression"
    if info.file_size > _MAX_ZIP_RATIO * max(info.compress_size, 1):
        return f"{info.file_size} bytes from {info.compress_size}: not what compression does"
    return None


class _Archive:
    """The members of a `.keras` zip that tfformats uses, each checked first."""

    def __init__(self, path, source):
        self.path = path
        file_size = source.size()
        try:
            self.zip = zipfile.ZipFile(_Window(source, 0, file_size))
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
            raise FormatError(f"{path}: not a .keras archive (zip: {exc})") from None
        seen = set()
        for info in infos:
            problem = _member_problem(info, file_size)
            if problem is None and info.filename in seen:
                problem = "a second member of that name"
            if problem:
                raise FormatError(f"{path}: zip member {info.filename!r:.200} at offset "
                                  f"{info.header_offset}: {problem}")
            seen.add(info.filename)
        self.members = {i.filename: i for i in infos}
        self.source = source

    def json(self, name):
        info = self.members.get(name)
        if info is None:
            return None
        if info.file_size > _MAX_JSON:
            raise FormatError(f"{self.path}: {name} claims {info.file_size} bytes, more than "
                              f"the limit of {_MAX_JSON}")
        try:
            value = json.loads(self.zip.read(info))
        except (ValueError, RecursionError, zipfile.BadZipFile, EOFError) as exc:
            raise FormatError(f"{self.path}: {name} at offset {info.header_offset} is not "
                              f"JSON ({exc})") from None
        if not isinstance(value, dict):
            raise FormatError(f"{self.path}: {name} is not a JSON object")
        return value

    def weights(self):
        """(source, start, size) of model.weights.h5: a window of the archive
        when the member is stored, else its inflated bytes."""
        info = self.members.get("model.weights.h5")
        if info is None:
            if "model.weights.npz" in self.members:
                raise UnsupportedError(
                    f"{self.path}: its weights are model.weights.npz, whose members Keras "
                    "writes as pickled dicts; tfformats never unpickles (Keras itself refuses "
                    "to load them with allow_pickle=False). Re-save the model as .keras with "
                    "the default HDF5 weights")
            raise FormatError(f"{self.path}: .keras archive without model.weights.h5 (members: "
                              f"{', '.join(sorted(self.members))[:300]})")
        if info.compress_type == zipfile.ZIP_STORED:
            header = self.source.view(info.header_offset, 30, "zip local header")
            if bytes(header[:4]) != ZIP_SIGNATURE:
                raise FormatError(f"{self.path}: zip member model.weights.h5 at offset "
                                  f"{info.header_offset}: no local header there")
            name_len, extra_len = struct.unpack_from("<HH", header, 26)
            start = info.header_offset + 30 + name_len + extra_len
            self.source.view(start, info.file_size, "zip member model.weights.h5")  # bounds
            return self.source, start, info.file_size
        try:
            data = self.zip.read(info)
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
            raise FormatError(f"{self.path}: zip member model.weights.h5: {exc}") from None
        return _Bytes(f"{self.path}/model.weights.h5", data), 0, len(data)


# --- naming: HDF5 layouts -> Keras variable names and checkpoint keys -------------------

def _snake(name):
    """Keras' snake_case of a class name (`Conv2D` -> `conv2d`, `LSTM` -> `lstm`):
    how Keras 3 names a layer's group in a weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


_KERNEL_BIAS = ("dense", "conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose",
                "conv3d_transpose", "einsum_dense")
_RNN = {"lstm": "lstm_cell", "gru": "gru_cell", "simple_rnn": "simple_rnn_cell"}
_NON_TRAINABLE = {"batch_normalization": {"moving_mean", "moving_variance"}}


def _attribute_names(kind, config, n):
    """The names of a layer's `n` variables in the order Keras stores them, from
    its class (snake case) and config; None when unknown."""
    config = config or {}
    if kind in _KERNEL_BIAS:
        names = ["kernel", "bias"] if config.get("use_bias", n == 2) else ["kernel"]
    elif kind == "batch_normalization":
        names = (["gamma"] if config.get("scale", True) else []) + \
                (["beta"] if config.get("center", True) else []) + ["moving_mean", "moving_variance"]
    elif kind == "layer_normalization":
        names = (["gamma"] if config.get("scale", True) else []) + \
                (["beta"] if config.get("center", True) else [])
    elif kind == "embedding":
        names = ["embeddings"]
    elif kind in _RNN.values():
        names = ["kernel", "recurrent_kernel", "bias"] if config.get("use_bias", n == 3) \
            else ["kernel", "recurrent_kernel"]
    else:
        return None
    return names if len(names) == n else None


_SLOTS = {"adam": ("momentum", "velocity"), "adamw": ("momentum", "velocity"),
          "adamax": ("m", "u"), "nadam": ("momentum", "velocity"), "adagrad": ("accumulator",),
          "rmsprop": ("velocity",), "lion": ("momentum",)}


class _Var:
    """One tensor of a weights file: where it is and what it is called."""

    __slots__ = ("path", "name", "key", "trainable")

    def __init__(self, path, name=None, key=None, trainable=True):
        self.path, self.name, self.key, self.trainable = path, name, key, trainable


def _ordered_children(group, config_layers, datasets):
    """(h5 group name, layer config or None) of a Keras 3 container in model order:
    by the config's layer list when there is one (each class numbered as Keras
    numbers them), else by where their data lies in the file (write order)."""
    names = list(group.keys())
    if config_layers is not None:
        used, order = {}, []
        for layer in config_layers:
            if not isinstance(layer, dict):
                continue
            kind = _snake(str(layer.get("class_name", "")))
            count = used.get(kind)
            used[kind] = 0 if count is None else count + 1
            order.append((kind if count is None else f"{kind}_{count + 1}", layer))
        if all(name in dict(order) for name in names):
            return [(n, c) for n, c in order if n in group]

    def first_offset(name):
        prefix = f"{group.name.lstrip('/')}/{name}/"
        offsets = [o for p, o in datasets.items() if p.startswith(prefix) and o is not None]
        return (min(offsets) if offsets else math.inf, name)
    return [(n, None) for n in sorted(names, key=first_offset)]


def _numbered(group):
    """The datasets `0`, `1`, ... of a Keras 3 `vars` group, in index order."""
    if group is None:
        return []
    return [group[k] for k in sorted((k for k in group.keys() if k.isdigit()), key=int)]


def _scope(outer, cfg, name):
    """The prefix of variable names inside a model: a Sequential model builds its
    layers inside its own name scope (`sequential/dense/kernel`); a functional
    model's layers are built before it is (`dense/kernel`)."""
    if isinstance(cfg, dict) and cfg.get("class_name") == "Sequential" and isinstance(name, str):
        return f"{outer}{name}/"
    return outer


def _keras3_names(f, config, datasets):
    """Variables of a Keras 3 weights file by path, named and keyed as above."""
    found = {}

    def layer(group, cfg, ckpt, scope):
        h5py = _h5py()
        vars_group = group.get("vars")
        label = None
        if vars_group is not None:
            label = vars_group.attrs.get("name")
        inner = cfg.get("config") if isinstance(cfg, dict) else None
        inner = inner if isinstance(inner, dict) else {}   # config.json is untrusted too
        if isinstance(label, bytes):
            label = label.decode("utf-8", "replace")
        label = label if isinstance(label, str) else inner.get("name") or group.name.split("/")[-1]
        kind = _snake(str(cfg["class_name"])) if isinstance(cfg, dict) and "class_name" in cfg \
            else re.sub(r"_\d+$", "", group.name.split("/")[-1])
        trainable = inner.get("trainable", True) is not False
        if isinstance(group.get("layers"), h5py.Group):   # a nested model
            container(group["layers"], inner.get("layers"), ckpt, _scope(scope, cfg, label))
            return
        label = scope + label
        own = _numbered(vars_group)
        names = _attribute_names(kind, inner, len(own))
        for i, ds in enumerate(own):
            attr = names[i] if names else None
            var = _Var(ds.name.lstrip("/"), f"{label}/{attr}" if attr else None,
                       f"{ckpt}{attr}{_ATTRIBUTES}" if attr else None,
                       trainable and attr not in _NON_TRAINABLE.get(kind, ()))
            found[var.path] = var
        cell = group.get("cell")
        if kind in _RNN and isinstance(cell, h5py.Group):
            cell_vars = _numbered(cell.get("vars"))
            names = _attribute_names(_RNN[kind], inner, len(cell_vars))
            for i, ds in enumerate(cell_vars):
                attr = names[i] if names else None
                found[ds.name.lstrip("/")] = _Var(
                    ds.name.lstrip("/"), f"{label}/{_RNN[kind]}/{attr}" if attr else None,
                    f"{ckpt}cell/{attr}{_ATTRIBUTES}" if attr else None, trainable)

    def container(group, config_layers, ckpt, scope):
        with_weights = 0
        for name, cfg in _ordered_children(group, config_layers, datasets):
            child = group[name]
            prefix = f"{child.name.lstrip('/')}/"
            if not any(p.startswith(prefix) for p in datasets):
                continue
            layer(child, cfg, f"{ckpt}layer_with_weights-{with_weights}/", scope)
            with_weights += 1

    model_cfg = (config or {}).get("config", {}) if isinstance(config, dict) else {}
    if isinstance(f.get("layers"), _h5py().Group):
        layers_cfg = model_cfg.get("layers") if isinstance(model_cfg, dict) else None
        root_name = model_cfg.get("name") if isinstance(model_cfg, dict) else None
        container(f["layers"], layers_cfg if isinstance(layers_cfg, list) else None, "",
                  _scope("", config, root_name))
    trainable_names = [v.name for v in found.values() if v.trainable and v.name]
    _keras3_optimizer(f, config, found, trainable_names)
    return found


def _keras3_optimizer(f, config, found, trainable_names):
    """Name the optimizer's `vars/N`: iteration, learning_rate, then its slots
    for each trainable variable in turn (Keras 3 builds them in that order);
    keys as tf-keras' optimizer (`_iterations`, `_learning_rate`, `_variables/N`)."""
    group = f.get("optimizer/vars")
    own = _numbered(group) if isinstance(group, _h5py().Group) else []
    if not own:
        return
    label = group.attrs.get("name")
    label = label.decode() if isinstance(label, bytes) else label
    compiled = (config or {}).get("compile_config") or {}
    optimizer = compiled.get("optimizer") if isinstance(compiled, dict) else None
    kind = _snake(str(optimizer.get("class_name", ""))) if isinstance(optimizer, dict) else None
    options = optimizer.get("config", {}) if isinstance(optimizer, dict) else {}
    if not isinstance(options, dict):
        options = {}
    label = label if isinstance(label, str) else options.get("name")
    slots = _SLOTS.get(kind)
    if kind == "sgd":
        slots = ("momentum",) if options.get("momentum") else ()
    # Keras 3 stores the learning rate as a variable; tf-keras' `.keras` does not.
    fixed = ["iteration", "learning_rate"][:len(own) - len(slots or ()) * len(trainable_names)]
    if slots is None and trainable_names and (len(own) - 2) % len(trainable_names) == 0:
        # A bare .weights.h5 does not say which optimizer wrote it: the keys
        # follow from the order alone, the slot names do not.
        fixed, names = ["iteration", "learning_rate"], [None] * len(own)
    elif slots is None or not fixed or fixed[0] != "iteration":
        return
    else:
        names = fixed + [f"{var.replace('/', '_')}_{slot}" for var in trainable_names
                         for slot in slots]
    if not isinstance(label, str):
        label = "optimizer"
    names[:len(fixed)] = fixed
    keys = ["optimizer/_iterations", "optimizer/_learning_rate"][:len(fixed)] + [
        f"optimizer/_variables/{i}" for i in range(1, len(own) - len(fixed) + 1)]
    for ds, name, key in zip(own, names, keys):
        path = ds.name.lstrip("/")
        found[path] = _Var(path, f"{label}/{name}" if name else None, key + _ATTRIBUTES, False)


def _strings(values):
    out = []
    for v in np.asarray(values).ravel().tolist():
        out.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
    return out


def _legacy_names(f, root):
    """Variables of a tf-keras HDF5 file (`root`: the group with `layer_names`),
    named by their `weight_names` without `:0`, keyed as tf-keras' TF format."""
    found = {}
    with_weights = 0
    for layer_name in _strings(root.attrs.get("layer_names", [])):
        group = root.get(layer_name)
        if group is None:
            raise FormatError(f"{f.filename}: layer_names lists {layer_name!r:.100}, which has "
                              "no group")
        weights = _strings(group.attrs.get("weight_names", []))
        if not weights:
            continue
        ckpt = f"layer_with_weights-{with_weights}/"
        with_weights += 1
        sub, last = -1, None
        for weight in weights:
            path = f"{group.name}/{weight}".lstrip("/")
            parts = re.sub(r":\d+$", "", weight).split("/")
            prefix = ckpt
            if parts[0] != layer_name:      # a nested model: its layers in turn
                if parts[0] != last:
                    sub, last = sub + 1, parts[0]
                prefix = f"{ckpt}layer_with_weights-{sub}/"
            rest = parts[1:]
            if len(rest) == 2 and rest[0].endswith("_cell"):
                rest = ["cell", rest[1]]
            key = f"{prefix}{'/'.join(rest)}{_ATTRIBUTES}" if 1 <= len(rest) <= 2 else None
            found[path] = _Var(path, "/".join(parts), key)
    optimizer = f.get("optimizer_weights")
    if optimizer is not None:
        weights = _strings(optimizer.attrs.get("weight_names", []))
        new_style = bool(weights) and weights[0] == "iteration:0"
        for i, weight in enumerate(weights):
            path = f"optimizer_weights/{weight}"
            key = None
            if new_style:
                key = ("optimizer/_iterations" if i == 0 else f"optimizer/_variables/{i}") + _ATTRIBUTES
            found[path] = _Var(path, re.sub(r":\d+$", "", weight), key, False)
    return found


# --- the reader ------------------------------------------------------------------------

class _Tensor:
    __slots__ = ("path", "dataset", "shape", "dtype", "offset", "var")

    def __init__(self, path, dataset, shape, dtype, offset):
        self.path, self.dataset, self.shape, self.dtype, self.offset = (
            path, dataset, shape, dtype, offset)
        self.var = None


def _contiguous_offset(h5py, ds):
    """Where a dataset's bytes lie in the HDF5 file when they can be mapped as they
    are (contiguous, unfiltered, no external storage, native byte order), else None."""
    try:
        plist = ds.id.get_create_plist()
        if (plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters()
                or plist.get_external_count() or not ds.dtype.isnative):
            return None
        return ds.id.get_offset()
    except Exception:   # h5py's own errors: the general path decides
        return None


class KerasReader(Mapping):
    """A Keras weight file as a Mapping of HDF5 dataset path -> numpy array.

    `kind` is "keras" (the zip), "keras3_h5" (a Keras 3 `.weights.h5`),
    "legacy_h5" (tf-keras `model.save("x.h5")` or `save_weights("x.h5")`) or
    "hdf5" (another HDF5 file: datasets by path, no Keras names). `config`
    and `metadata` are the archive's JSON (or the legacy `model_config`).
    A bare `.weights.h5` has no config: pass the model's (`config.json` of its
    `.keras`, or `json.loads(model.to_json())`) as `config` to name what its
    layers' classes alone cannot (a BatchNormalization without `center`, the
    optimizer's slots, a Sequential model's name scope).
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True,
                 config: Optional[dict] = None) -> None:
        h5py = _h5py()
        self.path = os.fspath(path)
        self.prefix = self.path    # what messages and the command line call it
        # For the checkpoint readers' signature: Keras files carry no data
        # checksums (h5py checks those of the HDF5 metadata itself).
        self.verify = verify
        if fileio.isdir(self.path):
            raise CheckpointNotFoundError(f"{self.path}: a directory, not a Keras file")
        self._source = fileio.open_file(self.path)
        self._file = None
        try:
            self._open(h5py, config)
        except BaseException:
            self.close()
            raise

    def _open(self, h5py, config):
        head = bytes(self._source.view(0, min(8, self._source.size()), "signature"))
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict (a model's config.json), not {type(config)}")
        self.config, self.metadata = config, None
        self.kind = "hdf5"
        if head.startswith(ZIP_SIGNATURE):
            archive = _Archive(self.path, self._source)
            self.metadata = archive.json("metadata.json")
            self.config = archive.json("config.json")
            if self.config is None:
                raise FormatError(f"{self.path}: .keras archive without config.json")
            self._data, self._base, size = archive.weights()
            self.kind = "keras"
            where = f"{self.path}: model.weights.h5"
        elif head == HDF5_SIGNATURE:
            self._data, self._base, size = self._source, 0, self._source.size()
            where = self.path
        else:
            claim = "a .keras archive (zip)" if self.path.lower().endswith(".keras") \
                else "an HDF5 file"
            raise FormatError(f"{self.path}: not {claim}: the first bytes are {head!r}")
        self._where = where
        if bytes(self._data.view(self._base, min(8, size), "HDF5 signature")) != HDF5_SIGNATURE:
            raise FormatError(f"{where}: not an HDF5 file (no signature at offset 0)")
        try:
            self._file = h5py.File(_Window(self._data, self._base, size), "r")
            datasets = self._datasets(h5py)
            self._name_variables(h5py, datasets)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError,
                IndexError) as exc:   # h5py's errors, and odd values in the file's JSON
            if isinstance(exc, (FormatError, UnsupportedError, TensorNotFoundError)):
                raise
            raise FormatError(f"{where}: unreadable HDF5 ({type(exc).__name__}: {exc})") from None

    def _datasets(self, h5py):
        tensors = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                if len(tensors) >= _MAX_DATASETS:
                    raise FormatError(f"{self._where}: more than {_MAX_DATASETS} datasets")
                shape = tuple(int(d) for d in (obj.shape or ()))
                try:
                    dtype = dtypes.as_dtype(obj.dtype)
                except (UnsupportedError, TypeError, KeyError):
                    dtype = None
                if dtype is not None and dtype.itemsize is None:   # strings: not weights
                    dtype = None
                tensors[name] = _Tensor(name, obj, shape, dtype, _contiguous_offset(h5py, obj))
        self._file.visititems(visit)
        self._tensors = tensors
        return {p: t.offset for p, t in tensors.items()}

    def _name_variables(self, h5py, datasets):
        f = self._file
        if "layer_names" in f.attrs:
            self.kind = "legacy_h5"
            found = _legacy_names(f, f)
        elif isinstance(f.get("model_weights"), h5py.Group) and \
                "layer_names" in f["model_weights"].attrs:
            self.kind = "legacy_h5"
            raw = f.attrs.get("model_config")
            try:
                self.config = json.loads(raw) if raw is not None else None
            except (ValueError, TypeError, RecursionError):
                raise FormatError(f"{self._where}: attribute model_config is not JSON") from None
            found = _legacy_names(f, f["model_weights"])
        else:
            if self.kind != "keras":
                self.kind = "keras3_h5" if isinstance(f.get("layers"), h5py.Group) or \
                    isinstance(f.get("vars"), h5py.Group) else "hdf5"
            found = _keras3_names(f, self.config, datasets)
        self._by_name = {}
        for path, var in found.items():
            tensor = self._tensors.get(path)
            if tensor is None:
                raise FormatError(f"{self._where}: variable {var.name or path!r} has no dataset "
                                  f"{path!r}")
            tensor.var = var
            if var.name and var.name not in self._tensors:
                self._by_name.setdefault(var.name, path)

    # names
    def _tensor(self, name):
        if isinstance(name, str):
            tensor = self._tensors.get(name)
            if tensor is None:
                path = self._by_name.get(name[:-2] if name.endswith(":0") else name)
                tensor = self._tensors.get(path) if path else None
            if tensor is not None:
                return tensor
        raise TensorNotFoundError(f"{self.path}: no dataset or Keras variable {name!r}")

    def key(self, name: str) -> str:
        """The HDF5 dataset path `name` stands for (a path, or a Keras variable
        name with or without `:0`), as `CheckpointReader.key` does for keys."""
        return self._tensor(name).path

    def variable_names(self) -> dict[str, str]:
        """Keras variable name (`dense/kernel`) -> HDF5 dataset path."""
        return dict(self._by_name)

    def keras_name(self, name: str) -> Optional[str]:
        """The Keras variable name of a tensor, or None where tfformats cannot tell."""
        var = self._tensor(name).var
        return None if var is None else var.name

    def checkpoint_keys(self) -> dict[str, str]:
        """HDF5 path -> the key tf-keras' TF-format `save_weights` gives that
        variable (`layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE`), for
        every tensor whose place in the model tfformats knows."""
        return {p: t.var.key for p, t in self._tensors.items() if t.var and t.var.key}

    # Mapping
    def __getitem__(self, name: str) -> np.ndarray:
        return self.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tensors))

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, name: object) -> bool:
        return self.has_tensor(name)

    def has_tensor(self, name: object) -> bool:
        try:
            self._tensor(name)
        except KeyError:
            return False
        return True

    def shape(self, name: str) -> list[int]:
        return list(self._tensor(name).shape)

    def dtype(self, name: str) -> dtypes.DType:
        tensor = self._tensor(name)
        if tensor.dtype is None:
            raise UnsupportedError(f"{self._where}: dataset {tensor.path!r} has numpy dtype "
                                   f"{tensor.dataset.dtype}, which no TensorFlow dtype matches")
        return tensor.dtype

    def _numpy_dtype(self, tensor: _Tensor) -> np.dtype:
        numpy_dtype = self.dtype(tensor.path).as_numpy_dtype
        assert numpy_dtype is not None   # _datasets keeps fixed-size dtypes only
        return numpy_dtype

    def nbytes(self, name: str) -> int:
        """The bytes the tensor's values take as an array."""
        tensor = self._tensor(name)
        return math.prod(tensor.shape) * self._numpy_dtype(tensor).itemsize

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        return {p: list(t.shape) for p, t in self._tensors.items()}

    def get_variable_to_dtype_map(self) -> dict[str, dtypes.DType]:
        return {p: t.dtype for p, t in self._tensors.items() if t.dtype is not None}

    # data
    def get_tensor(self, name: str, copy: bool = False) -> np.ndarray:
        """The tensor as numpy: a read-only view of the file where its bytes are
        stored as they are, else decoded by h5py; `copy=True` for a private array."""
        tensor = self._tensor(name)
        dtype = self._numpy_dtype(tensor)
        count = math.prod(tensor.shape)
        nbytes = count * dtype.itemsize
        if tensor.offset is not None:
            view = self._data.view(self._base + tensor.offset, nbytes,
                                   f"dataset {tensor.path!r}")
            array = np.frombuffer(view, dtype, count).reshape(tensor.shape)
            return array.copy() if copy else array
        array = self._decoded(tensor, nbytes, ())
        array.flags.writeable = copy   # like every array tfformats hands out: read-only unless copied
        return array

    def _decoded(self, tensor, nbytes, index):
        """Through h5py (chunked, compressed, compact or unallocated data), after
        checking that the stored bytes can account for the array's size."""
        try:
            stored = tensor.dataset.id.get_storage_size()
        except Exception:
            stored = 0
        if nbytes > max(_MAX_ZIP_RATIO * stored, _SMALL):
            raise FormatError(f"{self._where}: dataset {tensor.path!r} claims {nbytes} bytes "
                              f"from {stored} stored")
        try:
            value = tensor.dataset[index] if index != () else tensor.dataset[()]
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise FormatError(f"{self._where}: dataset {tensor.path!r}: {exc}") from None
        return np.asarray(value)

    def get_slice(self, name: str) -> KerasSlice:
        """A lazy handle: `reader.get_slice(name)[10:20]` reads only that region."""
        return KerasSlice(self, self._tensor(name))

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # h5py may refuse while arrays are out; the map stays valid
                pass
            self._file = None
        self._source.close()

    def __enter__(self) -> KerasReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<KerasReader {self.path!r} ({getattr(self, 'kind', '?')})>"


class KerasSlice:
    """Returned by `KerasReader.get_slice`: index it to read part of a tensor."""

    def __init__(self, reader: KerasReader, tensor: _Tensor) -> None:
        self._reader, self._tensor = reader, tensor
        self.name = tensor.path

    @property
    def shape(self) -> list[int]:
        return list(self._tensor.shape)

    @property
    def dtype(self) -> dtypes.DType:
        return self._reader.dtype(self._tensor.path)

    def __getitem__(self, index: Any) -> np.ndarray:
        tensor = self._tensor
        if tensor.offset is not None:   # a view of the map: only those pages are touched
            return self._reader.get_tensor(tensor.path)[index]
        return self._reader._decoded(tensor, self._reader.nbytes(tensor.path), index)


# --- views and conversions ---------------------------------------------------------------

class _Entry:
    __slots__ = ("name", "dtype", "shape")

    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, dtype, shape


class VariableView(Mapping):
    """The tensors of a `KerasReader` named by Keras variable name where known
    (`conv/kernel`), else by HDF5 path; the same reader methods. What the
    converters to safetensors and `.npz` read, and what `diff` compares."""

    def __init__(self, reader: KerasReader) -> None:
        self.reader = reader
        self.path = self.prefix = reader.path
        names = {}
        for path, tensor in reader._tensors.items():
            var = tensor.var
            name = var.name if var is not None and var.name and \
                reader._by_name.get(var.name) == path else path
            names[name] = path
        self._paths = dict(sorted(names.items()))

    def hdf5_path(self, name: str) -> str:
        return self._paths[name]

    def entry(self, name: str) -> _Entry:
        """What the checkpoint readers' `entry` says that a Keras file can: name, dtype, shape."""
        return _Entry(name, self.dtype(name), tuple(self.shape(name)))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def _path(self, name):
        path = self._paths.get(name)
        if path is None:
            raise TensorNotFoundError(f"{self.path}: no Keras variable {name!r}")
        return path

    def shape(self, name: str) -> list[int]:
        return self.reader.shape(self._path(name))

    def dtype(self, name: str) -> dtypes.DType:
        return self.reader.dtype(self._path(name))

    def get_tensor(self, name: str, copy: bool = False) -> np.ndarray:
        return self.reader.get_tensor(self._path(name), copy=copy)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> VariableView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def by_variable_name(path: str | os.PathLike) -> VariableView:
    """`VariableView` of the Keras file at `path`."""
    return VariableView(KerasReader(path))


def checkpoint_tensors(reader: KerasReader, skip_unsupported: bool = False
                       ) -> tuple[dict[str, np.ndarray], dict[str, str], list[str]]:
    """(checkpoint key -> array, key -> Keras variable name, HDF5 paths left out)
    for writing `reader` as the TF checkpoint tf-keras' `save_weights` writes.

    Metric state (`metrics/...`, kept by tf-keras' `.keras`) is no model
    weight and is always left out; any other tensor whose place in the model
    tfformats cannot tell raises UnsupportedError, or is left out with
    `skip_unsupported=True`.
    """
    tensors, full_names, skipped = {}, {}, []
    for path in reader:
        var = reader._tensor(path).var
        if var is None or var.key is None:
            if not (path.startswith("metrics/") or skip_unsupported):
                raise UnsupportedError(
                    f"{reader.path}: dataset {path!r} has no place tfformats knows in the "
                    "object graph of tf-keras' checkpoints; pass skip_unsupported=True to "
                    "leave it out")
            skipped.append(path)
            continue
        tensors[var.key] = reader.get_tensor(path)
        if var.name:
            full_names[var.key] = var.name
    return tensors, full_names, skipped


def keras_to_checkpoint(src: str | os.PathLike, dst_prefix: str | os.PathLike, *,
                        skip_unsupported: bool = False,
                        progress: bool | Callable[..., Any] = False) -> list[str]:
    """Write the weights (and optimizer state) of Keras file `src` as the TF
    checkpoint `dst_prefix` that tf-keras' `model.save_weights(dst_prefix)`
    would write for the same model: `layer_with_weights-N/...` object paths,
    Keras variable names as full names. tf-keras' `load_weights` and
    `tf.train.Checkpoint(model).restore` read it; Keras 3's `load_weights`
    reads no TF checkpoints at all. Returns the HDF5 paths left out."""
    from .progress import bar
    from .writer import save_checkpoint
    with KerasReader(src) as reader:
        total = sum(reader.nbytes(p) for p in reader)
        with bar(progress, total, f"converting {os.path.basename(os.fspath(src))}") as shown:
            tensors, full_names, skipped = checkpoint_tensors(reader, skip_unsupported)
            save_checkpoint(dst_prefix, tensors, object_graph=True, full_names=full_names)
            shown.update(total)
    return skipped


def _source_tensors(src, stack):
    """A name -> array lookup over `src`: a Mapping of arrays, a Keras file (by
    HDF5 path and Keras name), or a checkpoint (by key and by the full variable
    name its object graph records)."""
    from .checkpoint import CheckpointReader
    if isinstance(src, Mapping):
        return lambda name: None if src.get(name) is None else np.asarray(src[name])
    path = os.fspath(src)
    if is_keras_path(path):
        reader = stack.enter_context(KerasReader(path))
        return lambda name: reader.get_tensor(name) if reader.has_tensor(name) else None
    reader = stack.enter_context(CheckpointReader(path))
    try:
        objects = reader.object_variables()
    except (FormatError, UnsupportedError):
        objects = {}
    names = {}
    for key, var in objects.items():
        if var.full_name and var.attribute == "VARIABLE_VALUE":
            names.setdefault(var.full_name, key)

    def lookup(name):
        key = name if reader.has_tensor(name) else names.get(name)
        return None if key is None else reader.get_tensor(key)
    return lookup


def to_weights_h5(src: str | os.PathLike | Mapping[str, Any], dst: str | os.PathLike,
                  like: str | os.PathLike) -> str:
    """Write the tensors of `src` into the Keras weights file `dst`, laid out as
    the Keras file `like` (a `.keras`, `.weights.h5` or legacy `.h5` of the same
    model): its groups and attributes, each dataset filled from `src` by HDF5
    path, Keras variable name or tf-keras checkpoint key. `src` is a
    checkpoint (such as `keras_to_checkpoint` writes), another Keras file, or
    a Mapping of name -> array (the command line reads .safetensors and .npz
    files through a checkpoint). Keras' `load_weights` reads the result."""
    import contextlib
    h5py = _h5py()
    with contextlib.ExitStack() as stack:
        template = stack.enter_context(KerasReader(like))
        lookup = _source_tensors(src, stack)
        values, missing = {}, []
        for path in template:
            tensor = template._tensor(path)
            var = tensor.var
            candidates = [path] + ([var.name, var.key] if var is not None else [])
            for name in candidates:
                value = lookup(name) if name else None
                if value is not None:
                    break
            else:
                missing.append(path)
                continue
            want = template.dtype(path).as_numpy_dtype
            if list(value.shape) != list(tensor.shape) or value.dtype != want:
                raise FormatError(f"{_label(src)}: tensor for {path!r} is {value.dtype}"
                                  f"{list(value.shape)}; {like} has {want}{list(tensor.shape)}")
            values[path] = value
        if missing:
            raise TensorNotFoundError(f"{_label(src)}: no tensor for {len(missing)} dataset(s) of "
                                      f"{like}: {', '.join(missing[:5])}")
        dst = os.fspath(dst)
        with fileio.replaced_atomically(dst) as temp, fileio.create(temp) as file:
            with h5py.File(file, "w") as out:
                _copy_layout(template._file, out, values)
    return dst


def _label(src):
    return "the tensors given" if isinstance(src, Mapping) else os.fspath(src)


def _copy_layout(source, out, values):
    """Groups and attributes of h5py group `source` into `out`, datasets from `values`."""
    import h5py
    for key, value in source.attrs.items():
        out.attrs[key] = value
    for name, item in source.items():
        if isinstance(item, h5py.Group):
            _copy_layout(item, out.create_group(name), values)
        elif isinstance(item, h5py.Dataset):
            ds = out.create_dataset(name, data=values[item.name.lstrip("/")])
            for key, value in item.attrs.items():
                ds.attrs[key] = value
