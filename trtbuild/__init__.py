"""trtbuild: fine-tuned BERT text classifier -> ONNX -> fast, still-accurate TensorRT engines.

This module holds the version only; everything heavy is imported inside the functions that need it.
"""

__version__ = "0.1.0"
