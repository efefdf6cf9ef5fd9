"""Docs are self-contained: code and docs point only to files in the repository."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"FORMATS\.md|DESIGN\.md|STYLE\.md|BENCHMARKS\.md|\.\./shared|/work/|"
                     r"design notes?\b")


def test_nothing_points_outside_the_repository():
    files = [p for folder in ("tfformats", "native", "tests", "benchmarks", "docs")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".pyx", ".pxi", ".h", ".md")]
    files += [ROOT / "README.md"]
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in files if p != pathlib.Path(__file__)
                 for n, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert offenders == []


def test_formats_doc_covers_every_layout_with_its_source():
    text = (ROOT / "docs" / "formats.md").read_text()
    sections = re.split(r"\n## ", text)[1:]
    titles = [s.splitlines()[0] for s in sections]
    for wanted in ("Table", "Tensor bundle", "Data shards", "Slices", "V1 tables",
                   "Checkpoint state file", "Object graph", "SavedModel", "Fingerprint",
                   "GraphDef constants"):
        assert any(t.startswith(wanted) for t in titles), wanted
    for section in sections:   # each names what it follows and how it was checked
        assert "Follows `" in section and ("Verified" in section or "Source only" in section)
