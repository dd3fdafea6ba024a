"""Runtime backends behind one interface: ``infer(rgb uint8 HxWx3) -> (labels, score, mask)``.

``rgb`` is at the bundle's size (any size for a dynamic-size bundle); outputs are HxW (labels
uint8, score float32/float16, mask uint8). ONNX Runtime is the CPU default; TensorRT runs an
engine built for this GPU (its I/O buffers from cuda-python, no torch); torch runs the bundle's
``torch.export`` program (``model.pt2``). Nothing here imports the training package
(``nflowjs``) or the exporter (``nflowjs_export``): they import the runtime, never the other way.
torch and TensorRT are imported only when chosen: an ONNX Runtime node never loads them.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from nflowjs_perception.bundle import Bundle, BundleError, load_bundle
from nflowjs_perception.cuda_buffers import INPUTS, CudaRuntime, FrameBuffers, tensor_specs
from nflowjs_perception.tensorrt_engine import (
    INT8_MODEL,
    TensorRTUnavailable,
    build_serialized_engine,
    engine_file_name,
    import_tensorrt,
    onnx_file_for,
)

TORCH_PROGRAM = "model.pt2"  # torch.export program, for the torch backend
BACKEND_NAMES = ("auto", "tensorrt", "onnxruntime", "torch")


class Backend(Protocol):
    name: str
    bundle: Bundle

    def infer(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def _check_frame(bundle: Bundle, rgb: np.ndarray) -> None:
    expected = (bundle.height, bundle.width, 3)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
    if not bundle.dynamic_size and rgb.shape != expected:
        raise ValueError(f"frame {rgb.shape} != bundle input {expected}; resize it first")


class OnnxRuntimeBackend:
    name = "onnxruntime"
    fallback_reason = ""  # set by open_backend("auto")

    def __init__(self, folder: Path, bundle: Bundle, device: str | None = None):
        import onnxruntime as ort

        if device is None:  # the GPU where this ONNX Runtime build can use one
            cuda = "CUDAExecutionProvider" in ort.get_available_providers()
            device = "cuda" if cuda else "cpu"
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self.bundle, self.requested_device = bundle, device
        path = folder / bundle.model_file
        try:
            with warnings.catch_warnings():  # a missing provider: reported below, not as this
                warnings.simplefilter("ignore", UserWarning)
                self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as error:  # ONNX Runtime's own error types derive from Exception
            raise BundleError(
                f"ONNX Runtime {ort.__version__} cannot load {path} ({error}); re-export the "
                "bundle with this repository's exporter, or update onnxruntime"
            ) from error
        # ONNX Runtime falls back to the CPU without an error when the CUDA provider is missing
        # or fails to load: the device is the provider the session really got.
        self.provider = self.session.get_providers()[0]
        self.device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"

    def infer(self, rgb: np.ndarray):
        _check_frame(self.bundle, rgb)
        labels, score, mask = self.session.run(None, {"rgb": rgb[None]})
        return labels[0], score[0], mask[0]


class TorchBackend:
    """The bundle's ``torch.export`` program (``model.pt2``); on CUDA under fp16 autocast.

    Loading it needs torch only, not this repository's training code: the program is the graph
    the exporter traced, weights included.
    """

    name = "torch"

    def __init__(self, folder: Path, bundle: Bundle, device: str = "cpu"):
        try:
            import torch
        except ImportError as error:
            raise BundleError(
                f"the torch backend needs torch ({error}): pip install torch, or choose backend "
                "onnxruntime"
            ) from error

        path = folder / TORCH_PROGRAM
        if not path.is_file():
            raise BundleError(
                f"{folder} has no {TORCH_PROGRAM} (the torch backend's program): export the "
                "bundle again without --no-torch-model, or choose backend onnxruntime"
            )
        if device == "cuda" and not torch.cuda.is_available():
            raise BundleError("the torch backend on cuda needs a CUDA GPU and none is visible")
        program = torch.export.load(str(path))
        if device != "cpu":  # parameters, constants and device arguments of the graph's ops
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        self.model = program.module()
        self.bundle, self.device, self.torch = bundle, device, torch
        self.score_dtype = getattr(np, bundle.score_dtype)

    def infer(self, rgb: np.ndarray):
        _check_frame(self.bundle, rgb)
        torch = self.torch
        with (
            torch.inference_mode(),
            torch.autocast("cuda", torch.float16, enabled=self.device == "cuda"),
        ):
            frame = torch.from_numpy(rgb)[None].to(self.device, non_blocking=True)
            labels, score, mask = self.model(frame)
        score = score[0].float().cpu().numpy().astype(self.score_dtype, copy=False)
        return labels[0].cpu().numpy(), score, mask[0].cpu().numpy()


def find_or_build_engine(
    folder: Path,
    bundle: Bundle,
    gpu_name: str,
    tensorrt_version: str,
    precision: str | None = None,
    engine_cache_dir: Path | None = None,
    build_if_missing: bool = False,
    progress: Callable[[str], None] = lambda text: None,
) -> Path:
    """The engine for this GPU: from the bundle, else the cache, else (if allowed) built now.

    Precision preference without ``precision``: int8, fp16, fp32 (fastest first). A build goes
    to ``engine_cache_dir`` (a mounted bundle may be read-only) in fp16 unless told otherwise.
    ``progress`` hears when a build starts and ends (it takes minutes; perception_node logs it).
    """
    preference = [precision] if precision else ["int8", "fp16", "fp32"]
    for p in preference:
        name = engine_file_name(p, gpu_name, tensorrt_version)
        if name in bundle.files:
            return folder / name
        if engine_cache_dir and (engine_cache_dir / name).is_file():
            return engine_cache_dir / name
    if not (build_if_missing and engine_cache_dir):
        raise BundleError(
            f"{folder} has no TensorRT engine for {gpu_name} and TensorRT {tensorrt_version}; "
            "run `nflowjs export tensorrt --bundle ...` on this machine, or set "
            "engine_cache_dir and build_engine_if_missing"
        )
    built = precision or "fp16"
    target = engine_cache_dir / engine_file_name(built, gpu_name, tensorrt_version)
    size = (bundle.height, bundle.width) if bundle.dynamic_size else None
    source = onnx_file_for(built, bundle.model_file)
    if source not in bundle.files:
        raise BundleError(
            f"{folder} has no {source} to build an {built} engine from: run `nflowjs export int8 "
            "--bundle ... --calibration-images DIR` first, or choose precision fp16"
        )
    progress(
        f"building a TensorRT {built} engine for {gpu_name} (TensorRT {tensorrt_version}) from "
        f"{folder / source}: this takes minutes, once per GPU and TensorRT version"
    )
    started = time.monotonic()
    engine = build_serialized_engine(folder / source, built, size)
    engine_cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=engine_cache_dir, delete=False) as tmp:
        tmp.write(engine)  # renamed into place: a crash never leaves half an engine
    os.replace(tmp.name, target)
    progress(f"TensorRT engine built in {time.monotonic() - started:.0f} s: {target}")
    return target


def _io_text(io: dict[str, tuple[str, np.dtype]]) -> str:
    return ", ".join(f"{name} {mode} {dtype}" for name, (mode, dtype) in sorted(io.items()))


class TensorRTBackend:
    """An engine for this GPU, its I/O in CUDA buffers from cuda-python (no torch).

    Per frame: the frame is copied into a page-locked buffer, one host-to-device copy, the
    engine, one device-to-host copy per output, all on one stream. Buffers are allocated once
    per input size (again only when a dynamic bundle's size changes). The returned arrays are
    views of the page-locked buffers: valid until the next ``infer``.
    """

    name = "tensorrt"
    OUTPUTS = ("labels", "score", "ood_mask")

    def __init__(
        self,
        folder: Path,
        bundle: Bundle,
        device: str = "cuda",
        precision: str | None = None,
        engine_cache_dir: Path | None = None,
        build_if_missing: bool = False,
        progress: Callable[[str], None] = lambda text: None,
        cuda: CudaRuntime | None = None,
    ):
        trt = import_tensorrt()
        self.cuda = cuda or CudaRuntime()  # names what is missing: cuda-python or a GPU
        engine_path = find_or_build_engine(
            folder,
            bundle,
            self.cuda.device_name(),
            trt.__version__,
            precision,
            engine_cache_dir,
            build_if_missing,
            progress,
        )
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BundleError(f"{engine_path} could not be loaded; delete it and build it again")
        self.bundle, self.device, self.engine_path = bundle, device, engine_path
        self._check_io(trt)
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.create_stream()
        self.buffers: FrameBuffers | None = None
        self.closed = False

    def _check_io(self, trt) -> None:
        """The engine's I/O tensors are the bundle's: names, directions and dtypes.

        The buffers are sized from the bundle (``score_dtype``); an engine whose score is fp32
        where the bundle says fp16 would write 4 bytes a pixel into a 2-byte buffer.
        """
        expected = tensor_specs(1, 1, self.bundle.score_dtype)
        found = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            mode = self.engine.get_tensor_mode(name)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            found[name] = ("input" if mode == trt.TensorIOMode.INPUT else "output", dtype)
        wanted = {
            name: ("input" if name in INPUTS else "output", dtype)
            for name, (_, dtype) in expected.items()
        }
        if found != wanted:
            raise BundleError(
                f"{self.engine_path} does not match its bundle's I/O: the engine has "
                f"[{_io_text(found)}], the bundle (score_dtype {self.bundle.score_dtype}) needs "
                f"[{_io_text(wanted)}]; rebuild the engine from this bundle"
            )

    def infer(self, rgb: np.ndarray):
        if self.closed:
            raise RuntimeError("this TensorRT backend is closed: its CUDA buffers are freed")
        _check_frame(self.bundle, rgb)
        buffers = self._buffers_for(*rgb.shape[:2])
        np.copyto(buffers.host["rgb"][0], rgb)
        self.cuda.to_device(buffers.device["rgb"], buffers.host["rgb"], self.stream)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT could not enqueue the engine; see its log above")
        for name in self.OUTPUTS:
            self.cuda.to_host(buffers.host[name], buffers.device[name], self.stream)
        self.cuda.synchronize(self.stream)
        return tuple(buffers.host[name][0] for name in self.OUTPUTS)

    def _buffers_for(self, height: int, width: int) -> FrameBuffers:
        if self.buffers is not None and self.buffers.size == (height, width):
            return self.buffers
        if self.buffers is not None:
            self.buffers.free()
            self.buffers = None
        shape = (1, height, width, 3)
        if not self.context.set_input_shape("rgb", shape):  # the context keeps its old shape
            raise ValueError(
                f"TensorRT engine {self.engine_path.name} refused input shape {shape}: "
                f"{self._profile_text()}"
            )
        buffers = FrameBuffers(self.cuda, height, width, self.bundle.score_dtype)
        try:
            for name, host in buffers.host.items():
                engine_shape = tuple(self.context.get_tensor_shape(name))
                if engine_shape != host.shape:
                    raise RuntimeError(
                        f"TensorRT engine {self.engine_path.name}: tensor {name!r} has shape "
                        f"{engine_shape} for input {shape}, its buffer {host.shape}"
                    )
            for name, pointer in buffers.device.items():
                if not self.context.set_tensor_address(name, pointer):
                    raise RuntimeError(
                        f"TensorRT engine {self.engine_path.name} refused the address of {name!r}"
                    )
        except BaseException:
            buffers.free()
            raise
        self.buffers = buffers
        return buffers

    def _profile_text(self) -> str:
        try:
            low, _, high = (tuple(s) for s in self.engine.get_tensor_profile_shape("rgb", 0))
        except Exception:  # a static engine may have no profile to report
            return "outside the shapes the engine was built for"
        return f"its profile accepts {low} to {high} (N, H, W, 3)"

    def close(self) -> None:
        """Free the buffers and the stream; ``infer`` is an error afterwards. Idempotent."""
        self.closed = True
        buffers, self.buffers = self.buffers, None
        stream, self.stream = self.stream, None
        try:
            if buffers is not None:
                buffers.free()
        finally:  # the stream too when a buffer's free failed
            if stream is not None:
                self.cuda.call("cudaStreamDestroy", stream)


def open_backend(
    folder: str | Path, kind: str = "auto", device: str | None = None, **tensorrt_options
) -> Backend:
    """A backend for the bundle in ``folder``.

    ``auto`` tries TensorRT, then ONNX Runtime's CUDA provider, then ONNX Runtime on the CPU,
    and logs why each step was passed over; the returned backend's ``fallback_reason`` says the
    same. ``tensorrt_options`` (precision, engine_cache_dir, build_if_missing, progress) go to
    TensorRT.
    """
    if kind not in BACKEND_NAMES:
        raise ValueError(f"backend {kind!r}: choose one of {', '.join(BACKEND_NAMES)}")
    folder = Path(folder)
    bundle = load_bundle(folder)
    if kind == "auto":
        return _auto(folder, bundle, device, tensorrt_options)
    if kind == "tensorrt":
        return TensorRTBackend(folder, bundle, device or "cuda", **tensorrt_options)
    if kind == "onnxruntime":
        if tensorrt_options.get("precision") == "int8":
            bundle = int8_graph(folder, bundle)
        return OnnxRuntimeBackend(folder, bundle, device)
    return TorchBackend(folder, bundle, device or "cpu")


def int8_graph(folder: Path, bundle: Bundle) -> Bundle:
    """The bundle as ONNX Runtime sees it with precision int8: its Q/DQ graph as model_file."""
    if INT8_MODEL not in bundle.files:
        raise BundleError(
            f"{folder} has no {INT8_MODEL}: run `nflowjs export int8 --bundle {folder} "
            "--calibration-images DIR`, or leave precision unset for the fp32 graph"
        )
    return dataclasses.replace(bundle, model_file=INT8_MODEL, precision="int8")


def _auto(folder: Path, bundle: Bundle, device: str | None, tensorrt_options: dict) -> Backend:
    import logging  # only auto logs: its choice is not obvious from the arguments

    log = logging.getLogger(__name__)
    if device == "cpu":
        reasons = ["TensorRT and ONNX Runtime CUDA not used: device is cpu"]
    else:
        try:
            backend = TensorRTBackend(folder, bundle, **tensorrt_options)
            log.info("backend auto: TensorRT, engine %s", backend.engine_path.name)
            return backend
        except (TensorRTUnavailable, BundleError, RuntimeError, ImportError) as error:
            reasons = [f"TensorRT not used: {error}"]
            log.info("backend auto: %s", reasons[-1])
        reason = _onnxruntime_cuda_missing()
        if reason is None:
            backend = OnnxRuntimeBackend(folder, bundle, "cuda")
            if backend.device == "cuda":
                backend.fallback_reason = reasons[0]
                log.info("backend auto: ONNX Runtime on %s", backend.provider)
                return backend
            reason = (
                f"its CUDA provider did not load, the session got {backend.provider} (is a GPU "
                "visible, and are CUDA and cuDNN libraries that match onnxruntime-gpu installed?)"
            )
        reasons.append(f"ONNX Runtime CUDA not used: {reason}")
        log.info("backend auto: %s", reasons[-1])
    backend = OnnxRuntimeBackend(folder, bundle, "cpu")
    backend.fallback_reason = "; ".join(reasons)
    log.info("backend auto: ONNX Runtime on %s", backend.provider)
    return backend


def _onnxruntime_cuda_missing() -> str | None:
    """Why this ONNX Runtime cannot use CUDA at all, or None if its build has the provider."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return None
    return (
        f"this onnxruntime {ort.__version__} has no CUDA provider (pip uninstall onnxruntime "
        "&& pip install onnxruntime-gpu)"
    )
