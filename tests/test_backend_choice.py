"""backend: auto, TensorRT -> ONNX Runtime CUDA -> ONNX Runtime CPU, each step logged with why.

This machine has neither TensorRT nor a GPU, and its onnxruntime is the CPU build, so the real
chain falls through to the CPU with both reasons. The CUDA step itself is taken for real too:
with the CUDA provider reported as available (the one faked thing: ONNX Runtime's provider list),
a real session asks for it, gets the CPU, and the backend reports the provider that really runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime
import pytest

from nflowjs_perception.backends import open_backend

DEMO = (
    Path(__file__).resolve().parents[1] / "ros2_ws/src/nflowjs_perception/demo/camvid-ood-360x480"
)


@pytest.fixture(autouse=True)
def _no_cuda_build():
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider; the gpu-marked checks cover it")


def test_auto_falls_through_to_the_cpu_and_says_why_at_each_step(caplog):
    with caplog.at_level(logging.INFO, logger="nflowjs_perception.backends"):
        backend = open_backend(DEMO, "auto")
    assert (backend.name, backend.device, backend.provider) == (
        "onnxruntime",
        "cpu",
        "CPUExecutionProvider",
    )
    tensorrt, cuda = backend.fallback_reason.split("; ")
    assert tensorrt.startswith("TensorRT not used: ") and "pip install tensorrt" in tensorrt
    assert cuda.startswith("ONNX Runtime CUDA not used: this onnxruntime")
    assert "pip install onnxruntime-gpu" in cuda
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"backend auto: {tensorrt}",
        f"backend auto: {cuda}",
        "backend auto: ONNX Runtime on CPUExecutionProvider",
    ]


def test_a_cuda_provider_that_does_not_load_is_reported_not_hidden(monkeypatch):
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: available)
    explicit = open_backend(DEMO, "onnxruntime")  # device None: CUDA where the build has it
    assert explicit.requested_device == "cuda"
    assert (explicit.device, explicit.provider) == ("cpu", "CPUExecutionProvider")
    backend = open_backend(DEMO, "auto")
    assert backend.device == "cpu"
    assert "its CUDA provider did not load, the session got CPUExecutionProvider" in (
        backend.fallback_reason
    )


def test_auto_on_device_cpu_skips_the_gpu_steps():
    backend = open_backend(DEMO, "auto", "cpu")
    assert backend.device == "cpu"
    assert backend.fallback_reason == "TensorRT and ONNX Runtime CUDA not used: device is cpu"
