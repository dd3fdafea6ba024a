"""Export of the segmenter + fused JSD head (ONNX, TensorRT). Exporters land with the export issue."""

__version__ = "0.1.0"
