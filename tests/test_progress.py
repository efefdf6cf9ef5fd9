"""progress=True|False|callable on the Python API: what is counted, and the bar itself."""

import io

import pytest

import tfformats
from tfformats import convert
from tfformats.checkpoint import load_tensors
from tfformats.progress import bar
from tfformats.validate import validate

from conftest import FIXTURES

CKPT = FIXTURES / "sharded"


def _recorder():
    calls = []
    return calls, lambda done, total: calls.append((done, total))


def test_load_tensors_reports_every_byte_it_reads():
    calls, callback = _recorder()
    tensors = load_tensors(CKPT, progress=callback)
    assert load_tensors(CKPT, progress=False).keys() == tensors.keys()
    total = sum(a.nbytes for a in tensors.values() if a.dtype != object)
    assert calls[-1] == (total, total) and total > 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)   # never goes back


def test_converters_and_validate_report_every_tensor_byte(tmp_path):
    with tfformats.CheckpointReader(CKPT) as reader:
        numeric = sum(reader.get_tensor(n).nbytes for n in reader if reader.dtype(n).itemsize)
    for function, dst in ((convert.checkpoint_to_safetensors, tmp_path / "w.safetensors"),
                          (convert.checkpoint_to_npz, tmp_path / "w.npz"),
                          (convert.checkpoint_to_checkpoint, tmp_path / "copy")):
        calls, callback = _recorder()
        function(CKPT, dst, progress=callback)
        assert calls[-1] == (numeric, numeric), function.__name__
    calls, callback = _recorder()
    report = validate(CKPT, progress=callback)
    assert report.ok and calls[-1] == (report.bytes, report.bytes)


def test_writers_report_every_tensor_byte_written(tmp_path):
    tensors = load_tensors(CKPT)
    numeric = sum(a.nbytes for a in tensors.values() if a.dtype != object)
    convert.checkpoint_to_safetensors(CKPT, tmp_path / "w.safetensors")
    convert.checkpoint_to_npz(CKPT, tmp_path / "w.npz")
    for function, src in ((convert.safetensors_to_checkpoint, tmp_path / "w.safetensors"),
                          (convert.npz_to_checkpoint, tmp_path / "w.npz")):
        calls, callback = _recorder()
        function(src, tmp_path / function.__name__, progress=callback)
        assert calls[-1] == (numeric, numeric), function.__name__
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls, callback = _recorder()
    tfformats.save_checkpoint(tmp_path / "saved", tensors, progress=callback)
    assert calls[-1] == (numeric, numeric)


def test_progress_true_draws_a_tqdm_bar_and_other_values_are_refused(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    with bar(True, 2048, "reading") as shown:
        shown.update(2048)
    assert "reading" in err.getvalue() and "100%" in err.getvalue()
    with pytest.raises(TypeError, match="progress must be True, False or a callable"):
        bar("yes", 1, "reading")
