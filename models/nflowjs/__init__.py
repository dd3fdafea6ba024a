"""NFlowJS: dense OOD detection with synthetic negatives from a jointly trained flow."""

__version__ = "0.1.0"
