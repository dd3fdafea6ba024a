"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain values and tensors: format tag, stage, epoch, the networks'
configs (enough to rebuild them), their state dicts, optimiser/scheduler states for resuming,
class names and the training config. A kill mid-write leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from nflowjs.flow import DenseFlow, DenseFlowConfig
from nflowjs.networks import LadderDenseNet, LDNConfig

FORMAT = "nflowjs-checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # from a run killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; checkpoints are shared artefacts
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint, turning truncation or foreign files into one actionable error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise ValueError(
            f"checkpoint {path} is unreadable (truncated or not a torch file: {error}); "
            "re-copy it or resume from an earlier one"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nflowjs checkpoint (expected format {FORMAT!r})")
    return payload


INFERENCE_KEYS = ("stage", "epoch", "model", "model_config", "classes", "train_config")


def save_inference_copy(source: str | Path, destination: str | Path) -> Path:
    """The segmenter of a checkpoint without optimiser states or flow: what inference needs."""
    payload = load_checkpoint(source)
    save_checkpoint(destination, {k: payload[k] for k in INFERENCE_KEYS if k in payload})
    return Path(destination)


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


def build_segmenter(payload: dict) -> LadderDenseNet:
    """The segmenter stored in a checkpoint, with its weights."""
    config = _dataclass_from(LDNConfig, payload["model_config"])
    model = LadderDenseNet(config)
    model.load_state_dict(segmenter_state(payload))
    return model


def segmenter_state(payload: dict) -> dict:
    """The segmenter's state dict, with keys of checkpoints written before the encoder became
    a submodule (``stem.*``, ``blocks.*``, ``transitions.*``) moved under ``encoder.``."""
    state = payload["model"]
    if "stem.0.weight" not in state:
        return state
    encoder_parts = ("stem", "blocks", "transitions")
    return {f"encoder.{k}" if k.split(".")[0] in encoder_parts else k: v for k, v in state.items()}


def build_flow(payload: dict) -> DenseFlow:
    """The flow stored in a checkpoint, with its weights."""
    flow = DenseFlow(_dataclass_from(DenseFlowConfig, payload["flow_config"]))
    flow.load_state_dict(payload["flow"])
    return flow


def _dataclass_from(cls, values: dict):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return cls(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
    )
