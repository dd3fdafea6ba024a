"""Export of the segmenter + fused JSD head to ONNX and TensorRT (arrives with the export issue)."""

__version__ = "0.1.0"
