"""TensorProto <-> numpy for every dtype, checked against TensorFlow's own converters."""

import ml_dtypes
import numpy as np
import pytest

from tfformats import dtypes, protos
from tfformats.errors import FormatError, UnsupportedError
from tfformats.tensor_proto import MAX_BROADCAST_BYTES, from_numpy, to_numpy, value_field

from conftest import HAVE_TF, requires_tf

if HAVE_TF:
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

NUMERIC = [d for d in dtypes.BY_ENUM.values() if d.as_numpy_dtype is not None and not d.is_string]
# make_tensor_proto / make_ndarray refuse these (TypeError), though the proto can hold them.
TF_PY_UNSUPPORTED = {"float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e5m2fnuz"}
SHAPES = [(), (3,), (2, 2), (0,), (2, 0, 3)]


def sample(dtype, shape):
    """A small array of `dtype` with values every dtype can represent."""
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.is_string:
        out = np.empty(n, dtype=object)
        out[:] = [f"s{i}\x00é".encode() for i in range(n)]
        return out.reshape(shape)
    base = np.array([1, 0, 1, 1, 0, 1][:n] + [1] * max(0, n - 6))
    if dtype.name == "bool":
        return base.astype(bool).reshape(shape)
    values = base * np.resize([1, 2, 3, -1, -2], n) if n else base
    npd = dtype.as_numpy_dtype
    if npd.kind == "u" or dtype.name.startswith("qu") or dtype.name in ("uint4", "uint2"):
        values = np.abs(values)
    if dtype.name in ("uint2", "int2"):
        values = np.clip(values, -2 if dtype.name == "int2" else 0, 1)
    if npd.kind == "c":
        return (values + 0.5j * values).astype(npd).reshape(shape)
    return values.astype(npd).reshape(shape)


def same(a, b):
    assert a.shape == b.shape
    if a.dtype == object or b.dtype == object:
        assert list(a.ravel()) == list(b.ravel())
    else:
        assert a.dtype.itemsize == b.dtype.itemsize
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", NUMERIC + [dtypes.BY_NAME["string"]], ids=lambda d: d.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip(dtype, shape):
    array = sample(dtype, shape)
    proto = from_numpy(array, dtype=dtype)
    assert proto.dtype == dtype.enum
    back = to_numpy(protos.TensorProto.FromString(proto.SerializeToString()))
    assert back.dtype == (object if dtype.is_string else dtype.as_numpy_dtype)
    same(back, array)


def _tf_sample(dtype, shape):
    array = sample(dtype, shape)
    if dtype.name.startswith(("qint", "quint")):
        return array.astype(tf.as_dtype(dtype.enum).as_numpy_dtype)  # TF's structured dtype
    return array


@requires_tf
@pytest.mark.parametrize("dtype", [d for d in NUMERIC if d.name not in TF_PY_UNSUPPORTED]
                         + [dtypes.BY_NAME["string"]], ids=lambda d: d.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_same_proto_as_make_tensor_proto(dtype, shape):
    theirs = tf.make_tensor_proto(_tf_sample(dtype, shape), dtype=tf.as_dtype(dtype.enum))
    ours = from_numpy(sample(dtype, shape), dtype=dtype)
    assert ours.SerializeToString() == theirs.SerializeToString()
    # ... and each side reads the other's bytes to the same values.
    # (TF reads quantized types as structured arrays: compare their bytes.)
    as_ours = (lambda a: a) if dtype.is_string else (lambda a: a.view(dtype.as_numpy_dtype))
    same(to_numpy(protos.TensorProto.FromString(theirs.SerializeToString())),
         as_ours(tf.make_ndarray(theirs)))
    tf_read = tf.make_ndarray(tensor_pb2.TensorProto.FromString(ours.SerializeToString()))
    same(as_ours(tf_read), sample(dtype, shape))


@requires_tf
@pytest.mark.parametrize("dtype", [d for d in NUMERIC if d.name not in TF_PY_UNSUPPORTED]
                         + [dtypes.BY_NAME["string"]], ids=lambda d: d.name)
def test_fill_from_one_value_like_tf(dtype):
    """A scalar value with a bigger shape: TF stores one value, readers broadcast it."""
    value = sample(dtype, (1,))
    theirs = tf.make_tensor_proto(_tf_sample(dtype, (1,)), dtype=tf.as_dtype(dtype.enum),
                                  shape=[2, 3])
    assert len(getattr(theirs, value_field(dtype))) in (1, 2)  # complex: one (re, im) pair
    ours = to_numpy(protos.TensorProto.FromString(theirs.SerializeToString()))
    expected = tf.make_ndarray(theirs)
    same(ours, expected if dtype.is_string else expected.view(dtype.as_numpy_dtype))
    same(ours.reshape(-1)[:1], value)


def _const_value(proto_bytes):
    """What TensorFlow's C++ runtime makes of a TensorProto (a Const node's output)."""
    tp = tensor_pb2.TensorProto.FromString(proto_bytes)
    with tf.Graph().as_default():
        const = tf.raw_ops.Const(value=tp, dtype=tp.dtype)
        with tf.compat.v1.Session() as session:
            return session.run(const)


def _proto(dtype, shape, **fields):
    p = protos.TensorProto(dtype=dtypes.as_dtype(dtype).enum, **fields)
    p.tensor_shape.SetInParent()
    for d in shape:
        p.tensor_shape.dim.add(size=d)
    return p


TYPED_CASES = {
    "fewer_values_repeat_last": _proto("float32", [5], float_val=[1, 2, 3]),
    "no_values_mean_zeros": _proto("int32", [3]),
    "surplus_values_ignored": _proto("float32", [2], float_val=[1, 2, 3]),
    "complex_odd_count": _proto("complex64", [3], scomplex_val=[1, 2, 3]),
    "bfloat16_bits_in_half_val": _proto("bfloat16", [2], half_val=[0x3FC0, 0x4000]),
    "float16_bits_in_half_val": _proto("float16", [3], half_val=[0x3E00]),
    "float8_val_bytes": _proto("float8_e5m2", [3], float8_val=bytes([0x3C, 0xC0])),
    "uint8_int_val_wraps": _proto("uint8", [2], int_val=[300, -1]),
    "uint16_in_int_val": _proto("uint16", [2], int_val=[65535, 3]),
    "int64_ignores_int_val": _proto("int64", [2], int_val=[5]),
    "uint32_val": _proto("uint32", [2], uint32_val=[4000000000]),
    "bool_val": _proto("bool", [3], bool_val=[True, False]),
    "strings_repeat_last": _proto("string", [3], string_val=[b"a", b"b"]),
    "int4_unpacked_content": _proto("int4", [4], tensor_content=bytes([1, 0x0E, 7, 8])),
}


@requires_tf
@pytest.mark.parametrize("name", sorted(TYPED_CASES))
def test_typed_fields_like_tf_runtime(name):
    proto = TYPED_CASES[name]
    ours = to_numpy(proto)
    theirs = _const_value(proto.SerializeToString())
    if ours.dtype == object:
        assert list(ours.ravel()) == list(theirs.ravel())
    else:
        same(ours, np.asarray(theirs).view(ours.dtype))


def test_typed_fields_without_tf():
    assert to_numpy(TYPED_CASES["fewer_values_repeat_last"]).tolist() == [1, 2, 3, 3, 3]
    assert to_numpy(TYPED_CASES["surplus_values_ignored"]).tolist() == [1, 2]
    assert to_numpy(TYPED_CASES["complex_odd_count"]).tolist() == [1 + 2j] * 3
    assert to_numpy(TYPED_CASES["bfloat16_bits_in_half_val"]).astype(float).tolist() == [1.5, 2.0]
    assert to_numpy(TYPED_CASES["uint8_int_val_wraps"]).tolist() == [44, 255]
    assert to_numpy(TYPED_CASES["int64_ignores_int_val"]).tolist() == [0, 0]
    assert to_numpy(TYPED_CASES["strings_repeat_last"]).tolist() == [b"a", b"b", b"b"]
    assert to_numpy(TYPED_CASES["int4_unpacked_content"]).astype(int).tolist() == [1, -2, 7, -8]
    assert to_numpy(_proto("int4", [3], int_val=[7, -8, 9])).astype(int).tolist() == [7, -8, -7]


def test_scalar_and_empty():
    assert to_numpy(from_numpy(np.float32(2.5))).shape == ()
    assert to_numpy(from_numpy(np.float32(2.5))) == 2.5
    assert to_numpy(from_numpy("héllo")).item() == "héllo".encode()
    assert to_numpy(_proto("float32", [0, 4])).shape == (0, 4)
    assert to_numpy(_proto("string", [2])).tolist() == [b"", b""]


def test_quantized_dtype_override():
    proto = from_numpy(np.array([1, -2, 3], np.int8), dtype="qint8")
    assert proto.dtype == 11
    assert to_numpy(proto).tolist() == [1, -2, 3]


def test_big_fill_is_refused_not_allocated():
    proto = _proto("float32", [10 ** 6, 10 ** 6], float_val=[1.0])
    with pytest.raises(FormatError, match="refusing to broadcast"):
        to_numpy(proto)
    # An empty proto claiming many elements is refused the same way.
    with pytest.raises(FormatError):
        to_numpy(_proto("string", [MAX_BROADCAST_BYTES // 8 + 1]))
    # Small fills are fine and a lower limit can be set.
    assert to_numpy(_proto("float32", [1000], float_val=[1.0])).sum() == 1000
    assert to_numpy(_proto("float32", [1000], float_val=[1.0]), max_broadcast_bytes=4000).size
    with pytest.raises(FormatError):
        to_numpy(_proto("float32", [1000], float_val=[1.0]), max_broadcast_bytes=3999)


@pytest.mark.parametrize("dtype", ["complex128", "string", "float64", "float32"])
def test_fill_limit_is_in_bytes(dtype):
    # 2**31 elements: from 32 GiB (complex128) down to 8 GiB (float32) out of a few bytes.
    with pytest.raises(FormatError, match="refusing to broadcast"):
        to_numpy(_proto(dtype, [1 << 31]))


def test_empty_shape_numpy_cannot_hold():
    # Numpy limits the product of the other dimensions even of an empty array:
    # refuse such a shape by name, not with numpy's bare ValueError.
    for dtype, shape in [("float32", [0, 2**62, 2**62]), ("float32", [2**63 - 1, 0]),
                         ("string", [0, 2**62, 4])]:
        with pytest.raises(UnsupportedError, match="numpy cannot represent"):
            to_numpy(_proto(dtype, shape), what="Const 'c'")
    assert to_numpy(_proto("int8", [0, 2**63 - 1])).shape == (0, 2**63 - 1)


@pytest.mark.parametrize("proto, message", [
    (_proto("float32", [3], tensor_content=b"\0" * 8), "tensor_content has 8 bytes"),
    (_proto("float32", [-1], float_val=[1]), "negative dimension"),
    (_proto("float32", [2 ** 40, 2 ** 40], tensor_content=b"\0" * 4), "tensor_content"),
    (protos.TensorProto(dtype=0), "DT_INVALID"),
])
def test_malformed(proto, message):
    with pytest.raises(FormatError, match=message):
        to_numpy(proto)


def test_unknown_rank_and_unsupported():
    p = _proto("float32", [])
    p.tensor_shape.unknown_rank = True
    with pytest.raises(FormatError, match="unknown rank"):
        to_numpy(p)
    with pytest.raises(UnsupportedError):
        to_numpy(_proto("resource", []))
    with pytest.raises(UnsupportedError):
        to_numpy(protos.TensorProto(dtype=999))


def test_big_endian_input_is_stored_little_endian():
    array = np.array([1, 2, 3], dtype=">i4")
    proto = from_numpy(array)
    assert proto.tensor_content == np.array([1, 2, 3], "<i4").tobytes()
    assert to_numpy(proto).tolist() == [1, 2, 3]


def test_bfloat16_and_float8_values():
    a = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    assert from_numpy(a).tensor_content == bytes.fromhex("c03f00c0")
    assert list(from_numpy(a[:1].reshape(())).half_val) == [0x3FC0]
    f8 = np.array(1.0, dtype=ml_dtypes.float8_e4m3fn)
    assert from_numpy(f8).float8_val == b"\x38"
