"""fastcam: the MLCommons HPC DeepCAM benchmark, reference-faithful and fast."""

__version__ = "0.1.0"
