"""What names a CUDA device: "cuda:1", "/GPU:0", 2, torch and CuPy device objects."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import InvalidDeviceError

_DEVICE_RE = re.compile(r"^/?(?:device:)?(cuda|gpu)(?::(\d+))?$", re.IGNORECASE)


def parse_device(device: Any) -> int:
    """The CUDA device ordinal of "cuda", "cuda:1", "gpu:0", "/GPU:0", 2, ...

    Also accepts objects with `.type == "cuda"` and `.index` (torch.device)
    and objects with an integer `.id` (cupy.cuda.Device).
    """
    if isinstance(device, bool):
        raise InvalidDeviceError(f"not a device: {device!r}")
    if isinstance(device, (int, np.integer)):
        if device < 0:
            raise InvalidDeviceError(f"device ordinal must be >= 0, got {int(device)}")
        return int(device)
    if isinstance(device, str):
        m = _DEVICE_RE.match(device.strip())
        if not m:
            raise InvalidDeviceError(
                f"not a CUDA device: {device!r} (expected 'cuda', 'cuda:N', 'gpu:N' or an int)")
        return int(m.group(2) or 0)
    kind = getattr(device, "type", None)
    if isinstance(kind, str):
        if kind.lower() not in ("cuda", "gpu"):
            raise InvalidDeviceError(f"not a CUDA device: {device!r}")
        index = getattr(device, "index", None)
        return 0 if index is None else parse_device(int(index))
    ident = getattr(device, "id", None)
    if isinstance(ident, (int, np.integer)):
        return parse_device(int(ident))
    raise InvalidDeviceError(f"not a device: {device!r}")
