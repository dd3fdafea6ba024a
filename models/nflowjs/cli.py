"""``nflowjs`` command line: ``train {stage1,flow,stage2,all}``, ``evaluate`` and ``strip``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m nflowjs.cli train stage1 --config ...``.
"""

from __future__ import annotations

import argparse
import sys
import time

import yaml

from nflowjs.config import config_from_dict, load_config
from nflowjs.errors import MissingDependency
from nflowjs_perception.tensorrt_engine import TensorRTUnavailable


def _apply_overrides(config, overrides: list[str]):
    """``--set stage1.epochs=2`` style overrides, validated like the YAML file."""
    raw = config.to_dict()
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {item!r}: expected section.key=value, e.g. stage1.epochs=2")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    return config_from_dict(raw, source="--set")


def _train(args) -> None:
    from nflowjs.training import STAGES
    from nflowjs.training.common import setup_runtime, teardown_runtime

    config = _apply_overrides(load_config(args.config), args.set)
    runtime = setup_runtime()
    try:
        for stage in STAGES if args.stage == "all" else [args.stage]:
            started = time.perf_counter()
            result = STAGES[stage](config, runtime)
            if runtime.is_main:
                elapsed = time.perf_counter() - started
                print(f"{stage}: wrote {result['checkpoint']} in {elapsed / 60:.1f} min")
    finally:
        teardown_runtime(runtime)


def _evaluate(args) -> None:
    from nflowjs.evaluation import evaluate

    evaluate(
        checkpoint=args.checkpoint,
        dataset=args.dataset,
        root=args.root,
        split=args.split,
        out_dir=args.out,
        temperature=args.temperature,
        heatmaps=args.heatmaps,
        operating_points_from=args.operating_points_from,
    )


def _export(args) -> None:
    if args.format == "onnx":
        from nflowjs_export.onnx_export import export_onnx

        height, width = _size(args.size)
        threshold, points, point = args.threshold, {}, ""
        if args.threshold_from:
            points = _operating_points(args.threshold_from, args.temperature)
            if args.threshold is None:
                point = args.operating_point
                if point not in points:
                    raise ValueError(
                        f"--operating-point {point!r}: {args.threshold_from} has {sorted(points)}"
                    )
                threshold = points[point]["threshold"]
                if threshold is None:
                    raise ValueError(
                        f"--operating-point {point}: no threshold in {args.threshold_from} "
                        "reaches it on that split (its inlier scores tie at the top); pick another"
                    )
            points = {name: p for name, p in points.items() if p["threshold"] is not None}
        if threshold is None:
            raise ValueError(
                "give --threshold-from val/results.json (nflowjs evaluate --split val) "
                "or --threshold"
            )
        drivable = args.drivable.split(",") if args.drivable else None
        folder = export_onnx(
            args.checkpoint,
            args.out,
            height,
            width,
            threshold,
            args.temperature,
            args.score_dtype,
            args.dynamic,
            drivable,
            opset=args.opset,
            torch_model=not args.no_torch_model,
            operating_points=points,
            threshold_point=point,
        )
        print(f"wrote bundle {folder} (threshold {threshold:.6g}, {point or 'set by hand'})")
    elif args.format == "int8":
        from nflowjs_export.quantize import quantize_bundle

        path = quantize_bundle(
            args.bundle, args.calibration_images, args.max_images, args.calibration_method
        )
        print(f"wrote {path} (Q/DQ; ONNX Runtime runs it, TensorRT builds INT8 engines from it)")
    else:
        from nflowjs_export.tensorrt_build import build_engine, build_with_torch_tensorrt

        if args.calibration_images:
            raise ValueError(
                "--calibration-images belongs to `nflowjs export int8` now (explicit INT8 "
                "quantisation); run it first, then `nflowjs export tensorrt --precision int8`"
            )
        if args.via == "torch-tensorrt":
            path = build_with_torch_tensorrt(args.bundle, args.precision)
        else:
            path = build_engine(
                args.bundle,
                args.precision,
                args.workspace_gib,
                args.timing_cache,
                _size(args.max_input_size) if args.max_input_size else None,
            )
        print(f"wrote {path}")


def _size(text: str) -> tuple[int, int]:
    height, sep, width = text.partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise ValueError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 1024x2048")
    return int(height), int(width)


def _operating_points(path: str, temperature: float) -> dict[str, dict]:
    """The JSD operating points of a val ``results.json``; a test split's are refused, and so
    are thresholds chosen at another temperature (they mean nothing at this one)."""
    import json
    from pathlib import Path

    results = json.loads(Path(path).read_text())
    split = results.get("split")
    if results.get("temperature", temperature) != temperature:
        raise ValueError(
            f"{path} chose its thresholds at T = {results['temperature']}, this export uses "
            f"T = {temperature}; pass --temperature {results['temperature']} or evaluate again"
        )
    if split == "test":
        raise ValueError(
            f"{path} was measured on the test split; thresholds must come from validation data: "
            "run `nflowjs evaluate --split val` and export with its results.json"
        )
    points = results.get("scores", {}).get("jsd", {}).get("operating_points")
    if not points:
        raise ValueError(f"{path} has no scores.jsd.operating_points; run nflowjs evaluate again")
    return {name: {**values, "split": split} for name, values in points.items()}


def _bench(args) -> None:
    import tempfile
    from pathlib import Path

    from nflowjs_export.bench import bench, format_table, random_weight_bundle

    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle
        if bundle is None:
            bundle = random_weight_bundle(args.preset, *_size(args.size), Path(tmp))
        rows = [
            bench(bundle, backend, args.device, args.iterations, precision=args.precision)
            for backend in args.backend
        ]
    print(format_table(rows))


def _strip(args) -> None:
    from nflowjs.checkpoint import save_inference_copy

    path = save_inference_copy(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nflowjs", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="run a training stage")
    train.add_argument("stage", choices=["stage1", "flow", "stage2", "all"])
    train.add_argument("--config", required=True, help="YAML file, see configs/")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)",
    )
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="OOD and segmentation metrics of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--dataset", required=True, help="a dataset name, e.g. camvid-ood")
    evaluate.add_argument("--root", required=True, help="the dataset's folder")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--out", default="out/evaluation")
    evaluate.add_argument("--temperature", type=float, default=2.0, help="JSD score temperature")
    evaluate.add_argument("--heatmaps", type=int, default=8, help="how many heatmap PNGs to write")
    evaluate.add_argument(
        "--operating-points-from",
        help="a val results.json: report the TPR/FPR of its thresholds on this split",
    )
    evaluate.set_defaults(run=_evaluate)

    export = commands.add_parser("export", help="checkpoint -> model bundle (ONNX, TensorRT)")
    formats = export.add_subparsers(dest="format", required=True)
    onnx = formats.add_parser("onnx", help="write a bundle with the ONNX graph")
    onnx.add_argument("--checkpoint", required=True)
    onnx.add_argument("--out", required=True, help="bundle folder to write")
    onnx.add_argument("--size", default="1024x2048", help="input HEIGHTxWIDTH of the graph")
    onnx.add_argument("--threshold", type=float, help="OOD threshold delta on the score, by hand")
    onnx.add_argument(
        "--threshold-from",
        help="results.json of `nflowjs evaluate --split val`: its operating points go into the "
        "bundle, and --operating-point picks the threshold",
    )
    onnx.add_argument(
        "--operating-point",
        default="fpr1",
        help="fpr1 (1 %% of inlier pixels flagged on val, the default), fpr5 or tpr95",
    )
    onnx.add_argument("--temperature", type=float, default=2.0)
    onnx.add_argument("--score-dtype", choices=["float32", "float16"], default="float32")
    onnx.add_argument("--dynamic", action="store_true", help="any input size (SPP grids fixed)")
    onnx.add_argument("--drivable", help="comma-separated drivable class names (default: road)")
    onnx.add_argument("--opset", type=int, default=18)
    onnx.add_argument(
        "--no-torch-model", action="store_true", help="leave model.pt out (no torch backend)"
    )
    int8 = formats.add_parser(
        "int8", help="add an INT8 Q/DQ graph (model.int8.onnx) to a bundle (nvidia-modelopt)"
    )
    int8.add_argument("--bundle", required=True)
    int8.add_argument("--calibration-images", required=True, help="folder of typical camera frames")
    int8.add_argument("--max-images", type=int, default=64, help="frames used, spread evenly")
    int8.add_argument("--calibration-method", choices=["entropy", "max"], default="entropy")
    trt = formats.add_parser("tensorrt", help="build a TensorRT engine into a bundle")
    trt.add_argument("--bundle", required=True)
    trt.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        default="fp16",
        help="int8 builds from the bundle's model.int8.onnx (nflowjs export int8)",
    )
    trt.add_argument("--calibration-images", help=argparse.SUPPRESS)  # moved to export int8
    trt.add_argument("--workspace-gib", type=float, default=4.0)
    trt.add_argument("--timing-cache", help="file to reuse and update between builds")
    trt.add_argument(
        "--max-input-size",
        help="dynamic bundles: the largest frame HEIGHTxWIDTH the engine takes (default "
        "2048x2048, or the bundle's size where larger; TensorRT reserves memory for it)",
    )
    trt.add_argument("--via", choices=["tensorrt", "torch-tensorrt"], default="tensorrt")
    export.set_defaults(run=_export)

    benchmark = commands.add_parser("bench", help="latency and parity of a bundle")
    source = benchmark.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", help="a bundle folder")
    source.add_argument("--preset", help="or an LDN preset with random weights, e.g. ldn121")
    benchmark.add_argument("--size", default="1024x2048", help="with --preset: HEIGHTxWIDTH")
    benchmark.add_argument(
        "--backend",
        nargs="+",
        default=["onnxruntime"],
        choices=["onnxruntime", "torch", "tensorrt"],
    )
    benchmark.add_argument("--device", help="cpu or cuda (default: the backend's)")
    benchmark.add_argument("--iterations", type=int, default=50)
    benchmark.add_argument(
        "--precision",
        choices=["fp32", "fp16", "int8"],
        help="int8: ONNX Runtime runs model.int8.onnx; TensorRT an int8 engine",
    )
    benchmark.set_defaults(run=_bench)

    strip = commands.add_parser("strip", help="inference-only copy of a checkpoint")
    strip.add_argument("checkpoint")
    strip.add_argument("out")
    strip.set_defaults(run=_strip)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, ValueError, MissingDependency, TensorRTUnavailable) as error:
        print(f"nflowjs: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
