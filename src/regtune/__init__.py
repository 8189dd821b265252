"""regtune: register-augmented fine-tuning of Hugging Face transformer encoders and causal LMs.

The public API users script against::

    regtune.add_registers(model, num_registers, placement=..., init=...)
    regtune.load_model(path)
    regtune.split_registers(tensor, model, dim=1)
    regtune.resolve_model_name("smollm2-135m")  # a bundled model's folder (converted once if needed)
"""

from regtune.core.hub import resolve_model_name
from regtune.core.registers import (
    RegisterConfig,
    RegisterInit,
    RegisterPlacement,
    add_registers,
    get_register_config,
    load_model,
    register_parameters,
    register_slice,
    split_registers,
)

__version__ = "0.1.0"

__all__ = [
    "RegisterConfig",
    "RegisterInit",
    "RegisterPlacement",
    "__version__",
    "add_registers",
    "get_register_config",
    "load_model",
    "register_parameters",
    "register_slice",
    "resolve_model_name",
    "split_registers",
]
