"""TensorRT backend on cuda-python: everything around the GPU, on the CPU.

No machine of ours has TensorRT or a GPU, so the TensorRT and CUDA *API surface* is faked here
(and only it): ``FakeCudart`` implements the cuda-python calls the backend makes on ordinary host
memory (cudaMalloc hands out real ctypes buffers, cudaMemcpyAsync is a memmove), and
``FakeEngineContext`` computes outputs from the input buffer it was given, so a wrong address, a
missing copy or a stale buffer shows up in the outputs. What runs for real: the backend's code,
buffer sizing, the size-change path, the bundle, and cuda-python's own error on this GPU-less
machine. The GPU run itself is the ``gpu``-marked test in test_export.py.
"""

from __future__ import annotations

import ctypes
import enum
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from nflowjs_perception import backends
from nflowjs_perception.bundle import load_bundle
from nflowjs_perception.cuda_buffers import CudaError, CudaRuntime, FrameBuffers
from nflowjs_perception.tensorrt_engine import TensorRTUnavailable, engine_file_name

DEMO = (
    Path(__file__).resolve().parents[1] / "ros2_ws/src/nflowjs_perception/demo/camvid-ood-360x480"
)


class FakeError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class FakeCudart:
    """cuda.bindings.runtime's calling convention: every call returns (error, *values)."""

    cudaError_t = FakeError
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, devices=1, fail_malloc_after=None):
        self.devices, self.fail_malloc_after = devices, fail_malloc_after
        self.memory: dict[int, ctypes.Array] = {}  # live allocations by address
        self.calls: list[str] = []

    def _alloc(self, name, size):
        self.calls.append(name)
        if self.fail_malloc_after is not None and len(self.memory) >= self.fail_malloc_after:
            return FakeError.cudaErrorMemoryAllocation, None
        block = (ctypes.c_byte * size)()
        self.memory[ctypes.addressof(block)] = block
        return FakeError.cudaSuccess, ctypes.addressof(block)

    def cudaMalloc(self, size):
        return self._alloc("cudaMalloc", size)

    def cudaMallocHost(self, size):
        return self._alloc("cudaMallocHost", size)

    def cudaFree(self, pointer):
        self.calls.append("cudaFree")
        del self.memory[pointer]
        return (FakeError.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.calls.append(f"memcpy{kind}")
        ctypes.memmove(dst, src, count)
        return (FakeError.cudaSuccess,)

    def cudaStreamCreate(self):
        return FakeError.cudaSuccess, "stream-0"

    def cudaStreamDestroy(self, stream):
        self.calls.append("cudaStreamDestroy")
        return (FakeError.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        self.calls.append("sync")
        return (FakeError.cudaSuccess,)

    def cudaGetDeviceCount(self):
        if not self.devices:
            return FakeError.cudaErrorNoDevice, 0
        return FakeError.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, device):
        return FakeError.cudaSuccess, types.SimpleNamespace(name=b"NVIDIA H200\x00")

    def cudaGetErrorString(self, error):
        return FakeError.cudaSuccess, f"fake error {error.name}".encode()


class FakeEngineContext:
    """TensorRT's IExecutionContext surface: labels = R, score = G / 255, mask = B > 127.

    As TensorRT's: set_input_shape returns False (keeping the old shape) outside the engine's
    profile, set_tensor_address returns False for a name the engine does not have, and outputs
    are written in the engine's own dtypes, whatever buffer the address points to.
    """

    def __init__(self, engine):
        self.engine = engine
        self.addresses, self.shape, self.shape_calls = {}, None, 0

    def set_input_shape(self, name, shape):
        assert name == "rgb"
        self.shape_calls += 1
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        assert self.shape is not None, "no input shape set"
        return self.shape if name == "rgb" else self.shape[:3]

    def set_tensor_address(self, name, pointer):
        if name not in self.engine.io:
            return False
        self.addresses[name] = pointer
        return True

    def execute_async_v3(self, stream):
        _, h, w, _ = self.shape
        rgb = np.ctypeslib.as_array(
            (ctypes.c_uint8 * (h * w * 3)).from_address(self.addresses["rgb"])
        )
        rgb = rgb.reshape(h, w, 3)

        def out(name):
            dtype = self.engine.io[name][1]
            size = h * w * np.dtype(dtype).itemsize
            raw = (ctypes.c_byte * size).from_address(self.addresses[name])
            return np.frombuffer(raw, dtype=dtype).reshape(h, w)

        out("labels")[:] = rgb[..., 0]
        out("score")[:] = rgb[..., 1] / 255.0
        out("ood_mask")[:] = rgb[..., 2] > 127
        return True


class FakeEngine:
    """ICudaEngine's surface: I/O tensors (name -> mode, dtype) and the input's profile."""

    def __init__(self, trt, io, profile):
        self.trt, self.io, self.profile = trt, io, profile

    @property
    def num_io_tensors(self):
        return len(self.io)

    def get_tensor_name(self, i):
        return list(self.io)[i]

    def get_tensor_mode(self, name):
        return self.io[name][0]

    def get_tensor_dtype(self, name):
        return self.io[name][1]  # the fake's DataType is the numpy type itself

    def get_tensor_profile_shape(self, name, index):
        return self.profile

    def create_execution_context(self):
        self.trt.contexts.append(FakeEngineContext(self))
        return self.trt.contexts[-1]


class FakeTensorRT(types.ModuleType):
    """The `tensorrt` module surface the backend uses to load an engine.

    ``score_dtype`` is the engine's score output type, ``profile`` its input's (min, opt, max).
    """

    __version__ = "10.13.0.35"
    TensorIOMode = enum.Enum("TensorIOMode", "INPUT OUTPUT")

    def __init__(self, score_dtype=np.float32, profile=None):
        super().__init__("tensorrt")
        self.contexts = []
        modes = self.TensorIOMode
        io = {
            "rgb": (modes.INPUT, np.uint8),
            "labels": (modes.OUTPUT, np.uint8),
            "score": (modes.OUTPUT, score_dtype),
            "ood_mask": (modes.OUTPUT, np.uint8),
        }
        static = (1, 360, 480, 3)  # the demo bundle's size, as a static engine's only shape
        self.profile = profile or (static, static, static)
        outer = self

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                if data != b"serialized engine":
                    return None
                return FakeEngine(outer, outer.io, outer.profile)

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        self.Runtime, self.Logger = Runtime, Logger
        self.io = io

    @staticmethod
    def nptype(dtype):
        return dtype


@pytest.fixture
def engine_bundle(tmp_path, monkeypatch):
    """The demo bundle with a (fake) engine for the fake H200 in an engine cache folder."""
    trt = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "engines"
    cache.mkdir()
    name = engine_file_name("fp16", "NVIDIA H200", trt.__version__)
    (cache / name).write_bytes(b"serialized engine")
    return trt, cache


DYNAMIC_PROFILE = ((1, 64, 64, 3), (1, 360, 480, 3), (1, 1024, 1024, 3))


def frame(height=360, width=480, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_buffers_are_allocated_once_and_outputs_come_back_through_them(engine_bundle):
    trt, cache = engine_bundle
    cudart = FakeCudart()
    backend = backends.TensorRTBackend(
        DEMO, load_bundle(DEMO), engine_cache_dir=cache, cuda=CudaRuntime(cudart)
    )
    assert backend.engine_path.parent == cache
    for seed in range(3):  # three frames, one allocation
        rgb = frame(seed=seed)
        labels, score, mask = backend.infer(rgb)
        np.testing.assert_array_equal(labels, rgb[..., 0])  # the frame went in, outputs came out
        np.testing.assert_allclose(score, rgb[..., 1] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(mask, rgb[..., 2] > 127)
        assert labels.shape == (360, 480) and score.dtype == np.float32
    allocations = [c for c in cudart.calls if c.startswith("cudaMalloc")]
    assert allocations == ["cudaMalloc", "cudaMallocHost"] * 4  # rgb, labels, score, mask
    per_frame = cudart.calls[len(allocations) :]
    assert per_frame == ["memcpy1", "memcpy2", "memcpy2", "memcpy2", "sync"] * 3
    assert backend.buffers.nbytes == 360 * 480 * (3 + 1 + 4 + 1)
    assert trt.contexts[0].shape_calls == 1
    backend.close()
    assert cudart.memory == {}  # every buffer freed
    assert cudart.calls[-1] == "cudaStreamDestroy"
    with pytest.raises(RuntimeError, match="backend is closed"):
        backend.infer(frame())  # not on freed buffers
    backend.close()  # twice: nothing freed twice
    assert cudart.calls.count("cudaStreamDestroy") == 1


def test_a_new_input_size_reallocates_the_buffers(engine_bundle, monkeypatch):
    trt, cache = engine_bundle
    cudart = FakeCudart()
    bundle = load_bundle(DEMO)
    bundle.dynamic_size = True  # as a --dynamic bundle: any frame size
    trt.profile = DYNAMIC_PROFILE
    backend = backends.TensorRTBackend(
        DEMO, bundle, engine_cache_dir=cache, cuda=CudaRuntime(cudart)
    )
    backend.infer(frame(360, 480))
    rgb = frame(200, 320, seed=5)
    labels, _, _ = backend.infer(rgb)
    np.testing.assert_array_equal(labels, rgb[..., 0])
    assert backend.buffers.size == (200, 320) and trt.contexts[0].shape == (1, 200, 320, 3)
    assert cudart.calls.count("cudaFree") == 8  # the 360x480 buffers, host and device
    assert set(trt.contexts[0].addresses.values()) == set(backend.buffers.device.values())
    assert len(cudart.memory) == 8  # the old buffers freed (an address may be reused)
    backend.infer(frame(200, 320))
    assert cudart.calls.count("cudaMalloc") == 8  # same size again: nothing allocated


def test_a_frame_outside_the_profile_is_refused_not_run_on_stale_buffers(engine_bundle):
    """set_input_shape's False (TensorRT keeps the old shape) is an error naming the profile."""
    trt, cache = engine_bundle
    cudart = FakeCudart()
    bundle = load_bundle(DEMO)
    bundle.dynamic_size = True
    trt.profile = DYNAMIC_PROFILE
    backend = backends.TensorRTBackend(
        DEMO, bundle, engine_cache_dir=cache, cuda=CudaRuntime(cudart)
    )
    backend.infer(frame(360, 480))
    with pytest.raises(ValueError, match=r"\(1, 64, 64, 3\) to \(1, 1024, 1024, 3\)"):
        backend.infer(frame(40, 480))
    assert backend.buffers is None and len(cudart.memory) == 0  # nothing left to run stale
    rgb = frame(360, 480, seed=3)
    labels, _, _ = backend.infer(rgb)  # back inside the profile: runs on fresh buffers
    np.testing.assert_array_equal(labels, rgb[..., 0])
    backend.close()


def test_an_engine_whose_score_dtype_differs_from_the_bundle_is_refused(tmp_path, monkeypatch):
    """A float16 bundle with an engine writing a float32 score: 4 bytes into 2-byte buffers."""
    trt = FakeTensorRT(score_dtype=np.float32)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / engine_file_name("fp16", "NVIDIA H200", trt.__version__)).write_bytes(
        b"serialized engine"
    )
    bundle = load_bundle(DEMO)
    bundle.score_dtype = "float16"
    with pytest.raises(backends.BundleError, match=r"score output float32.*score output float16"):
        backends.TensorRTBackend(
            DEMO, bundle, engine_cache_dir=tmp_path, cuda=CudaRuntime(FakeCudart())
        )
    trt.io["mask"] = trt.io.pop("ood_mask")  # a renamed output
    with pytest.raises(backends.BundleError, match="does not match its bundle's I/O"):
        backends.TensorRTBackend(
            DEMO, load_bundle(DEMO), engine_cache_dir=tmp_path, cuda=CudaRuntime(FakeCudart())
        )
    trt.io["ood_mask"] = trt.io.pop("mask")
    trt.io["labels"] = (trt.TensorIOMode.INPUT, np.uint8)  # an output the engine reads
    with pytest.raises(backends.BundleError, match="labels input uint8"):
        backends.TensorRTBackend(
            DEMO, load_bundle(DEMO), engine_cache_dir=tmp_path, cuda=CudaRuntime(FakeCudart())
        )


def test_an_engine_shape_that_differs_from_the_buffers_is_refused(engine_bundle, monkeypatch):
    _, cache = engine_bundle
    cudart = FakeCudart()
    backend = backends.TensorRTBackend(
        DEMO, load_bundle(DEMO), engine_cache_dir=cache, cuda=CudaRuntime(cudart)
    )
    monkeypatch.setattr(FakeEngineContext, "get_tensor_shape", lambda self, name: (1, 2, 3))
    with pytest.raises(RuntimeError, match=r"'rgb' has shape \(1, 2, 3\)"):
        backend.infer(frame())
    assert cudart.memory == {}  # the new buffers freed


def test_a_refused_tensor_address_is_an_error(engine_bundle, monkeypatch):
    _, cache = engine_bundle
    cudart = FakeCudart()
    backend = backends.TensorRTBackend(
        DEMO, load_bundle(DEMO), engine_cache_dir=cache, cuda=CudaRuntime(cudart)
    )
    monkeypatch.setattr(FakeEngineContext, "set_tensor_address", lambda self, n, p: False)
    with pytest.raises(RuntimeError, match="refused the address of 'rgb'"):
        backend.infer(frame())
    assert cudart.memory == {}


def test_a_failed_allocation_frees_what_was_allocated_and_names_the_call():
    cudart = FakeCudart(fail_malloc_after=3)
    with pytest.raises(CudaError, match="cudaMallocHost failed: fake error cudaErrorMemory"):
        FrameBuffers(CudaRuntime(cudart), 64, 64, "float16")
    assert cudart.memory == {}


def test_a_failed_free_frees_the_rest_and_nothing_twice():
    cudart = FakeCudart()
    buffers = FrameBuffers(CudaRuntime(cudart), 64, 64, "float32")
    failing = buffers.device["labels"]
    real_free = cudart.cudaFree

    def cuda_free(pointer):
        if pointer == failing:
            cudart.calls.append("cudaFree")
            return (FakeError.cudaErrorMemoryAllocation,)
        return real_free(pointer)

    cudart.cudaFree = cuda_free
    with pytest.raises(CudaError, match="cudaFree failed"):
        buffers.free()
    assert set(cudart.memory) == {failing}  # all the others freed
    calls = len(cudart.calls)
    buffers.free()  # again: nothing left to free, no double free
    assert len(cudart.calls) == calls and buffers.host == {} and buffers.device == {}


def test_no_gpu_is_named_with_the_fix():
    with pytest.raises(
        TensorRTUnavailable, match=r"none is usable .*cudaErrorNoDevice.*--gpus all"
    ):
        CudaRuntime(FakeCudart(devices=0))


def test_real_cuda_python_on_this_gpu_less_machine_says_so():
    """cuda-python is installed here (torch's CUDA wheels bring it) but there is no GPU."""
    pytest.importorskip("cuda.bindings.runtime")
    with pytest.raises(TensorRTUnavailable, match="none is usable"):
        CudaRuntime()


def test_missing_cuda_python_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    with pytest.raises(TensorRTUnavailable, match="pip install cuda-bindings"):
        CudaRuntime()


def test_missing_tensorrt_is_named_before_cuda_is_touched(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailable, match="pip install tensorrt"):
        backends.TensorRTBackend(DEMO, load_bundle(DEMO), cuda=CudaRuntime(FakeCudart()))


def test_missing_engine_names_the_gpu_and_the_fix(engine_bundle, tmp_path):
    with pytest.raises(backends.BundleError, match="no TensorRT engine for NVIDIA H200"):
        backends.TensorRTBackend(
            DEMO, load_bundle(DEMO), engine_cache_dir=tmp_path, cuda=CudaRuntime(FakeCudart())
        )


def test_a_first_start_int8_build_needs_the_qdq_graph(tmp_path, monkeypatch):
    """An INT8 engine is built from model.int8.onnx; without it the error says how to get it."""
    bundle = load_bundle(DEMO)
    built = []
    monkeypatch.setattr(backends, "build_serialized_engine", lambda *a: built.append(a))
    with pytest.raises(backends.BundleError, match="nflowjs export int8"):
        backends.find_or_build_engine(
            DEMO, bundle, "NVIDIA H200", "10.13.0.35", "int8", tmp_path, True
        )
    assert built == []
