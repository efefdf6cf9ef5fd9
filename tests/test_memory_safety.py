"""Writing into a returned array can neither crash the process nor change a file.

Consumers ignore numpy's read-only flag all the time (`torch.from_numpy`,
DLPack importers before 1.0, ctypes, C extensions) and write anyway, e.g. an
optimizer stepping in place. Data files are mapped copy-on-write
(fileio.LocalFile), so such a write lands in private pages: the process
survives and the files stay as they were. Each case runs in a subprocess,
since the failure this guards against is SIGSEGV, under both implementations.
"""

import gc
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfformats as tff
from conftest import FIXTURES, copy_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (fixture prefix, tensor): what each case hands out.
CASES = {
    "plain": ("dtypes/ckpt", "float32"),
    "sharded": ("sharded/ckpt", "nested/w/.ATTRIBUTES/VARIABLE_VALUE"),   # in shard 4 of 5
    "partitioned": ("sharded/ckpt", "big/.ATTRIBUTES/VARIABLE_VALUE"),   # 13 parts, 5 shards
    "v1": ("tf1_v1/model.ckpt-7", "layer/big"),
}

# Runs in the subprocess: write 0xAB over every byte of the tensor, first
# through its data pointer (ctypes.memmove), then through a DLPack capsule the
# way a consumer that ignores DLPack 1.0's read-only flag would.
SCRIPT = textwrap.dedent(r"""
    import ctypes, json, sys
    import numpy as np
    import tfformats as tff

    prefix, name, impl = sys.argv[1:4]
    assert tff.implementation() == impl, tff.implementation()


    class DLTensor(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("device", ctypes.c_int32 * 2),
                    ("ndim", ctypes.c_int32), ("dtype", ctypes.c_uint8 * 4),
                    ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                    ("byte_offset", ctypes.c_uint64)]


    class DLManagedTensorVersioned(ctypes.Structure):   # DLPack 1.0 (dlpack.h)
        _fields_ = [("version", ctypes.c_uint32 * 2), ("manager_ctx", ctypes.c_void_p),
                    ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64),
                    ("dl_tensor", DLTensor)]


    def scribble(address, nbytes):
        ctypes.memmove(address, b"\xab" * nbytes, nbytes)


    def dlpack_address(array):
        capsule = array.__dlpack__(max_version=(1, 0))
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
        managed = DLManagedTensorVersioned.from_address(get(capsule, b"dltensor_versioned"))
        assert managed.flags & 1, "exported without DLPack's read-only flag"
        # The capsule is not consumed: its destructor frees it when dropped.
        return managed.dl_tensor.data + managed.dl_tensor.byte_offset, capsule


    with tff.open_checkpoint(prefix) as reader:
        expected = reader.get_tensor(name, copy=True)
        assert expected.flags.writeable
        array = reader.get_tensor(name)
        assert not array.flags.writeable and array.nbytes > 0
        scribble(array.ctypes.data, array.nbytes)
        assert array.tobytes() == b"\xab" * array.nbytes   # the write landed
        assert memoryview(array).readonly             # the buffer protocol says so too

    with tff.open_checkpoint(prefix) as reader:
        fresh = reader.get_tensor(name)
        assert fresh.tobytes() == expected.tobytes()   # a new reader sees the file
        at, capsule = dlpack_address(fresh)
        scribble(at, fresh.nbytes)
        assert fresh.tobytes() == b"\xab" * fresh.nbytes
        del capsule

    with tff.open_checkpoint(prefix) as reader:
        assert reader.get_tensor(name).tobytes() == expected.tobytes()
    print(json.dumps({"ok": True}))
""")

def digests(directory):
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, directory)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def run_writer(prefix, name, pure):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TFFORMATS_PUREPYTHON", None)
    if pure:
        env["TFFORMATS_PUREPYTHON"] = "1"
    impl = "python" if pure else "native"   # both, whichever this suite runs under
    return subprocess.run([sys.executable, "-c", SCRIPT, str(prefix), name, impl],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("pure", [False, True], ids=["native", "pure"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_writing_through_returned_arrays_is_safe(tmp_path, case, pure):
    fixture, name = CASES[case]
    directory, base = os.path.split(fixture)
    prefix = copy_fixture(FIXTURES / directory, tmp_path / "c") / base
    before = digests(tmp_path / "c")
    result = run_writer(prefix, name, pure)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"ok": True}
    assert digests(tmp_path / "c") == before   # byte-identical files


def test_every_tensor_has_the_same_writability(tmp_path):
    """Views of the file, assembled parts, V1 values, strings, region reads and
    SavedModel variables: read-only unless copied, writable when copied."""
    cases = [(FIXTURES / fixture, name) for fixture, name in CASES.values()]
    cases.append((FIXTURES / "dtypes/ckpt", "string_mixed"))
    for prefix, name in cases:
        with tff.open_checkpoint(prefix) as reader:
            for array in (reader[name], reader.get_tensor(name), reader.get_slice(name)[:1]):
                assert isinstance(array, np.ndarray) and not array.flags.writeable, name
            assert reader.get_tensor(name, copy=True).flags.writeable, name
    model = tff.load_saved_model(FIXTURES / "saved_model_module")
    names = list(model.variables)
    assert names
    for name in names:
        assert not model.variables[name].flags.writeable, name


def test_mapped_files_are_private_and_not_copied(tmp_path):
    """The map is copy-on-write, not a copy: the array handed out is the map's
    memory (zero-copy), and a write to it reaches neither the file nor another
    reader's map."""
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 64)
    first, second = tff.fileio.open_file(path), tff.fileio.open_file(path)
    try:
        a = np.frombuffer(first.view(0, first.size()), np.uint8)
        b = np.frombuffer(second.view(0, second.size()), np.uint8)
        assert not a.flags.writeable and not a.flags.owndata
        with open("/proc/self/maps") as f:   # a private ("p") mapping of the file
            maps = [line.split() for line in f]
        mine = [m for m in maps if len(m) > 5 and m[5] == str(path)]
        assert mine and all(m[1][3] == "p" for m in mine), mine
        import ctypes
        ctypes.memmove(a.ctypes.data, b"\x00" * 16, 16)
        assert a[:16].tobytes() == b"\x00" * 16 and b[:16].tobytes() == bytes(range(16))
    finally:
        first.close()
        second.close()
    assert path.read_bytes() == bytes(range(256)) * 64


# --- load_tensors: private writable arrays over each call's own map ---------------

def _mappings_of(path):
    """The lines of /proc/self/maps that map `path` (this process's maps of it)."""
    with open("/proc/self/maps") as f:
        return [line for line in f if line.split()[5:6] == [str(path)]]


# TensorFlow wrote these aligned (sharded/ckpt): views, not copies.
ALIGNED = {name: f"{name}/.ATTRIBUTES/VARIABLE_VALUE" for name in ("bias", "ints", "nested/w", "step")}


def test_load_tensors_arrays_are_writable_views_private_to_the_call(tmp_path):
    """load_tensors' arrays are views of its own copy-on-write map, not copies,
    and writing them reaches neither the file, nor another load, nor a reader."""
    prefix = copy_fixture(FIXTURES / "sharded", tmp_path / "c") / "ckpt"
    before = digests(tmp_path / "c")
    first, second = tff.load_tensors(prefix), tff.load_tensors(prefix)
    keys = list(ALIGNED.values())
    with tff.open_checkpoint(prefix) as reader:
        shared = reader.get_tensor(ALIGNED["nested/w"])
        expected = {key: reader.get_tensor(key, copy=True) for key in first}
        offsets = {key: reader.entry(key).offset for key in keys}
        assert all(a.flags.writeable for a in first.values())
        # Zero-copy: two tensors of one data file lie as far apart in memory as in it.
        a, b = first[ALIGNED["nested/w"]], first[ALIGNED["ints"]]
        assert not a.flags.owndata and a.flags.aligned
        assert (a.ctypes.data - b.ctypes.data ==
                offsets[ALIGNED["nested/w"]] - offsets[ALIGNED["ints"]])
        for key in keys:
            first[key].reshape(-1).view(np.uint8)[...] = 0xAB
            assert first[key].tobytes() == b"\xab" * first[key].nbytes   # the write landed
        for key in keys:
            assert second[key].tobytes() == expected[key].tobytes(), key
            assert reader.get_tensor(key).tobytes() == expected[key].tobytes(), key
        assert shared.tobytes() == expected[ALIGNED["nested/w"]].tobytes()
    third = tff.load_tensors(prefix)   # CRCs still match: the file is as it was
    assert all(third[key].tobytes() == expected[key].tobytes() for key in keys)
    assert digests(tmp_path / "c") == before


def test_load_tensors_copies_what_is_not_aligned():
    """Where a tensor's bytes are not aligned for its dtype (dtypes/ckpt packs
    them), the array is an aligned copy, as consumers of writable arrays expect."""
    loaded = tff.load_tensors(FIXTURES / "dtypes" / "ckpt", names=["float64", "int32", "uint8"])
    with tff.open_checkpoint(FIXTURES / "dtypes" / "ckpt") as reader:
        assert reader.entry("float64").offset % 8 and reader.entry("int32").offset % 4
        for name, array in loaded.items():
            assert array.flags.aligned and array.flags.writeable, name
            assert array.tobytes() == reader.get_tensor(name).tobytes(), name
    assert loaded["float64"].flags.owndata and loaded["int32"].flags.owndata
    assert not loaded["uint8"].flags.owndata   # one byte: always aligned


def test_load_tensors_arrays_keep_their_map_alive(tmp_path):
    """The reader is closed when load_tensors returns; the arrays keep the map
    (no use after unmap), and the map goes once the last of them does."""
    prefix = copy_fixture(FIXTURES / "sharded", tmp_path / "c") / "ckpt"
    data = prefix.parent / "ckpt.data-00004-of-00005"
    key = ALIGNED["nested/w"]
    with tff.open_checkpoint(prefix) as reader:
        expected = reader.get_tensor(key, copy=True)
    tensors = tff.load_tensors(prefix)
    kept = tensors[key]
    assert not kept.flags.owndata
    del tensors
    gc.collect()
    assert _mappings_of(data)   # still mapped, for `kept`
    assert kept.tobytes() == expected.tobytes()
    kept[...] = 7.0
    assert (kept == 7.0).all()
    del kept
    gc.collect()
    assert not _mappings_of(data)


def test_load_tensors_never_hands_out_one_byte_twice(tmp_path):
    """Two keys over the same bytes (a hostile index), or one key asked for
    under two names: each array is independent, as copies would be."""
    from test_bad_input import make_entry, write_index
    from tfformats._impl import hot
    data = np.arange(16, dtype=np.float32).tobytes()
    crc = hot.mask_crc(hot.crc32c(data[:16]))
    entries = {"a": make_entry(shape=(4,)), "b": make_entry(shape=(4,)),
               "c": make_entry(shape=(2,), offset=8, size=8)}
    for entry, n in zip(entries.values(), (16, 16, 8)):
        entry.crc32c = crc if n == 16 else hot.mask_crc(hot.crc32c(data[8:16]))
    prefix = write_index(tmp_path, entries, data=data)
    loaded = tff.load_tensors(prefix)
    assert all(a.flags.writeable for a in loaded.values())
    loaded["a"][...] = -1.0
    assert loaded["b"].tolist() == [0, 1, 2, 3] and loaded["c"].tolist() == [2, 3]
    loaded["c"][...] = -2.0
    assert loaded["b"].tolist() == [0, 1, 2, 3] and loaded["a"].tolist() == [-1.0] * 4

    prefix = FIXTURES / "sharded" / "ckpt"
    key = "nested/w/.ATTRIBUTES/VARIABLE_VALUE"
    both = tff.load_tensors(prefix, names=[key, "nested/w"])
    expected = both["nested/w"].copy()
    both[key][...] = 0.0
    assert both["nested/w"].tobytes() == expected.tobytes()


def test_load_tensors_still_checks_crcs(tmp_path):
    prefix = copy_fixture(FIXTURES / "sharded", tmp_path / "c") / "ckpt"
    key = ALIGNED["nested/w"]
    with tff.open_checkpoint(prefix) as reader:
        entry = reader.entry(key)
    data = prefix.parent / "ckpt.data-00004-of-00005"
    raw = bytearray(data.read_bytes())
    raw[entry.offset] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(tff.ChecksumError, match="nested/w.* at offset"):
        tff.load_tensors(prefix)
    unchecked = tff.load_tensors(prefix, verify=False)[key]
    assert not unchecked.flags.owndata
    assert unchecked.tobytes()[:1] == bytes(raw[entry.offset:entry.offset + 1])


def test_load_tensors_copies_where_files_cannot_be_mapped(tmp_path, monkeypatch):
    """Where a file system refuses mmap the file is read into one buffer;
    load_tensors then copies each tensor out of it (arrays that viewed the
    buffer would keep the whole file's memory alive)."""
    import errno
    from tfformats import fileio

    def refuse(fd):
        raise OSError(errno.ENODEV, "no mmap here")
    monkeypatch.setattr(fileio, "_private_map", refuse)
    prefix = copy_fixture(FIXTURES / "sharded", tmp_path / "c") / "ckpt"
    key = ALIGNED["nested/w"]
    first, second = tff.load_tensors(prefix), tff.load_tensors(prefix)
    assert not _mappings_of(prefix.parent / "ckpt.data-00004-of-00005")
    assert first[key].flags.owndata and first[key].flags.writeable
    first[key][...] = 1.5
    assert second[key].tolist() == tff.load_tensors(prefix)[key].tolist() != first[key].tolist()
