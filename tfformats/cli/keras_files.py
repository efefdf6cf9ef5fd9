"""`convert` and `diff` of Keras weight files (`.keras`, `.weights.h5`, `.h5`),
read by tfformats.keras: the checkpoint commands hand them over here."""


def convert(args, src_kind, dst_kind):
    """`convert` with a Keras file on either side: Keras -> TF checkpoint (tf-keras'
    layout), .safetensors or .npz (by Keras variable name); anything -> a Keras
    weights file laid out like `--like`."""
    from .. import convert as converters
    from .. import keras
    from .common import UsageError
    from .convert import report, run_skipping
    skipped = []
    if dst_kind == "keras":
        if not args.like:
            raise UsageError(f"output {args.dst}: writing a Keras weights file needs --like, "
                             "a .keras/.weights.h5/.h5 file of the same model to take the layout from")
        import contextlib
        import os
        with contextlib.ExitStack() as stack:
            src = args.src
            if src_kind in ("safetensors", "npz"):   # through a checkpoint, as diff reads them
                from .. import fileio
                prefix = os.path.join(stack.enter_context(fileio.scratch_dir("tfformats-keras-")),
                                      "ckpt")
                (converters.safetensors_to_checkpoint if src_kind == "safetensors"
                 else converters.npz_to_checkpoint)(src, prefix)
                src = prefix
            keras.to_weights_h5(src, args.dst, args.like)
    else:
        function = {"checkpoint": keras.keras_to_checkpoint,
                    "safetensors": converters.checkpoint_to_safetensors,
                    "npz": converters.checkpoint_to_npz}[dst_kind]
        skipped = run_skipping(function, args)
    return report(args, src_kind, dst_kind, skipped, f"no place in a {dst_kind}")


class _ByVariableName:
    """A checkpoint reader's tensors under the variable names its object graph
    records (`dense/kernel`): what a Keras file is compared with in `diff`.
    A name recorded for several keys (a SavedModel lists variables twice) is
    the first key's."""

    def __init__(self, reader):
        self.reader, self.bundle = reader, reader.bundle
        self.keys = {}
        for key, var in reader.object_variables().items():
            if var.full_name and var.attribute == "VARIABLE_VALUE" and key in reader:
                self.keys.setdefault(var.full_name, key)
        if not self.keys:   # a name-based (TF1) checkpoint: its keys are variable names
            self.keys = {key: key for key in reader}

    def entry(self, name):
        return self.reader.entry(self.keys[name])

    def get_tensor(self, name):
        return self.reader.get_tensor(self.keys[name])

    def shape(self, name):
        return self.reader.shape(self.keys[name])

    def dtype(self, name):
        return self.reader.dtype(self.keys[name])

    def close(self):
        self.reader.close()


def by_variable_name(source):
    """Rename the tensors of a `diff` source (a checkpoint) to variable names."""
    source.reader = _ByVariableName(source.reader)
    source.names = sorted(source.reader.keys)
