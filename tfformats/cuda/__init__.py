"""Optional GPU upload: checkpoint tensors straight into CuPy arrays.

    import tfformats.cuda as tfc
    arrays = tfc.upload(reader, device="cuda:0")      # name -> cupy.ndarray
    w = tfc.to_device(reader, "dense/kernel", "cuda:1")

Only this package touches CuPy, and only when a device is asked for; the rest
of tfformats never imports it (`pip install tfformats[cuda]` adds it).

Modules: `devices` (what names a device), `backends` (CuPy, and a host
stand-in with the same interface), `uploader` (the scheduler).
"""

from ..errors import InvalidDeviceError
from .backends import CupyBackend, HostBackend, make_backend
from .devices import parse_device
from .uploader import (DEFAULT_CHUNK, DEFAULT_WINDOW, PAGE, WINDOWS_AHEAD, Uploader, load,
                       to_device, upload)

__all__ = [
    "CupyBackend", "HostBackend", "InvalidDeviceError", "Uploader",
    "load", "parse_device", "to_device", "upload",
    "DEFAULT_CHUNK", "DEFAULT_WINDOW", "PAGE", "WINDOWS_AHEAD", "make_backend",
]
