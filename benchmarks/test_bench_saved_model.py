"""SavedModel scenarios: fingerprint (vs TF's CreateFingerprintDef) and signatures load time."""

import benchlib


def test_fingerprint(benchmark, bench, saved_model_data):
    bench(benchmark, lambda: benchlib.fingerprint(saved_model_data))


def test_signatures(benchmark, bench, saved_model_data):
    bench(benchmark, lambda: benchlib.signatures(saved_model_data))
