"""The wheel's type marker and the checks tests/run.sh adds to the suite:
the import layers (`lint-imports`) and the types (`mypy`)."""

import inspect
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_py_typed_ships_in_the_wheel():
    # PEP 561: without the marker, type checkers ignore the annotations.
    assert (ROOT / "tfformats" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["tfformats"]


def test_ci_checks_layers_and_types():
    project = _pyproject()
    test_extra = " ".join(project["project"]["optional-dependencies"]["test"])
    assert "import-linter" in test_extra and "mypy" in test_extra
    contract, = project["tool"]["importlinter"]["contracts"]
    assert contract["type"] == "layers" and "cli | cuda" in contract["layers"]
    script = (ROOT / "tests" / "run.sh").read_text()
    checks = script.index("lint-imports"), script.index("-m mypy tfformats")
    # Before the suite runs, so that a broken layer or type fails CI at once.
    assert max(checks) < script.index("-m pytest")


def _unannotated(function):
    """Names of `function`'s parameters (and "return") that carry no annotation."""
    signature = inspect.signature(function)
    missing = [name for name, p in signature.parameters.items()
               if name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def _public_api():
    """(qualified name, function) for every public function and method of the
    API: what `tfformats` exports and the modules and classes its docs name."""
    import tfformats
    from tfformats import bundle, checkpoint, convert, fileio, fingerprint, graph, v1, validate
    from tfformats import names, objgraph, progress, saved_model, tensor_proto, train, writer
    from tfformats.cuda import backends, devices, uploader
    objects = [getattr(tfformats, name) for name in tfformats.__all__]
    objects += [bundle.BundleReader, v1.V1Reader, checkpoint.TensorSlice,
                saved_model.MetaGraph, saved_model.SavedModelVariables, saved_model.ObjectNode,
                writer.BundleWriter, writer.CheckpointManager, validate.Report]
    objects += [uploader.upload, uploader.to_device, uploader.load, devices.parse_device,
                backends.make_backend, progress.bar]
    objects += [names.Names, train.TFCheckpointReader]
    for module in (checkpoint, convert, fileio, fingerprint, graph, names, objgraph, tensor_proto,
                   train, validate):
        objects += [value for name, value in vars(module).items()
                    if not name.startswith("_") and inspect.isfunction(value)
                    and value.__module__ == module.__name__]
    for obj in objects:
        if inspect.isfunction(obj):
            yield f"{obj.__module__}.{obj.__qualname__}", obj
        elif inspect.isclass(obj) and obj.__module__.startswith("tfformats"):
            for klass in obj.__mro__:
                if not klass.__module__.startswith("tfformats"):
                    continue   # Exception, Mapping: typed by Python itself
                for name, member in vars(klass).items():
                    if name.startswith("_") and name not in ("__init__", "__getitem__"):
                        continue
                    member = member.fget if isinstance(member, property) else member
                    if inspect.isfunction(member):
                        yield f"{klass.__module__}.{klass.__qualname__}.{name}", member


def test_public_api_is_annotated():
    found = dict(_public_api())
    assert "tfformats.checkpoint.CheckpointReader.get_tensor" in found
    assert "tfformats.saved_model.model.SavedModel.meta_graph" in found
    missing = {name: _unannotated(f) for name, f in found.items() if _unannotated(f)}
    assert not missing
