"""`python -m tfformats`: the same as the `tfformats` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
