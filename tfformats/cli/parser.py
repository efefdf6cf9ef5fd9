"""The command line: the argument parser and `main`, which runs one subcommand
and turns what it raises into a message and an exit status."""

import argparse
import sys

from .bench import cmd_bench
from .common import EXIT_ERROR, EXIT_USAGE, UsageError
from .convert import cmd_convert
from .diff import cmd_diff
from .dump import cmd_dump
from .listing import cmd_ls
from .show import cmd_show
from .validate import cmd_fingerprint, cmd_validate


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"tfformats: error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


_EXAMPLES = {
    "ls": "examples:\n  tfformats ls run/ckpt-7\n  tfformats ls export/1 --glob '*/kernel*' --json",
    "show": ("examples:\n  tfformats show export/1\n  tfformats show export/1 --tag_set serve\n"
             "  tfformats show export/1 --tag_set serve --signature_def serving_default\n"
             "  tfformats show export/1 --all"),
    "dump": ("examples:\n  tfformats dump run/ckpt-7 model/dense/kernel\n"
             "  tfformats dump run/ckpt-7 'dense/kernel/.ATTRIBUTES/VARIABLE_VALUE' --full --precision 3\n"
             "  tfformats dump run/ckpt-7 model/dense/kernel --npy kernel.npy"),
    "validate": ("examples:\n  tfformats validate run/ckpt-7 export/1\n"
                 "  tfformats validate export/1 --json > report.json\n"
                 "  tfformats validate export/1/saved_model.pb --expect saved_model\n"
                 "exit status: 0 clean, 1 findings, 2 usage error, 3 a check could not finish"),
    "fingerprint": ("examples:\n  tfformats fingerprint export/1\n  tfformats fingerprint export/1 --check\n"
                    "  tfformats fingerprint export/1 --write"),
    "convert": ("examples:\n  tfformats convert run/ckpt-7 model.safetensors\n"
                "  tfformats convert export/1 weights.npz\n  tfformats convert model.safetensors out/ckpt\n"
                "  tfformats convert slim/inception_v3.ckpt out/ckpt   # a TF1 V1 file -> V2 bundle\n"
                "  tfformats convert run/ckpt-7 weights.safetensors --exclude '*/.OPTIMIZER_SLOT/*' "
                "--exclude 'optimizer/*'   # the model's weights only"),
    "diff": ("examples:\n  tfformats diff run/ckpt-6 run/ckpt-7\n"
             "  tfformats diff run/ckpt-7 model.safetensors --atol 1e-6 --json\n"
             "  tfformats diff run/ckpt-6 run/ckpt-7 dense/kernel model/dense/bias\n"
             "exit status: 0 same, 1 different"),
    "bench": "examples:\n  tfformats bench run/ckpt-7 --rounds 5",
}


def _version_text():
    from .. import __version__, implementation
    return f"tfformats {__version__} ({implementation()} implementation)"


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version_text())
        parser.exit()


_GLOBAL_OPTIONS = ("quiet", "debug", "json")


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output (see docs/cli.md)")
    common.add_argument("--storage-option", action="append", default=argparse.SUPPRESS,
                        metavar="KEY=VALUE", dest="storage_option",
                        help="an fsspec option for URL paths (s3://, gs://, https://), e.g. "
                             "endpoint_url=http://127.0.0.1:9000 or anon=true; dots nest "
                             "(client_kwargs.region_name=eu-west-1); repeatable")
    parser = _Parser(prog="tfformats", parents=[common],
                     description="Inspect, validate, convert and compare TensorFlow checkpoints and "
                                 "SavedModels without TensorFlow.",
                     epilog="Run 'tfformats COMMAND --help' for a command's options and examples.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and implementation")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name, help, handler):
        p = sub.add_parser(name, parents=[common], help=help, description=help, epilog=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler)
        return p

    p = command("ls", "list every tensor (from the index only)", cmd_ls)
    p.add_argument("path", help="checkpoint prefix, .index/.data file, checkpoint dir, SavedModel dir, "
                   "Keras file, or graph file (.pb/.pbtxt/.meta: its constants)")
    p.add_argument("--glob", metavar="PATTERN", help="only names or object paths matching this pattern")

    p = command("show", "what `saved_model_cli show` prints, without TensorFlow", cmd_show)
    p.add_argument("dir", nargs="?", help="SavedModel directory, or a graph file (.pb/.pbtxt/.meta) "
                   "to summarize")
    p.add_argument("--dir", dest="dir_option", metavar="DIR",
                   help="the same, spelled as saved_model_cli spells it")
    p.add_argument("--all", action="store_true", help="everything: all tag-sets, signatures, ops, functions")
    p.add_argument("--tag_set", "--tag-set", metavar="T", help="comma-separated tags of one MetaGraphDef")
    p.add_argument("--signature_def", "--signature-def", metavar="S", help="one SignatureDef key (needs --tag_set)")
    p.add_argument("--list_ops", "--list-ops", action="store_true", help="ops used by the MetaGraphDef")

    p = command("dump", "print one tensor's values (or write them to .npy)", cmd_dump)
    p.add_argument("path", help="checkpoint or SavedModel")
    p.add_argument("tensor", help="checkpoint key, object path or TF variable name (dense/kernel:0)")
    p.add_argument("--threshold", type=int, default=1000, metavar="N",
                   help="summarize arrays with more than N elements (numpy's threshold; default 1000)")
    p.add_argument("--precision", type=int, metavar="P", help="digits after the point")
    p.add_argument("--full", action="store_true", help="never summarize")
    p.add_argument("--npy", metavar="OUT", help="write the tensor to this .npy file instead")

    p = command("validate", "check CRCs, shards, bounds, protos and fingerprints (for CI)", cmd_validate)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="checkpoints, SavedModel directories or their saved_model.pb/.pbtxt")
    p.add_argument("--expect", choices=("saved_model", "checkpoint", "keras", "graph"),
                   help="what each PATH must be; anything else is a finding")

    p = command("fingerprint", "compute a SavedModel's fingerprint hashes", cmd_fingerprint)
    p.add_argument("dir", help="SavedModel directory")
    p.add_argument("--check", action="store_true", help="compare with fingerprint.pb; exit 1 on mismatch")
    p.add_argument("--write", action="store_true", help="(re)write fingerprint.pb")

    p = command("convert", "checkpoint <-> .safetensors / .npz (by extension), or -> V2 checkpoint",
                cmd_convert)
    p.add_argument("src", help="checkpoint / SavedModel dir, a .safetensors / .npz / Keras file, "
                   "or a graph file (.pb/.pbtxt/.meta: its constants)")
    p.add_argument("dst", help="a .safetensors / .npz file, or a checkpoint prefix")
    p.add_argument("--to", choices=("checkpoint", "safetensors", "npz", "keras"),
                   help="the output format, whatever DST's extension says")
    p.add_argument("--like", metavar="KERAS_FILE",
                   help="to a Keras .weights.h5/.h5: the .keras/.h5 file of the same model whose layout to write")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="leave out tensors the target format cannot hold (strings) instead of failing")
    p.add_argument("--glob", metavar="PATTERN", action="append",
                   help="only tensors whose key, object path or variable name matches (repeatable; "
                   "from a checkpoint, SavedModel or graph file)")
    p.add_argument("--exclude", metavar="PATTERN", action="append",
                   help="leave out tensors whose key, object path or variable name matches "
                   "(repeatable), e.g. '*/.OPTIMIZER_SLOT/*'")

    p = command("diff", "compare the tensors of two checkpoints (or .safetensors / .npz)", cmd_diff)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("tensors", nargs="*", metavar="TENSOR",
                   help="compare only these: checkpoint keys, object paths or variable names")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0)")

    p = command("bench", "decode throughput, every value read: CRC on and off, copies and views, "
                "against TensorFlow and safetensors", cmd_bench)
    p.add_argument("path")
    p.add_argument("--rounds", type=int, default=3, metavar="N", help="rounds per side (default 3)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    # The global options go before or after the command; SUPPRESS lets either place set them.
    for name in _GLOBAL_OPTIONS:
        setattr(args, name, getattr(args, name, False))
    debug = args.debug
    try:
        sys.stdout.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError):
        pass
    try:
        from ..fileio import storage
        with storage(storage_options=_storage_options(getattr(args, "storage_option", None))):
            status = args.handler(args)
        sys.stdout.flush()
        return status
    except UsageError as e:
        _report(e, debug)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`tfformats ls x | head`): not an error worth a message.
        from ..fileio import discard_output
        discard_output(sys.stdout.fileno())
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("tfformats: interrupted\n")
        return 130
    except Exception as e:
        from ..errors import TFFormatsError
        if not isinstance(e, (TFFormatsError, OSError)):
            _report(e, debug, unexpected=True)
        else:
            _report(e, debug)
        return EXIT_ERROR


def _storage_options(items):
    """{"key": value} of the `--storage-option KEY=VALUE` items: values that read
    as JSON (true, 3, "x") become that, dotted keys nest."""
    import json
    options = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--storage-option {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        *outer, last = key.split(".")
        target = options
        for part in outer:
            target = target.setdefault(part, {})
        target[last] = value
    return options


def _report(exc, debug, unexpected=False):
    if debug:
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = f"unexpected {type(exc).__name__}: {message}"
        if not debug:
            message += " (rerun with --debug for the traceback)"
    sys.stderr.write(f"tfformats: error: {message}\n")
