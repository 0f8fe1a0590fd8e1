"""The DeepCAM network (DeepLabv3+ on aligned Xception), plain single-device PyTorch.

It knows nothing about precision, memory format, compilation or distribution;
those are applied by the training code around it.
"""

from fastcam.model.deeplab import OUTPUT_STRIDE, DeepCAM, InputShapeError, build_model, check_input_shape
from fastcam.model.state_dict import load_reference_state_dict, to_reference_state_dict, unwrap_model

__all__ = [
    "OUTPUT_STRIDE",
    "DeepCAM",
    "InputShapeError",
    "build_model",
    "check_input_shape",
    "load_reference_state_dict",
    "to_reference_state_dict",
    "unwrap_model",
]
