"""``nflowjs`` command line: ``train {stage1,flow,stage2,all}``, ``evaluate`` and ``strip``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m nflowjs.cli train stage1 --config ...``.
"""

from __future__ import annotations

import argparse
import sys
import time

import yaml

from nflowjs.config import config_from_dict, load_config


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
    )


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
    evaluate.set_defaults(run=_evaluate)

    strip = commands.add_parser("strip", help="inference-only copy of a checkpoint")
    strip.add_argument("checkpoint")
    strip.add_argument("out")
    strip.set_defaults(run=_strip)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"nflowjs: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
