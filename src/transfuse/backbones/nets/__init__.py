"""The networks behind the specs: torch modules, tap wiring and weight conversion, one module per family.

Only these modules import torch (and timm, transformers, Keras, ONNX Runtime) at top level. A spec
module (``transfuse.backbones.<family>``) imports its network from here inside its ``build``
function, so listing backbones and reading specs never loads torch. Nothing here imports a spec
module: what a network needs to know about its architecture comes in as arguments.
"""
