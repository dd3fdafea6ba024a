"""Export: ONNX bundle (static and dynamic), validation, ORT parity, TensorRT plumbing, bench."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from nflowjs.checkpoint import config_dict, save_checkpoint
from nflowjs.cli import main
from nflowjs.networks import LadderDenseNet, LDNConfig
from nflowjs_export.bench import bench, format_table
from nflowjs_export.onnx_export import export_onnx, onnx_parity
from nflowjs_export.quantize import CalibrationImages
from nflowjs_export.tensorrt_build import engine_file_name
from nflowjs_perception.backends import open_backend
from nflowjs_perception.bundle import BundleError, load_bundle

SHARED_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
CLASSES = ["sky", "building", "road", "car"]
# Few dense layers and narrow decoder: the same code as LDN-121, quick to export on CPU.
SMALL = LDNConfig(
    num_classes=4,
    growth_rate=8,
    block_config=(1, 1, 1, 1),
    num_init_features=16,
    spp_bottleneck=32,
    spp_level_width=8,
    spp_out=32,
    upsample_widths=(16, 16, 16),
)


def small_checkpoint(path: Path) -> Path:
    """A checkpoint of the SMALL network with random weights (4 classes)."""
    torch.manual_seed(0)
    model = LadderDenseNet(SMALL).eval()
    with torch.no_grad():  # make the classifier decisive enough for a non-trivial mask
        model.classifier.conv.weight.mul_(20)
    save_checkpoint(
        path,
        {
            "stage": "stage2",
            "epoch": 1,
            "model": model.state_dict(),
            "model_config": config_dict(SMALL),
            "classes": CLASSES,
        },
    )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ck") / "model.pt")


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "small"
    return export_onnx(checkpoint, out, height=96, width=128, threshold=0.6)


def frames(n=3, size=(96, 128)) -> list[np.ndarray]:
    if SHARED_CAMVID.is_dir():  # real driving frames when the shared data is here
        files = sorted((SHARED_CAMVID / "test" / "images").glob("*.jpg"))[:n]
        return [np.array(Image.open(f).convert("RGB").resize(size[::-1])) for f in files]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_onnx_graph_contract(bundle):
    model = onnx.load(str(bundle / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    (graph_input,) = model.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [1, 96, 128, 3]
    types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    assert types == {
        "labels": onnx.TensorProto.UINT8,
        "score": onnx.TensorProto.FLOAT,
        "ood_mask": onnx.TensorProto.UINT8,
    }


def test_onnxruntime_matches_torch(bundle):
    parity = onnx_parity(bundle, frames())
    assert parity["label_agreement"] >= 0.999
    assert parity["score_max_abs_error"] <= 1e-3


def test_bundle_json_describes_the_model(bundle, checkpoint):
    b = load_bundle(bundle)
    assert (b.height, b.width, b.ood_threshold, b.temperature) == (96, 128, 0.6, 2.0)
    assert [c.name for c in b.classes] == CLASSES and b.unknown_id == 4
    assert b.drivable_class_ids == [2]  # road
    assert b.classes[2].color == (128, 64, 128)  # the dataset palette's road colour
    assert set(b.files) == {"model.onnx", "model.pt2"} and len(b.checkpoint_sha256) == 64
    assert not any(p.name.startswith(".") for p in bundle.parent.iterdir())  # no staging left


def test_tampered_or_truncated_model_is_refused(bundle, tmp_path):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="SHA-256"):
        open_backend(copy, "onnxruntime")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda j: j.pop("ood_threshold"), r"required field\(s\) \['ood_threshold'\]"),
        (lambda j: j.update(temperature=-1), "'temperature' = -1 must be a positive number"),
        (lambda j: j.update(drivable_class_ids=[9]), r"'drivable_class_ids' \[9\]"),
        (lambda j: j.update(score_dtype="int8"), "'score_dtype'"),
        (lambda j: j.update(unknown_id=1), "'unknown_id' 1 is a known class"),
        (lambda j: j.update(colour="red"), r"unknown field\(s\) \['colour'\]"),
    ],
)
def test_bad_bundle_fields_are_named(bundle, tmp_path, edit, message):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    raw = json.loads((copy / "bundle.json").read_text())
    edit(raw)
    (copy / "bundle.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_missing_bundle_says_how_to_make_one(tmp_path):
    with pytest.raises(BundleError, match="nflowjs export onnx"):
        load_bundle(tmp_path)


def test_dynamic_size_graph_runs_at_other_sizes(checkpoint, tmp_path):
    folder = export_onnx(
        checkpoint, tmp_path / "dyn", 96, 128, threshold=0.6, dynamic=True, score_dtype="float16"
    )
    backend = open_backend(folder, "onnxruntime")
    for size in [(96, 128), (128, 160), (64, 256)]:
        labels, score, mask = backend.infer(np.zeros((*size, 3), np.uint8) + 100)
        assert labels.shape == score.shape == mask.shape == size
        assert score.dtype == np.float16 and labels.dtype == np.uint8
    # at the reference size it is the same model as the static graph
    frame = frames(1)[0]
    static = open_backend(export_onnx(checkpoint, tmp_path / "st", 96, 128, 0.6), "onnxruntime")
    dynamic_out, static_out = backend.infer(frame), static.infer(frame)
    np.testing.assert_array_equal(dynamic_out[0], static_out[0])
    np.testing.assert_allclose(dynamic_out[1].astype(np.float32), static_out[1], atol=2e-3)


def test_torch_backend_agrees_with_onnxruntime(bundle):
    frame = frames(1)[0]
    ort_out = open_backend(bundle, "onnxruntime").infer(frame)
    torch_out = open_backend(bundle, "torch", "cpu").infer(frame)
    assert (ort_out[0] == torch_out[0]).mean() >= 0.999
    assert np.abs(ort_out[1] - torch_out[1]).max() <= 1e-3


def test_torch_backend_runs_the_exported_program_without_training_code(bundle):
    """The runtime (nflowjs_perception) in a fresh interpreter where the training package and
    the exporter cannot be imported: every runtime module imports, and the torch backend runs
    the bundle's model.pt2 and agrees with ONNX Runtime."""
    import subprocess
    import sys

    script = f"""
import importlib, pkgutil, sys
import numpy as np
sys.modules["nflowjs"] = None  # None in sys.modules: any import of it raises ImportError
sys.modules["nflowjs_export"] = None
import nflowjs_perception
for module in pkgutil.walk_packages(nflowjs_perception.__path__, "nflowjs_perception."):
    importlib.import_module(module.name)
from nflowjs_perception.backends import open_backend
frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
onnx_out = open_backend({str(bundle)!r}, "onnxruntime").infer(frame)
assert "torch" not in sys.modules, "the ONNX Runtime path loaded torch"
torch_out = open_backend({str(bundle)!r}, "torch", "cpu").infer(frame)
assert (onnx_out[0] == torch_out[0]).mean() >= 0.999
assert np.abs(onnx_out[1] - torch_out[1]).max() <= 1e-3
assert torch_out[1].dtype == np.float32 and torch_out[0].dtype == np.uint8
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_runtime_modules_never_import_the_training_side():
    """Static check of the one-way import: the runtime's sources name neither package. The one
    exception is the offline bag scorer (evaluate_bag), which imports nflowjs.metrics lazily so
    that its AP / FPR95 are those of `nflowjs evaluate`; it says so and is not part of the node."""
    import ast

    runtime = Path(__file__).resolve().parents[1] / "ros2_ws/src/nflowjs_perception"
    for source in (runtime / "nflowjs_perception").rglob("*.py"):
        if source.relative_to(runtime).as_posix() == "nflowjs_perception/bag_tools/evaluate.py":
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("nflowjs", "nflowjs_export"), (source, name)


def test_torch_backend_without_its_program_says_how_to_get_one(checkpoint, tmp_path):
    folder = export_onnx(checkpoint, tmp_path / "b", 64, 64, 0.6, torch_model=False)
    assert set(load_bundle(folder).files) == {"model.onnx"}
    with pytest.raises(BundleError, match=r"no model.pt2 .* without --no-torch-model"):
        open_backend(folder, "torch", "cpu")


def test_wrong_frame_is_explained(bundle):
    backend = open_backend(bundle, "onnxruntime")
    with pytest.raises(ValueError, match="resize it first"):
        backend.infer(np.zeros((50, 60, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        backend.infer(np.zeros((96, 128), np.float32))


def test_bench_prints_a_table(bundle):
    rows = [bench(bundle, "onnxruntime", iterations=5, warmup=1)]
    assert rows[0]["p50_ms"] > 0 and rows[0]["p99_ms"] >= rows[0]["p50_ms"]
    assert rows[0]["label_agreement"] >= 0.999
    table = format_table(rows)
    assert "| onnxruntime |" in table and "96x128" in table


def test_bench_reports_the_device_the_runner_got(bundle, capsys):
    """Asked for cuda, ONNX Runtime without its CUDA provider runs on the CPU: say so."""
    import onnxruntime as ort

    row = bench(bundle, "onnxruntime", "cuda", iterations=2, warmup=1)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert (row["device"], row["provider"]) == ("cuda", "CUDAExecutionProvider")
    else:
        assert (row["device"], row["provider"]) == ("cpu", "CPUExecutionProvider")
        assert "| cpu (CPUExecutionProvider) |" in format_table([row])
    with pytest.raises(SystemExit):
        main(["bench", "--bundle", str(bundle), "--precision", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_engine_names_carry_precision_gpu_and_version():
    name = engine_file_name("fp16", "NVIDIA H100 80GB HBM3", "10.3.0.26")
    assert name == "model.fp16.nvidia-h100-80gb-hbm3.trt10.3.engine"


def test_calibration_frames_are_spread_over_the_folder(tmp_path):
    for i in range(10):
        Image.fromarray(np.full((30, 40, 3), i * 20, np.uint8)).save(tmp_path / f"{i:02d}.png")
    frames = CalibrationImages(tmp_path, height=24, width=32, limit=4)
    assert [p.name for p in frames.files] == ["00.png", "02.png", "04.png", "06.png"]
    batch = frames.load()
    assert batch.shape == (4, 24, 32, 3) and batch.dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="no calibration images"):
        CalibrationImages(tmp_path / "empty", 24, 32)


def calibration_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir()
    for i, frame in enumerate(frames(n)):
        Image.fromarray(frame).save(folder / f"{i}.png")
    return folder


def test_int8_export_adds_a_qdq_graph_that_onnxruntime_runs(bundle, tmp_path, capsys):
    """nvidia-modelopt's ONNX PTQ, for real, on the CPU; the head stays unquantised."""
    pytest.importorskip("modelopt.onnx.quantization", exc_type=ImportError)
    from nflowjs_export.quantize import head_node_names

    copy = shutil.copytree(bundle, tmp_path / "copy")
    images = calibration_folder(tmp_path / "frames")
    main(["export", "int8", "--bundle", str(copy), "--calibration-images", str(images)])
    assert "model.int8.onnx" in capsys.readouterr().out
    assert "model.int8.onnx" in load_bundle(copy).files  # hashed into bundle.json
    graph = onnx.load(str(copy / "model.int8.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") >= 10 and ops.count("DequantizeLinear") >= 10
    head = set(head_node_names(graph))
    head_inputs = {i for n in graph.graph.node if n.name in head for i in n.input}
    quantized = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert head and not head_inputs & quantized  # no Q/DQ inside the head
    # nor on the logits: the upsampling producing them reads the classifier's float output
    producer = {o: n for n in graph.graph.node for o in n.output}
    arg_max = next(n for n in graph.graph.node if n.op_type == "ArgMax")
    logits = producer[arg_max.input[0]]
    assert logits.op_type == "Resize"
    classifier = producer[logits.input[0]]
    assert classifier.op_type == "Conv", classifier.op_type  # not a DequantizeLinear
    assert producer[classifier.input[0]].op_type == "DequantizeLinear"  # the Conv is INT8
    int8 = open_backend(copy, "onnxruntime", precision="int8")
    assert int8.bundle.model_file == "model.int8.onnx" and int8.bundle.precision == "int8"
    fp32 = open_backend(copy, "onnxruntime")
    for frame in frames(2):
        labels, score, _ = int8.infer(frame)
        ref_labels, ref_score, _ = fp32.infer(frame)
        assert labels.dtype == np.uint8 and score.dtype == np.float32
        assert (labels == ref_labels).mean() > 0.8  # 8-bit, random weights: close, not equal
        assert np.abs(score - ref_score).mean() < 0.1


def test_int8_graph_missing_is_named_with_the_command(bundle):
    from nflowjs_export.tensorrt_build import build_engine

    with pytest.raises(BundleError, match=r"no model\.int8\.onnx: run `nflowjs export int8"):
        open_backend(bundle, "onnxruntime", precision="int8")
    with pytest.raises(ValueError, match=r"no model\.int8\.onnx: run `nflowjs export int8"):
        build_engine(bundle, "int8")


def test_tensorrt_export_without_tensorrt_says_what_to_install(bundle, capsys):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; the gpu-marked test covers the build")
    except ImportError:
        pass
    with pytest.raises(SystemExit):
        main(["export", "tensorrt", "--bundle", str(bundle)])
    assert "install NVIDIA's `tensorrt`" in capsys.readouterr().err


def test_calibration_images_moved_to_export_int8(bundle, capsys):
    with pytest.raises(SystemExit):
        main(["export", "tensorrt", "--bundle", str(bundle), "--calibration-images", "x"])
    assert "belongs to `nflowjs export int8`" in capsys.readouterr().err


def test_tensorrt_arguments_are_checked_before_tensorrt_is_needed(bundle, tmp_path):
    from nflowjs_export.tensorrt_build import build_engine

    with pytest.raises(ValueError, match="use fp32, fp16 or int8"):
        build_engine(bundle, "bf16")
    with pytest.raises(BundleError, match="not found"):
        build_engine(tmp_path / "no-bundle", "fp16")


def test_an_engine_added_later_is_hashed_into_the_bundle(bundle, tmp_path):
    from nflowjs_export.bundle import add_bundle_file

    copy = shutil.copytree(bundle, tmp_path / "copy")
    engine = tmp_path / "engine.bin"
    engine.write_bytes(b"serialized engine")
    name = engine_file_name("fp16", "NVIDIA H100", "10.3.0")
    add_bundle_file(copy, engine, name)
    assert name in load_bundle(copy).files  # and its hash verifies
    (copy / name).write_bytes(b"serialized engin")
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(copy)


def evaluation_results(path: Path, split: str, temperature: float = 2.0) -> Path:
    points = {
        "fpr1": {"threshold": 0.97, "TPR": 0.4, "FPR": 0.01},
        "fpr5": {"threshold": 0.8, "TPR": 0.7, "FPR": 0.05},
        "tpr95": {"threshold": 0.42, "TPR": 0.95, "FPR": 0.3},
    }
    scores = {"jsd": {"operating_points": points}}
    path.write_text(json.dumps({"split": split, "temperature": temperature, "scores": scores}))
    return path


def test_cli_export_takes_operating_points_from_a_val_evaluation(checkpoint, tmp_path, capsys):
    results = evaluation_results(tmp_path / "results.json", "val")
    out = tmp_path / "b"
    export = ["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(out)]
    main([*export, "--size", "64x64", "--threshold-from", str(results)])
    bundle = load_bundle(out)
    assert (bundle.ood_threshold, bundle.ood_threshold_point) == (0.97, "fpr1")  # low false alarms
    assert bundle.operating_points["tpr95"] == {
        "threshold": 0.42,
        "TPR": 0.95,
        "FPR": 0.3,
        "split": "val",
    }
    main(
        [*export, "--size", "64x64", "--threshold-from", str(results), "--operating-point", "tpr95"]
    )
    assert load_bundle(out).ood_threshold == 0.42
    with pytest.raises(SystemExit):
        main(
            [
                *export,
                "--size",
                "64x64",
                "--threshold-from",
                str(results),
                "--operating-point",
                "fpr2",
            ]
        )
    assert "'fpr2': " in (err := capsys.readouterr().err) and "['fpr1', 'fpr5', 'tpr95']" in err
    with pytest.raises(SystemExit):
        main([*export, "--size", "64"])
    assert "HEIGHTxWIDTH" in capsys.readouterr().err


def test_cli_export_refuses_thresholds_from_test_data_or_another_temperature(
    checkpoint, tmp_path, capsys
):
    results = evaluation_results(tmp_path / "results.json", "test")
    with pytest.raises(SystemExit):
        main(
            [
                *["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "b")],
                *["--size", "64x64", "--threshold-from", str(results)],
            ]
        )
    assert "nflowjs evaluate --split val" in capsys.readouterr().err
    results = evaluation_results(tmp_path / "results.json", "val", temperature=1.0)
    with pytest.raises(SystemExit):
        main(
            [
                *["export", "onnx", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "b")],
                *["--size", "64x64", "--threshold-from", str(results)],
            ]
        )
    assert "at T = 1.0, this export uses T = 2.0" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda j: j.update(ood_threshold_point="fpr9"), r"'fpr9' is not one of .*\['fpr1'\]"),
        (lambda j: j.update(ood_threshold=0.5), "differs from operating point 'fpr1'"),
        (lambda j: j["operating_points"]["fpr1"].pop("threshold"), "finite 'threshold'"),
    ],
)
def test_bundle_operating_points_are_validated(bundle, tmp_path, edit, error):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    raw = json.loads((copy / "bundle.json").read_text())
    raw["operating_points"] = {"fpr1": {"threshold": raw["ood_threshold"], "split": "val"}}
    raw["ood_threshold_point"] = "fpr1"
    (copy / "bundle.json").write_text(json.dumps(raw))
    assert load_bundle(copy).ood_threshold_point == "fpr1"
    edit(raw)
    (copy / "bundle.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=error):
        load_bundle(copy)


def test_gpu_check_smoke_on_cpu(capsys):
    from nflowjs_export import gpu_check

    gpu_check.main(
        [
            "--device",
            "cpu",
            "--preset",
            "ldn-lite",
            "--size",
            "64x128",
            "--warmup",
            "1",
            "--iterations",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert "| torch fp32 eager |" in out and "| paper, RTX 3090 (Table 6) | 46.5 |" in out
    assert "| ONNX Runtime CPU fp32 |" in out  # the CUDA provider's row, on the CPU here
    assert "onnxruntime vs torch fp32: labels agree on" in out


def test_gpu_check_script_runs_with_what_is_installed():
    """export/gpu_check.sh end to end on the CPU with this interpreter (no installs)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_NO_INSTALL": "1"}
    smoke = ["--device", "cpu", "--preset", "ldn-lite", "--size", "64x128", "--warmup", "1"]
    result = subprocess.run(
        ["bash", str(root / "export/gpu_check.sh"), *smoke, "--iterations", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "missing: onnxruntime-gpu (GPU_CHECK_NO_INSTALL" in result.stdout  # the CPU build
    assert "| torch fp32 eager |" in result.stdout and "| paper, RTX 3090" in result.stdout


@pytest.mark.gpu
def test_tensorrt_engine_build_and_parity(bundle, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU with TensorRT")
    pytest.importorskip("tensorrt")
    from nflowjs_export.tensorrt_build import build_engine

    copy = shutil.copytree(bundle, tmp_path / "copy")
    build_engine(copy, "fp16")
    row = bench(copy, "tensorrt", iterations=20)
    assert row["label_agreement"] >= 0.99
    assert row["score_max_abs_error"] <= 1e-3  # the head pinned to fp32


@pytest.mark.gpu
def test_gpu_backends_run_and_agree(bundle):
    """ONNX Runtime's CUDA provider (onnxruntime-gpu) and the torch program on CUDA."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    for kind in ("onnxruntime", "torch"):
        row = bench(bundle, kind, "cuda", iterations=20)
        assert row["label_agreement"] >= 0.99, kind
    backend = open_backend(bundle, "onnxruntime", "cuda")
    assert backend.provider == "CUDAExecutionProvider"


def test_the_shipped_demo_bundle_is_the_shipped_checkpoint_exported():
    """ros2_ws/.../demo/camvid-ood-360x480 must stay what `make demo-bundle` would write."""
    from nflowjs.checkpoint import load_checkpoint
    from nflowjs_export.onnx_export import frame_model
    from nflowjs_perception.bundle import sha256_file
    from ros_support import CAMVID_CHECKPOINT, REPO, camvid_frames

    folder = REPO / "ros2_ws/src/nflowjs_perception/demo/camvid-ood-360x480"
    backend = open_backend(folder, "onnxruntime")  # hashes verified on load
    bundle = backend.bundle
    assert bundle.checkpoint_sha256 == sha256_file(CAMVID_CHECKPOINT)
    val = json.loads((REPO / "docs/camvid_ood_nflowjs_val_results.json").read_text())
    assert val["split"] == "val"  # thresholds are chosen on validation data
    points = val["scores"]["jsd"]["operating_points"]
    assert bundle.ood_threshold_point == "fpr1"  # the low-false-alarm point is the default
    assert bundle.ood_threshold == points["fpr1"]["threshold"]
    assert {name: p["threshold"] for name, p in bundle.operating_points.items()} == {
        name: p["threshold"] for name, p in points.items()
    }
    assert (bundle.height, bundle.width, bundle.unknown_id) == (360, 480, 9)
    reference = frame_model(
        load_checkpoint(CAMVID_CHECKPOINT), 2.0, bundle.ood_threshold, "float32"
    )
    frame = camvid_frames(1)[0]
    labels, score, _ = backend.infer(frame)
    with torch.inference_mode():
        ref_labels, ref_score, _ = reference(torch.from_numpy(frame)[None])
    assert (labels == ref_labels[0].numpy()).mean() > 0.999
    assert np.abs(score - ref_score[0].numpy()).max() < 1e-3


def test_cli_export_tensorrt_passes_the_max_input_size(bundle, monkeypatch, capsys):
    from nflowjs_export import tensorrt_build

    calls = []
    monkeypatch.setattr(tensorrt_build, "build_engine", lambda *a: calls.append(a) or "engine")
    main(["export", "tensorrt", "--bundle", str(bundle), "--max-input-size", "720x1280"])
    main(["export", "tensorrt", "--bundle", str(bundle)])
    assert [c[-1] for c in calls] == [(720, 1280), None]  # None: 2048x2048 (profile_max)
