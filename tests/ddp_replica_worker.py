"""Run under torchrun by tests/test_training.py: stage 1 with DDP (gloo on CPU), then each
process saves the weights of its own replica so the test can compare them."""

import sys

import torch

from nflowjs.config import load_config
from nflowjs.training import train_stage1
from nflowjs.training.common import setup_runtime, teardown_runtime

config_path, out_prefix = sys.argv[1], sys.argv[2]
runtime = setup_runtime()
result = train_stage1(load_config(config_path), runtime)
model = result["model"]
parameters = {name: p.detach() for name, p in model.named_parameters()}
torch.save(
    {"parameters": parameters, "buffers": dict(model.named_buffers())},
    f"{out_prefix}{runtime.rank}.pt",
)
teardown_runtime(runtime)
