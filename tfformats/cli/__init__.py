"""The `tfformats` command: inspect, validate in CI, convert and compare.

Every subcommand is a `cmd_*` function taking the parsed arguments and
returning an exit status: 0 success (or "same" / "clean"), 1 findings or
differences, 2 a usage error, 3 an operational error (see docs/cli.md). Heavy
modules (numpy-heavy readers, protobuf, tqdm) are imported inside the
handlers so that `tfformats ls` starts fast. The JSON documents are described
in docs/cli.md; every one carries `"command"` and `"schema": 1`.

One module per subcommand (or pair of related ones); `parser` holds the
argument parser and `main`, `common` what they share.
"""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
