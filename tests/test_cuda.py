"""tfformats.cuda: the upload scheduler, run on CPU through HostBackend.

HostBackend has CupyBackend's interface on host memory with asynchronous
"streams", so chunking, registration, staging, CRC overlap and partitioned
assembly are all exercised without a GPU. CupyBackend, the code that calls
CuPy, runs here on tests/fake_cupy.py (CuPy 14's names and argument orders on
host memory, with CUDA's refusals); benchmarks/gpu_check.py checks it on a GPU.
"""

import ast
import importlib.util
import itertools
import math
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

import tfformats
from tfformats import cuda
from tfformats.errors import ChecksumError, DeviceError, FormatError, UnsupportedError

import fake_cupy as fake_cupy_module
from conftest import FIXTURES, assert_same_tensor, copy_fixture, expected_array, expected_checkpoints
from test_bad_input import make_entry, write_index

CHECKPOINTS = expected_checkpoints()
DTYPES = FIXTURES / "dtypes" / "ckpt"
PARTITIONED = FIXTURES / "tf1_partitioned" / "model.ckpt"
SHARDED = FIXTURES / "sharded" / "ckpt"
REPO = pathlib.Path(__file__).resolve().parent.parent


def host_upload(path_or_reader, names=None, **kwargs):
    backend = kwargs.pop("backend", None) or cuda.HostBackend(delay=kwargs.pop("delay", 0.0))
    stats = {}
    try:
        out = cuda.upload(path_or_reader, names, backend=backend, stats=stats, **kwargs)
    finally:
        backend.close()
    assert not backend.registered, "every registration must be undone"
    assert not backend.counts["pinned_freed_in_flight"], "a staging buffer outlived by its copy"
    return out, stats, backend


def assert_matches_host(reader, out):
    for name, array in out.items():
        host = reader.get_tensor(name)
        assert isinstance(array, np.ndarray)
        assert array.dtype == host.dtype and array.shape == host.shape, name
        assert array.tobytes() == host.tobytes(), name


# --- device strings ------------------------------------------------------------------

@pytest.mark.parametrize("spec, ordinal", [
    ("cuda", 0), ("cuda:0", 0), ("cuda:1", 1), ("CUDA:3", 3), ("gpu", 0), ("gpu:0", 0),
    ("GPU:2", 2), ("/gpu:1", 1), ("/device:GPU:0", 0), (" cuda:12 ", 12), (0, 0), (5, 5),
    (np.int64(2), 2), (types.SimpleNamespace(type="cuda", index=1), 1),
    (types.SimpleNamespace(type="cuda", index=None), 0), (types.SimpleNamespace(id=3), 3),
])
def test_parse_device(spec, ordinal):
    assert cuda.parse_device(spec) == ordinal


@pytest.mark.parametrize("spec", ["cpu", "cuda:", "cuda:-1", "cuda:x", "tpu:0", "", "cuda0",
                                  -1, True, None, 1.0, types.SimpleNamespace(type="cpu", index=0)])
def test_parse_device_rejects(spec):
    with pytest.raises(cuda.InvalidDeviceError) as info:
        cuda.parse_device(spec)
    assert isinstance(info.value, DeviceError) and isinstance(info.value, ValueError)


# --- every fixture, bit for bit ----------------------------------------------------------

@pytest.mark.parametrize("register", [True, False], ids=["registered", "staged"])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, cuda.DEFAULT_CHUNK])
@pytest.mark.parametrize("prefix, tensors", CHECKPOINTS,
                         ids=[str(p.relative_to(FIXTURES)) for p, _ in CHECKPOINTS])
def test_upload_fixture_bit_exact(prefix, tensors, chunk_size, register):
    with tfformats.open_checkpoint(prefix) as reader:
        out, stats, backend = host_upload(reader, chunk_size=chunk_size, register=register,
                                          delay=0.0002 if chunk_size == 7 else 0.0)
        numeric = {n for n in reader if not reader.dtype(n).is_string}
        assert set(out) == numeric
        assert_matches_host(reader, out)
        for name, array in out.items():
            assert_same_tensor(array, expected_array(tensors[name]))   # what TF read back
        assert stats["verified"] >= len(out)
        copies = backend.counts["copies_from_registered" if register else "copies_from_pinned"]
        assert copies == stats["chunks"]
        assert backend.counts["copies_from_pageable"] == 0
        if register:
            assert stats["direct_chunks"] == stats["chunks"] and not stats.get("staged_chunks")
        else:
            assert stats["staged_chunks"] == stats["chunks"] and not stats.get("direct_chunks")
            assert backend.counts["register_calls"] == 0


def test_registered_region_is_page_aligned_and_covers_the_tensors():
    with tfformats.open_checkpoint(SHARDED) as reader:
        out, stats, backend = host_upload(reader)
        assert stats["registered_windows"] == reader.bundle.num_shards   # small shards
        assert stats["registered_bytes"] % cuda.PAGE == 0


def test_partitioned_tensors_assembled_on_device():
    for prefix in (PARTITIONED, SHARDED, FIXTURES / "tf1_partitioned" / "sharded" / "model.ckpt"):
        with tfformats.open_checkpoint(prefix) as reader:
            out, stats, backend = host_upload(reader, chunk_size=5, delay=0.0001)
            assert stats["parts"] > 0
            assert_matches_host(reader, out)
    # one fixture splits a leading dimension only (parts go straight into place), one
    # splits others (uploaded apart, then a strided device-side copy)
    with tfformats.open_checkpoint(PARTITIONED) as reader:
        _, stats, backend = host_upload(reader)
        assert not stats.get("strided_parts") and backend.counts["device_assigns"] == 0
    with tfformats.open_checkpoint(SHARDED) as reader:
        _, stats, backend = host_upload(reader)
        assert stats["strided_parts"] > 0
        assert backend.counts["device_assigns"] == stats["strided_parts"]


@pytest.mark.parametrize("bounds, shape, expected", [
    (((0, 4), (0, 3)), (10, 3), 0), (((4, 10), (0, 3)), (10, 3), 12),
    (((0, 10), (0, 2)), (10, 3), None), (((2, 3), (1, 3)), (10, 3), 7),
    (((1, 2), (0, 2), (0, 4)), (3, 2, 4), 8), (((1, 2), (0, 1), (0, 4)), (3, 2, 4), 8),
    (((1, 2), (1, 2), (1, 4)), (3, 2, 4), 13), (((0, 3), (0, 1), (0, 4)), (3, 2, 4), None),
    ((), (), 0),
])
def test_contiguous_offset(bounds, shape, expected):
    got = cuda.uploader._contiguous_offset(bounds, shape, 1)
    assert got == expected
    if expected is not None and shape:   # cross-check against numpy
        a = np.arange(math.prod(shape)).reshape(shape)
        region = a[tuple(slice(x, y) for x, y in bounds)]
        assert region.ravel()[0] == expected
        assert np.array_equal(region.ravel(), np.arange(expected, expected + region.size))


# --- chunk boundaries ---------------------------------------------------------------------

@pytest.mark.parametrize("register", [True, False], ids=["registered", "staged"])
@pytest.mark.parametrize("extra", [-1, 0, 1, "many", "one-byte"])
def test_chunk_boundaries(extra, register):
    with tfformats.open_checkpoint(DTYPES) as reader:
        name = "float64"
        size = reader.entry(name).size
        assert size > 8
        chunk = {"many": 3, "one-byte": 1}.get(extra) or size + extra
        out, stats, _ = host_upload(reader, [name], chunk_size=chunk, register=register,
                                    staging_buffers=2, delay=0.0002)
        assert stats["chunks"] == -(-size // chunk)
        assert_matches_host(reader, out)


def test_empty_and_scalar_tensors():
    with tfformats.open_checkpoint(DTYPES) as reader:
        names = ["float32_empty", "int64_empty", "float32_scalar", "int64_scalar"]
        out, stats, _ = host_upload(reader, names, chunk_size=3)
        assert_matches_host(reader, out)
        assert out["float32_empty"].size == 0 and out["float32_scalar"].shape == ()
        assert stats["verified"] == 4


def test_staging_buffers_fewer_than_chunks_reused_safely():
    # Slow asynchronous copies: a buffer refilled before its copy landed would show.
    with tfformats.open_checkpoint(SHARDED) as reader:
        out, stats, backend = host_upload(reader, chunk_size=16, register=False,
                                          staging_buffers=2, workers=2, delay=0.0005)
        assert stats["staged_chunks"] > 10 * stats["staging_buffers"] / 2
        assert backend.counts["pinned_buffers"] == 2
        assert_matches_host(reader, out)


def test_staging_buffers_outlive_their_copies():
    # CuPy's pinned pool reuses a freed buffer at once, so the buffers must be
    # kept until the stream has drained, not only until the last copy is queued.
    with tfformats.open_checkpoint(SHARDED) as reader:
        out, stats, backend = host_upload(reader, chunk_size=16, register=False,
                                          staging_buffers=2, delay=0.001)
        assert backend.counts["pinned_buffers"] == 2
        assert backend.counts["pinned_freed_in_flight"] == 0
        assert_matches_host(reader, out)


def test_host_backend_catches_a_pinned_buffer_freed_in_flight():
    backend = cuda.HostBackend(delay=0.05)
    try:
        buf = backend.pinned(16)
        backend.copy(np.empty(16, np.uint8), 0, buf, backend.stream())
        del buf
        assert backend.counts["pinned_freed_in_flight"] == 1
    finally:
        backend.close()


def test_host_backend_catches_early_buffer_reuse():
    """The stand-in is strict enough to catch a scheduler bug of this kind."""
    with tfformats.open_checkpoint(SHARDED) as reader:
        backend = cuda.HostBackend(refuse_register=True, delay=0.001)
        backend.wait = lambda event: None          # a scheduler that does not wait
        out, _, _ = host_upload(reader, chunk_size=16, staging_buffers=2, workers=2,
                                backend=backend)
        assert any(out[n].tobytes() != reader.get_tensor(n).tobytes() for n in out)


# --- registration refused -> staging ----------------------------------------------------

def test_registration_refused_falls_back_to_staging():
    with tfformats.open_checkpoint(SHARDED) as reader:
        backend = cuda.HostBackend(refuse_register=True, delay=0.0001)
        out, stats, _ = host_upload(reader, chunk_size=32, backend=backend)
        assert stats["registrations_refused"] == reader.bundle.num_shards
        assert not stats.get("direct_chunks") and stats["staged_chunks"] == stats["chunks"]
        assert backend.counts["copies_from_pinned"] == stats["chunks"]
        assert "refused" in stats["refusal"]
        assert_matches_host(reader, out)


def test_registration_refused_for_one_shard_only():
    with tfformats.open_checkpoint(SHARDED) as reader:
        backend = cuda.HostBackend(delay=0.0001)
        real = backend.register
        calls = []

        def register(address, nbytes):
            calls.append(address)
            return None if len(calls) == 2 else real(address, nbytes)
        backend.register = register
        out, stats, _ = host_upload(reader, chunk_size=32, backend=backend)
        assert stats["registrations_refused"] == 1
        assert stats["direct_chunks"] and stats["staged_chunks"]
        assert_matches_host(reader, out)


# --- CRC ------------------------------------------------------------------------------

def _corrupt(tmp_path, fixture, name, at=0):
    prefix = copy_fixture(fixture, tmp_path / "ckpt")
    with tfformats.open_checkpoint(prefix) as reader:
        entry = reader.entry(name)
        if entry.slices:
            entry = reader.bundle.part_entry(name, entry.slices[-1])
        path = reader.bundle.raw(entry)[0].path
    with open(path, "r+b") as f:
        f.seek(entry.offset + at)
        byte = f.read(1)
        f.seek(entry.offset + at)
        f.write(bytes([byte[0] ^ 0x10]))
    return prefix, entry, path


@pytest.mark.parametrize("register", [True, False], ids=["registered", "staged"])
@pytest.mark.parametrize("chunk_size", [4, cuda.DEFAULT_CHUNK])
def test_crc_mismatch_raises(tmp_path, register, chunk_size):
    prefix, entry, path = _corrupt(tmp_path, DTYPES, "float64", at=9)
    with tfformats.open_checkpoint(prefix) as reader:
        with pytest.raises(ChecksumError) as info:
            host_upload(reader, chunk_size=chunk_size, register=register)
        message = str(info.value)
        assert path in message and "'float64'" in message and f"offset {entry.offset}" in message
        # verify=False uploads the damaged bytes as they are
        out, _, _ = host_upload(reader, ["float64"], verify=False, register=register)
        raw = reader.bundle.raw(entry)[1]
        assert out["float64"].tobytes() == bytes(raw)


def test_crc_mismatch_in_a_part(tmp_path):
    prefix, entry, path = _corrupt(tmp_path, SHARDED, "big/.ATTRIBUTES/VARIABLE_VALUE")
    with tfformats.open_checkpoint(prefix) as reader:
        with pytest.raises(ChecksumError) as info:
            host_upload(reader, chunk_size=64)
        assert "big/.ATTRIBUTES/VARIABLE_VALUE" in str(info.value)
        assert f"offset {entry.offset}" in str(info.value)


def test_crc_of_other_tensors_still_fine(tmp_path):
    prefix, _, _ = _corrupt(tmp_path, DTYPES, "float64")
    with tfformats.open_checkpoint(prefix) as reader:
        out, _, _ = host_upload(reader, ["float32", "int8"])
        assert_matches_host(reader, out)


# --- dtypes and strings ----------------------------------------------------------------

def test_string_tensor_on_device_is_an_error():
    with tfformats.open_checkpoint(DTYPES) as reader:
        with pytest.raises(UnsupportedError, match="string tensor"):
            host_upload(reader, ["string_2d"])
        out, _, _ = host_upload(reader)   # names=None: string tensors are left out
        assert "string_2d" not in out and "float32" in out


def test_load_keeps_strings_on_host():
    out = cuda.load(FIXTURES / "keras_adam" / "ckpt-1", "cuda", backend="host",
                    include_object_graph=True)
    with tfformats.open_checkpoint(FIXTURES / "keras_adam" / "ckpt-1") as reader:
        assert sorted(out) == sorted(reader)
        for name in reader:
            assert_same_tensor(out[name], reader[name])


def test_dtypes_cupy_lacks():
    with tfformats.open_checkpoint(DTYPES) as reader:
        backend = cuda.HostBackend(supported="cupy")
        with pytest.raises(UnsupportedError, match="raw_dtypes=True"):
            host_upload(reader, ["bfloat16"], backend=backend)
        out, _, _ = host_upload(reader, ["bfloat16", "float8_e4m3fn", "int4", "float32"],
                                backend=cuda.HostBackend(supported="cupy"), raw_dtypes=True)
        assert out["bfloat16"].dtype == np.uint16 and out["int4"].dtype == np.uint8
        assert out["float32"].dtype == np.float32
        for name, array in out.items():
            assert array.tobytes() == reader[name].tobytes()


def test_other_byte_order_goes_through_the_host(monkeypatch):
    with tfformats.open_checkpoint(DTYPES) as reader:
        monkeypatch.setattr(reader.bundle, "swapped", True)
        out, stats, backend = host_upload(reader, ["float32", "int64", "bool"])
        assert stats["host_converted"] == 3 and backend.counts["copies_from_pinned"] == 3
        assert_matches_host(reader, out)   # both swapped the same way


# --- no CuPy, no GPU --------------------------------------------------------------------

def test_without_cupy_device_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # makes `import cupy` fail
    with tfformats.open_checkpoint(DTYPES) as reader:
        with pytest.raises(DeviceError, match=r"pip install tfformats\[cuda\]"):
            reader.get_tensor("float32", device="cuda:0")
        with pytest.raises(DeviceError, match="CuPy"):
            cuda.upload(reader)
    with pytest.raises(RuntimeError, match=r"tfformats\[cuda\]"):
        tfformats.load_tensors(DTYPES, device="gpu")
    with pytest.raises(cuda.InvalidDeviceError):   # a bad string is reported first
        cuda.to_device(DTYPES, "float32", "tpu:0")


@pytest.mark.parametrize("count, error, message", [
    (1, RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected"),
     "no CUDA device found"),
    (0, None, "no CUDA device found"),
    (1, None, r"cuda:1 asked for, but this machine has only 1"),
])
def test_without_gpu_device_error(monkeypatch, count, error, message):
    fake = fake_cupy_module.make(count=count, count_error=error)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with tfformats.open_checkpoint(DTYPES) as reader:
        with pytest.raises(DeviceError, match=message):
            reader.get_tensor("float32", device="cuda:1")


def test_core_does_not_import_cuda_or_cupy():
    code = ("import sys, tfformats; r = tfformats.open_checkpoint(sys.argv[1]); r['float32'];"
            "assert 'tfformats.cuda' not in sys.modules and 'cupy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, str(DTYPES)], check=True)


def test_core_modules_never_import_the_front_ends():
    package = pathlib.Path(tfformats.__file__).parent
    front_ends = {"cli", "cuda"}
    for path in package.rglob("*.py"):
        module = path.relative_to(package).parts[0].removesuffix(".py")
        if module in front_ends or module in ("__init__", "__main__"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                named = {(node.module or "").split(".")[0]} | {a.name for a in node.names}
                assert not named & front_ends, f"{path.name} imports {named & front_ends}"


def test_invalid_device_error_is_exported():
    assert tfformats.InvalidDeviceError is cuda.InvalidDeviceError
    with pytest.raises(tfformats.InvalidDeviceError):
        cuda.parse_device("tpu:0")


def test_get_tensor_and_load_checkpoint_device_keyword(monkeypatch):
    # device=None keeps the host behaviour; a device goes through tfformats.cuda
    calls = []
    monkeypatch.setattr(cuda, "to_device", lambda *a, **k: calls.append(("to_device", a, k)))
    monkeypatch.setattr(cuda, "load", lambda *a, **k: calls.append(("load", a, k)))
    with tfformats.open_checkpoint(DTYPES) as reader:
        assert isinstance(reader.get_tensor("float32", device=None), np.ndarray)
        reader.get_tensor("float32", device="cuda:1")
    tfformats.load_tensors(DTYPES, device=1)
    assert [c[0] for c in calls] == ["to_device", "load"]
    assert calls[0][1][1:] == ("float32", "cuda:1") and calls[1][1][1] == 1


# --- benchmarks/gpu_check.py on the host stand-in ----------------------------------------

def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("prefix", [SHARDED, DTYPES])
def test_gpu_check_script_on_host_backend(prefix, capsys):
    rc = _gpu_check().main(["--backend", "host", "--checkpoint", str(prefix), "--chunk-mib", "1",
                            "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "GB/s" in out and "tensors equal" in out and "path: direct" in out
    assert "path: staged" in out


def test_gpu_check_script_writes_its_checkpoint(tmp_path, capsys):
    rc = _gpu_check().main(["--backend", "host", "--size-gib", "0.005", "--tensors", "9",
                            "--chunk-mib", "1", "--repeat", "1", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "all 9 uploaded tensors equal" in out


def test_gpu_check_script_without_cupy_exits_cleanly():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = ("import sys; sys.modules['cupy'] = None; sys.argv[1:] = ['--size-gib', '0.001'];"
            f"import runpy; runpy.run_path({str(REPO / 'benchmarks' / 'gpu_check.py')!r}, "
            "run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "pip install tfformats[cuda]" in proc.stderr


# --- DLPack ------------------------------------------------------------------------------

def _tensorflow_from_dlpack(array):
    import tensorflow as tf
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _torch_from_dlpack(array):
    import torch
    return torch.from_dlpack(array)


# TensorFlow is a test dependency, so CI always takes this path; torch is
# checked too wherever it is installed.
DLPACK_CONSUMERS = {"numpy": np.from_dlpack, "tensorflow": _tensorflow_from_dlpack}
if importlib.util.find_spec("torch"):
    DLPACK_CONSUMERS["torch"] = _torch_from_dlpack


@pytest.mark.parametrize("from_dlpack", DLPACK_CONSUMERS.values(), ids=DLPACK_CONSUMERS.keys())
def test_dlpack_zero_copy_of_a_private_copy(from_dlpack):
    with tfformats.open_checkpoint(DTYPES) as reader:
        for name in ["float32", "int64", "complex64", "bool", "float16", "uint8"]:
            array = reader.get_tensor(name, copy=True)
            tensor = from_dlpack(array)
            assert np.asarray(tensor).tobytes() == reader[name].tobytes()
            array[...] = 1   # the consumer sees our memory, not a copy of it
            assert np.asarray(tensor).tobytes() == np.ones_like(array).tobytes(), name
        # bfloat16 (and the other ml_dtypes types) are not DLPack types: pass the bits
        array = reader.get_tensor("bfloat16", copy=True)
        with pytest.raises(BufferError):
            array.__dlpack__()
        bits = np.asarray(from_dlpack(array.view(np.uint16)))
        assert bits.tobytes() == reader["bfloat16"].tobytes()


def test_dlpack_of_read_only_views():
    """Read-only views need DLPack >= 1.0 (numpy >= 2.1 exports a read-only flag)."""
    with tfformats.open_checkpoint(DTYPES) as reader:
        view = reader["float32"]
        assert not view.flags.writeable
        if tuple(int(x) for x in np.__version__.split(".")[:2]) < (2, 1):
            pytest.skip("numpy < 2.1 cannot export read-only arrays through DLPack")
        with pytest.raises(BufferError, match="readonly"):
            view.__dlpack__()                            # an unversioned (0.x) consumer
        view.__dlpack__(max_version=(1, 0))              # a DLPack 1.0 consumer
        again = np.from_dlpack(view)
        assert not again.flags.writeable and np.shares_memory(again, view)


# --- registration scope and cleanup -------------------------------------------------------

def test_only_the_pages_of_the_requested_tensors_are_registered(tmp_path):
    from tfformats import writer
    arrays = {f"t{i}": np.full(1 << 18, i, dtype=np.float32) for i in range(4)}   # 1 MiB each
    prefix = writer.save_checkpoint(str(tmp_path / "ckpt"), arrays)
    with tfformats.open_checkpoint(prefix) as reader:
        name = next(n for n in reader if n.startswith("t2"))
        out, stats, backend = host_upload(reader, [name], chunk_size=1 << 16)
        assert stats["registered_bytes"] <= (1 << 20) + 2 * cuda.PAGE
        assert stats["registered_bytes"] % cuda.PAGE == 0
        assert_matches_host(reader, out)
        out, stats, _ = host_upload(reader)
        assert stats["registered_bytes"] >= 4 << 20
        assert_matches_host(reader, out)


@pytest.fixture(scope="module")
def six_mib(tmp_path_factory):
    from tfformats import writer
    rng = np.random.default_rng(5)
    arrays = {f"t{i}": rng.random(1 << 18, dtype=np.float32) for i in range(6)}   # 1 MiB each
    return writer.save_checkpoint(str(tmp_path_factory.mktemp("six") / "ckpt"), arrays)


def test_registration_windows_bound_pinned_memory(six_mib):
    window = 256 << 10
    with tfformats.open_checkpoint(six_mib) as reader:
        backend = cuda.HostBackend(delay=0.0001)
        out, stats, _ = host_upload(reader, chunk_size=100_000, register_window=window,
                                    backend=backend)
        assert_matches_host(reader, out)
    assert stats["registered_windows"] >= 24 and not stats.get("registrations_refused")
    assert stats["direct_chunks"] == stats["chunks"]
    # windows are disjoint pages (HostBackend refuses overlaps, as CUDA does), and no
    # more than WINDOWS_AHEAD of them are pinned at once
    assert 2 * window < backend.counts["most_registered_bytes"] <= cuda.WINDOWS_AHEAD * window
    assert stats["registered_bytes"] <= (6 << 20) + stats["registered_windows"] * cuda.PAGE


def test_registration_window_refused_midway(six_mib):
    with tfformats.open_checkpoint(six_mib) as reader:
        backend = cuda.HostBackend(delay=0.0001)
        real, calls = backend.register, itertools.count(1)

        def register(address, nbytes):   # runs on two threads: next() is atomic
            return None if next(calls) in (2, 5) else real(address, nbytes)
        backend.register = register
        out, stats, _ = host_upload(reader, chunk_size=1 << 17, register_window=1 << 20,
                                    backend=backend)
        assert_matches_host(reader, out)
    assert stats["registrations_refused"] == 2 and stats["registered_windows"] == 4
    assert stats["direct_chunks"] and stats["staged_chunks"]


def test_failure_while_windows_are_registered_ahead(six_mib):
    class Failing(cuda.HostBackend):
        def copy(self, dst, byte_offset, src, stream):
            if self.counts["copied_bytes"] > 3 << 20:
                raise RuntimeError("copy engine on fire")
            super().copy(dst, byte_offset, src, stream)

    backend = Failing(delay=0.0001)
    with tfformats.open_checkpoint(six_mib) as reader:
        with pytest.raises(RuntimeError, match="on fire"):
            cuda.upload(reader, backend=backend, chunk_size=1 << 17, register_window=1 << 19)
    assert not backend.registered and backend.counts["register_calls"] > 6
    backend.close()


def test_overlapping_parts_are_refused_not_left_uninitialised(tmp_path):
    # Parts [0, 2) and [1, 3) of a 4-element tensor add up to 4 elements but
    # leave element 3 unwritten; the host reader refuses this, so must we.
    from tfformats import slices
    full = make_entry(shape=(4,), size=0)
    entries = {}
    for i, (start, length) in enumerate([(0, 2), (1, 2)]):
        full.slices.add().extent.add(start=start, length=length)
        entries[slices.slice_key("p", ((start, length),))] = make_entry(
            shape=(length,), offset=8 * i, size=4 * length)
    entries["p"] = full
    prefix = write_index(tmp_path, entries)
    with tfformats.open_checkpoint(prefix, verify=False) as reader:
        with pytest.raises(FormatError, match="do not tile"):
            host_upload(reader, ["p"], verify=False)


def test_one_failed_unregistration_still_undoes_the_others():
    class Failing(cuda.HostBackend):
        def unregister(self, handle):
            self.counts["unregister_calls"] += 1
            if self.counts["unregister_calls"] == 1:
                raise RuntimeError("unregister failed")
            super().unregister(handle)

    backend = Failing()
    try:
        with tfformats.open_checkpoint(SHARDED) as reader:
            assert reader.bundle.num_shards > 1
            with pytest.raises(RuntimeError, match="unregister failed"):
                cuda.upload(reader, backend=backend)
        # one unregistration tried per registration, and only the failed one left
        assert backend.counts["unregister_calls"] == backend.counts["register_calls"] > 1
        assert len(backend.registered) == 1
    finally:
        backend.close()


def test_cupy_stream_waits_for_work_queued_on_the_current_stream(monkeypatch):
    # The device arrays come from CuPy's pool on the current stream, maybe from
    # blocks that queued work still reads: the non-blocking upload stream must
    # wait for that work before copying into them.
    calls = []

    class Stream:
        def __init__(self, non_blocking=False):
            calls.append(("new stream", non_blocking))

        def record(self):
            calls.append("record current")
            return "event"

        def wait_event(self, event):
            calls.append(("wait", event))

    class Device:
        def __init__(self, ordinal):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    current = Stream()
    calls.clear()
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), Device=Device, Stream=Stream,
        get_current_stream=lambda: current))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cuda.CupyBackend("cuda:0").stream()
    assert calls == [("new stream", True), "record current", ("wait", "event")]


@pytest.mark.parametrize("register", [True, False], ids=["registered", "staged"])
def test_failure_mid_upload_unregisters_and_drains(register):
    class Failing(cuda.HostBackend):
        def copy(self, dst, byte_offset, src, stream):
            if self.counts["copied_bytes"] > 100:
                raise RuntimeError("copy engine on fire")
            super().copy(dst, byte_offset, src, stream)

    backend = Failing(delay=0.0005)
    with tfformats.open_checkpoint(SHARDED) as reader:
        with pytest.raises(RuntimeError, match="on fire"):
            cuda.upload(reader, backend=backend, chunk_size=16, register=register,
                        staging_buffers=2)
    assert not backend.registered
    assert all(s._last is None or s._last.done() for s in backend._streams)
    backend.close()


# --- CupyBackend itself, on fake CuPy (tests/fake_cupy.py) --------------------------------

@pytest.fixture
def fake_cupy(monkeypatch):
    module = fake_cupy_module.make(delay=0.0001)
    monkeypatch.setitem(sys.modules, "cupy", module)
    yield module
    module.fake.close()
    assert not module.fake.violations
    assert not module.fake.registered, "every registration must be undone"


def assert_device_matches_host(reader, out, cupy):
    for name, array in out.items():
        host = reader.get_tensor(name)
        assert isinstance(array, cupy.ndarray), name
        got = cupy.asnumpy(array)
        assert got.shape == host.shape and got.dtype.itemsize == host.dtype.itemsize, name
        assert got.tobytes() == host.tobytes(), name


@pytest.mark.parametrize("register", [True, False], ids=["registered", "staged"])
@pytest.mark.parametrize("chunk_size", [7, cuda.DEFAULT_CHUNK])
@pytest.mark.parametrize("prefix", [DTYPES, SHARDED, PARTITIONED],
                         ids=["dtypes", "sharded", "tf1_partitioned"])
def test_cupy_backend_upload_bit_exact(fake_cupy, prefix, chunk_size, register):
    stats = {}
    with tfformats.open_checkpoint(prefix) as reader:
        out = cuda.upload(reader, device="cuda:0", chunk_size=chunk_size, register=register,
                          register_window=cuda.PAGE, raw_dtypes=True, stats=stats)
        assert_device_matches_host(reader, out, fake_cupy)
    counts = fake_cupy.fake.counts
    assert counts["copies_from_pageable"] == 0
    if register:
        assert stats["direct_chunks"] == stats["chunks"] and stats["refusal"] is None
        assert counts["copies_from_registered"] == stats["chunks"]
    else:
        assert stats["staged_chunks"] == stats["chunks"] and counts["hostRegister"] == 0
        assert counts["copies_from_pinned"] == stats["chunks"]
    assert counts["device_assigns"] == stats.get("strided_parts", 0)


def test_cupy_backend_device_keywords(fake_cupy):
    with tfformats.open_checkpoint(DTYPES) as reader:
        array = reader.get_tensor("float32", device="cuda:0")
        assert isinstance(array, fake_cupy.ndarray)
        assert fake_cupy.asnumpy(array).tobytes() == reader["float32"].tobytes()
    out = tfformats.load_tensors(FIXTURES / "keras_adam" / "ckpt-1", device="gpu:0",
                                 include_object_graph=True)
    with tfformats.open_checkpoint(FIXTURES / "keras_adam" / "ckpt-1") as reader:
        assert sorted(out) == sorted(reader)
        for name in reader:
            if reader.dtype(name).is_string:
                assert isinstance(out[name], np.ndarray)
            else:
                assert fake_cupy.asnumpy(out[name]).tobytes() == reader[name].tobytes()


def test_cupy_backend_crc_mismatch(fake_cupy, tmp_path):
    prefix, entry, path = _corrupt(tmp_path, DTYPES, "float64", at=9)
    with tfformats.open_checkpoint(prefix) as reader:
        for register in (True, False):
            with pytest.raises(ChecksumError, match=f"'float64' at offset {entry.offset}"):
                cuda.upload(reader, register=register, raw_dtypes=True)


def test_cupy_backend_without_read_only_registration(monkeypatch):
    # The device says it cannot register read-only memory: no hostRegister call
    # (a refused one would leave CUDA's last error set), staged copies instead.
    module = fake_cupy_module.make(read_only_supported=False)
    monkeypatch.setitem(sys.modules, "cupy", module)
    stats = {}
    try:
        with tfformats.open_checkpoint(SHARDED) as reader:
            out = cuda.upload(reader, stats=stats, chunk_size=64)
            assert_device_matches_host(reader, out, module)
    finally:
        module.fake.close()
    assert module.fake.counts["hostRegister"] == 0
    assert stats["registrations_refused"] > 0 and stats["staged_chunks"] == stats["chunks"]
    assert "cudaDevAttrHostRegisterReadOnlySupported" in stats["refusal"]
    assert not module.fake.violations


def test_fake_cuda_registration_rules_for_file_maps(tmp_path):
    """The fake's model of cudaHostRegister on file maps, which the uploader
    relies on: tfformats' private (copy-on-write) maps register read-only
    without a copy; without the read-only flag CUDA would pin them for writing
    and the kernel would copy every page, which the fake records; a shared
    read-only map needs the flag."""
    import mmap
    module = fake_cupy_module.make()
    rt = module.cuda.runtime
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * 64)
    source = tfformats.fileio.open_file(path)
    view = np.frombuffer(source.view(0, source.size()), np.uint8)
    assert not view.flags.writeable   # handed out read-only, mapped writable
    at = view.ctypes.data
    try:
        rt.hostRegister(at, view.nbytes, fake_cupy_module.READ_ONLY)
        rt.hostUnregister(at)
        assert not module.fake.violations
        rt.hostRegister(at, view.nbytes, 0)
        rt.hostUnregister(at)
        assert len(module.fake.violations) == 1
        assert "without cudaHostRegisterReadOnly" in module.fake.violations[0]
        with open(path, "rb") as f:
            shared = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        ro = np.frombuffer(shared, np.uint8)
        with pytest.raises(fake_cupy_module.CUDARuntimeError, match="needs cudaHostRegisterReadOnly"):
            rt.hostRegister(ro.ctypes.data, ro.nbytes, 0)
        del ro
        shared.close()
    finally:
        source.close()
        module.fake.close()


def test_cupy_backend_out_of_memory(monkeypatch):
    module = fake_cupy_module.make(memory_limit=16)
    monkeypatch.setitem(sys.modules, "cupy", module)
    try:
        with pytest.raises(DeviceError, match="out of memory on cuda:0"):
            cuda.upload(DTYPES, raw_dtypes=True)
    finally:
        module.fake.close()


def test_gpu_check_script_on_fake_cupy(fake_cupy, tmp_path, capsys):
    rc = _gpu_check().main(["--size-gib", "0.004", "--tensors", "7", "--chunk-mib", "1",
                            "--repeat", "1", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "fake GPU" in out and "all 7 uploaded tensors equal" in out
    assert "path: direct" in out and "path: staged" in out and "% of the pinned copy" in out
