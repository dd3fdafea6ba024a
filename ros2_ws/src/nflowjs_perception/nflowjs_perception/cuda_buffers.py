"""CUDA memory for TensorRT engines on NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``).

The same calls as TensorRT's Python samples (``common_runtime.py``): ``cudaMallocHost`` for
page-locked host buffers (the copies to and from them are DMA transfers on the stream),
``cudaMalloc`` for device buffers, ``cudaMemcpyAsync`` on one stream. ``FrameBuffers`` holds the
buffers for one input size: allocated once, reused for every frame of that size, freed when the
size changes (dynamic bundles) or the backend closes. cuda-python is a thin binding with no
buffer helper of its own, hence this small module (torch tensors did this job before, at the
cost of torch's CUDA wheels in the runtime image).
"""

from __future__ import annotations

import ctypes

import numpy as np

from nflowjs_perception.tensorrt_engine import TensorRTUnavailable

CUDA_INSTALL_HINT = (
    "the TensorRT backend needs NVIDIA's cuda-python bindings (`pip install cuda-bindings`, "
    "the CUDA 12 or 13 build the driver supports; the Docker runtime image has them)"
)


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and CUDA's own reason."""


def import_cudart():
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the older ``cuda.cudart`` layout."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as error:
            raise TensorRTUnavailable(f"{CUDA_INSTALL_HINT} ({error})") from error
    return runtime


class CudaRuntime:
    """The few CUDA runtime calls the engine needs, each checked (cuda-python returns codes)."""

    def __init__(self, cudart=None):
        self.cudart = cudart or import_cudart()
        error, count = self.cudart.cudaGetDeviceCount()
        if error != self.cudart.cudaError_t.cudaSuccess or not count:
            reason = self._reason(error) if error != self.cudart.cudaError_t.cudaSuccess else ""
            raise TensorRTUnavailable(
                f"TensorRT needs a CUDA GPU and none is usable ({reason or '0 devices'}); check "
                "`nvidia-smi`, and in Docker run with --gpus all (NVIDIA Container Toolkit)"
            )

    def _reason(self, error) -> str:
        _, text = self.cudart.cudaGetErrorString(error)
        return text.decode() if isinstance(text, bytes) else str(text)

    def call(self, name: str, *args):
        error, *values = getattr(self.cudart, name)(*args)
        if error != self.cudart.cudaError_t.cudaSuccess:
            raise CudaError(f"{name} failed: {self._reason(error)}")
        return values[0] if len(values) == 1 else values

    def device_name(self, device: int = 0) -> str:
        name = self.call("cudaGetDeviceProperties", device).name
        return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")

    def create_stream(self):
        return self.call("cudaStreamCreate")

    def synchronize(self, stream) -> None:
        self.call("cudaStreamSynchronize", stream)

    def to_device(self, device_ptr: int, host: np.ndarray, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync", device_ptr, host.ctypes.data, host.nbytes, kind, stream)

    def to_host(self, host: np.ndarray, device_ptr: int, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync", host.ctypes.data, device_ptr, host.nbytes, kind, stream)


INPUTS = ("rgb",)  # the engine's I/O tensors: the rest are outputs
OUTPUTS = ("labels", "score", "ood_mask")


def tensor_specs(height: int, width: int, score_dtype: str) -> dict[str, tuple]:
    """name -> (shape, numpy dtype) of the engine's four tensors at one input size."""
    return {
        "rgb": ((1, height, width, 3), np.dtype(np.uint8)),
        "labels": ((1, height, width), np.dtype(np.uint8)),
        "score": ((1, height, width), np.dtype(score_dtype)),
        "ood_mask": ((1, height, width), np.dtype(np.uint8)),
    }


class FrameBuffers:
    """Page-locked host and device buffers of the engine's four tensors at one input size."""

    def __init__(self, cuda: CudaRuntime, height: int, width: int, score_dtype: str):
        self.cuda, self.size = cuda, (height, width)
        specs = tensor_specs(height, width, score_dtype)
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        try:
            for name, (shape, dtype) in specs.items():
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                self.device[name] = int(cuda.call("cudaMalloc", nbytes))
                pointer = int(cuda.call("cudaMallocHost", nbytes))
                self.host[name] = _host_array(pointer, shape, dtype)
        except BaseException:
            self.free()
            raise

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.host.values())

    def free(self) -> None:
        """Free every buffer, each on its own: one failed free neither leaks the others nor
        leaves them to be freed twice (the dicts are emptied first). Raises the first error."""
        host, device = self.host, self.device
        self.host, self.device = {}, {}
        first: CudaError | None = None
        calls = [("cudaFreeHost", a.ctypes.data) for a in host.values()]
        calls += [("cudaFree", pointer) for pointer in device.values()]
        for name, pointer in calls:
            try:
                self.cuda.call(name, pointer)
            except CudaError as error:
                first = first or error
        if first is not None:
            raise first


def _host_array(pointer: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A numpy view of page-locked memory (as TensorRT's samples build their host buffers)."""
    buffer = (ctypes.c_byte * (int(np.prod(shape)) * np.dtype(dtype).itemsize)).from_address(
        pointer
    )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)
