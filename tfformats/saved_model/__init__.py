"""SavedModel directories: read what `saved_model_cli show --all` shows, edit, save.

`load_saved_model(dir)` parses `saved_model.pb` (or `.pbtxt`) and nothing
else; signatures, the object graph and the rest are decoded on first use, and
`variables/` is opened only when `.variables` is touched.

Names of variables. A TF2 SavedModel stores each variable under a checkpoint
key built from its object path (`layer_with_weights-0/kernel/.ATTRIBUTES/
VARIABLE_VALUE`), while people know it by its TF name (`dense/kernel`, from
`SavedVariable.name`). `SavedModel.variables` accepts all three forms. A TF1
SavedModel (SavedModelBuilder) keys its bundle by TF1 variable names, which
are then the only names.

Editing. `set_variable`, `rename_signature`, `remove_signature` and
`set_tags` record changes on this object; `save(new_dir)` writes a complete
SavedModel (built in a temporary directory, then renamed into place) that
TensorFlow loads: the bundle keeps every key of the original, including the
object graph, with only the edited tensors replaced, and `fingerprint.pb` is
recomputed. A TF1 partitioned variable is edited whole, under its full name
(`part`, not `part/part_0`), and saved with its original partitioning.
"""


from .editing import SavedModelEditing
from .model import (Asset, Finding, MetaGraph, ObjectNode, SavedModel, SavedModelVariables,
                    VariableInfo, load_saved_model, ops_used)
from .spec import (ASSETS_DIR, ASSETS_EXTRA_DIR, INIT_OP_SIGNATURE_KEY, KERAS_METADATA,
                   SAVED_MODEL_CPB, SAVED_MODEL_PB, SAVED_MODEL_PBTXT, SIGNATURES_CHILD,
                   VARIABLES_DIR, VARIABLES_PREFIX, BoundedTensorSpec, ConcreteFunction,
                   NamedTupleValue, Signature, TensorInfo, TensorShape, TensorSpec, TypeSpec,
                   decode_structure, dtype_enum_name, parse_keras_metadata, shape_from_proto)
