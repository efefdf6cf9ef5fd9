"""Write tests/data/farmhash_vectors.json: reference FarmHash Fingerprint64 values.

The values come from pyfarmhash (`pip install pyfarmhash`), an independent
binding of Google's FarmHash C++ code, so tfformats' own implementations are
checked against something other than themselves. Inputs are deterministic
(see `vector_input`, which tests/test_farmhash.py repeats): lengths 0..200
and a few long ones that exercise the 64-byte loop and its tail.

Run from the repository root: python tools/gen_farmhash_vectors.py
"""

import json
import pathlib

import farmhash

LENGTHS = list(range(0, 201)) + [1000, 4096, 10007]
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "farmhash_vectors.json"


def vector_input(n):
    """n bytes from a 32-bit LCG seeded with n (high byte of each state)."""
    state = (n * 2654435761 + 1) & 0xFFFFFFFF
    out = bytearray(n)
    for i in range(n):
        state = (state * 1103515245 + 12345) & 0xFFFFFFFF
        out[i] = state >> 24
    return bytes(out)


def main():
    vectors = {str(n): str(farmhash.fingerprint64(vector_input(n))) for n in LENGTHS}
    OUT.write_text(json.dumps({
        "source": "pyfarmhash.fingerprint64 (FarmHash Fingerprint64 = farmhashna::Hash64)",
        "input": "vector_input(n) in tools/gen_farmhash_vectors.py",
        "fingerprint64": vectors,
    }, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
