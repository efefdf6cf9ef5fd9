"""Compile proto/*.proto into tfformats/_descriptors.pb (a FileDescriptorSet).

The package loads that set into a private descriptor pool at import time, so
no generated *_pb2.py code is tied to one protobuf release. Needs grpcio-tools
(`pip install grpcio-tools`); run from the repository root after editing proto/.
"""

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    protos = sorted(p.name for p in (ROOT / "proto").glob("*.proto"))
    wkt = pathlib.Path(protoc.__file__).parent / "_proto"
    out = ROOT / "tfformats" / "_descriptors.pb"
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{wkt}", "--include_imports",
                      f"--descriptor_set_out={out}", *protos])
    if rc:
        sys.exit(rc)
    print(f"wrote {out} ({out.stat().st_size} bytes) from {len(protos)} files")


if __name__ == "__main__":
    main()
