"""`dump`: one tensor's values, printed or written to .npy."""

import sys

from .common import EXIT_OK, emit_json, json_doc, json_safe, line_width, open_reader, progress, shape_text

# Tensors at least this big get a progress bar of their own.
_BIG_TENSOR = 64 << 20


def _read_with_progress(args, reader, key):
    """The tensor, its CRC checked chunk by chunk under a progress bar when it is big."""
    from .._impl import hot
    from ..errors import ChecksumError
    from ..v1 import V1Reader
    if not hasattr(reader, "bundle"):   # a Keras file: h5py or the map, no CRC
        return reader.get_tensor(key)
    entry = reader.entry(key)
    if (entry.slices or entry.dtype.is_string or entry.size < _BIG_TENSOR
            or isinstance(reader.bundle, V1Reader)):   # V1 has no tensor CRC to check
        return reader.get_tensor(key)
    array = reader.bundle.read_entry(entry, verify=False)
    view = memoryview(array).cast("B") if array.flags.c_contiguous else memoryview(array.tobytes())
    crc, step = 0, 16 << 20
    with progress(args, len(view), f"checking {key}") as bar:
        for start in range(0, len(view), step):
            crc = hot.crc32c(view[start:start + step], crc)
            bar.update(min(step, len(view) - start))
    if crc != hot.unmask_crc(entry.crc32c):
        raise ChecksumError(f"{reader.prefix}: tensor {key!r} at offset {entry.offset}: "
                            "data checksum mismatch")
    return array


def _plain_values(array):
    """Nested Python values of an array, ml_dtypes types (bfloat16, ...) as floats."""
    import numpy as np
    if array.dtype != object and array.dtype.kind not in "biufcB?":
        array = array.astype(np.float64)  # bfloat16, float8, int4 ...: numpy kind 'V'
    if array.dtype.kind == "V":
        array = array.astype(np.float64)
    return array.tolist()


def cmd_dump(args):
    import numpy as np
    with open_reader(args.path) as reader:
        key = reader.key(args.tensor)   # a key, object path or variable name (tfformats/names.py)
        array = _read_with_progress(args, reader, key)
        dtype = reader.dtype(key)
        if args.npy is not None:
            # Through the file layer (a URL works too), whole or not at all; named as np.save names it.
            from .. import fileio
            npy = args.npy if args.npy.endswith(".npy") else args.npy + ".npy"
            with fileio.replaced_atomically(npy) as temp, fileio.create(temp) as f:
                np.save(f, array, allow_pickle=array.dtype == object)
            if args.json:
                emit_json(json_doc("dump", path=args.path, name=key, dtype=dtype.name,
                                     shape=list(array.shape), npy=args.npy))
            else:
                print(f"{key}: {dtype.name} {shape_text(array.shape)} written to {args.npy}")
            return EXIT_OK
        if args.json:
            emit_json(json_doc("dump", path=args.path, name=key, dtype=dtype.name,
                                 shape=list(array.shape), values=json_safe(_plain_values(array))))
            return EXIT_OK
        threshold = sys.maxsize if args.full else args.threshold
        options = {"threshold": threshold}
        if args.precision is not None:
            options["precision"] = args.precision
        text = np.array2string(array, **options, max_line_width=line_width())
        sys.stdout.write(f"{key}: {dtype.name} {shape_text(array.shape)}\n{text}\n")
    return EXIT_OK
