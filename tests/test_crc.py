"""CRC-32C combination and the multi-core CRC of big tensors."""

import numpy as np
import pytest

from tfformats import crc
from tfformats._impl import hot


@pytest.mark.parametrize("n1, n2", [(0, 0), (0, 9), (9, 0), (1, 1), (3, 4096), (4096, 3),
                                    (1000, 1 << 16), (12345, 777)])
def test_crc32c_combine(n1, n2):
    rng = np.random.default_rng(n1 * 7 + n2)
    a, b = rng.bytes(n1), rng.bytes(n2)
    assert crc.crc32c_combine(hot.crc32c(a), hot.crc32c(b), n2) == hot.crc32c(a + b)


@pytest.mark.parametrize("size", [0, 1, crc.PARALLEL_MIN_BYTES - 1, crc.PARALLEL_MIN_BYTES,
                                  crc.PARALLEL_MIN_BYTES + 3, 5 * crc.PARALLEL_MIN_BYTES + 7])
def test_parallel_crc_equals_serial(size):
    data = np.random.default_rng(size).bytes(size)
    assert crc.crc32c_parallel(memoryview(data)) == hot.crc32c(data)
