"""Export of the segmenter + fused JSD head to ONNX and TensorRT, model bundles, backends."""

__version__ = "0.1.0"
