"""Run under torchrun by tests/test_training.py: the three stages with DDP (gloo on CPU), then
each process saves the parameters of its own replicas so the test can compare them."""

import sys

import torch

from nflowjs.config import load_config
from nflowjs.training import STAGES
from nflowjs.training.common import setup_runtime, teardown_runtime

config_path, out_prefix = sys.argv[1], sys.argv[2]
runtime = setup_runtime()
config = load_config(config_path)
results = {stage: train(config, runtime) for stage, train in STAGES.items()}
replicas = {
    "stage1": results["stage1"]["model"],
    "flow": results["flow"]["flow"],
    "stage2": results["stage2"]["model"],
    "stage2_flow": results["stage2"]["flow"],
}
saved = {
    name: {
        "parameters": {n: p.detach().clone() for n, p in module.named_parameters()},
        "buffers": {n: b.clone() for n, b in module.named_buffers()},
    }
    for name, module in replicas.items()
}
torch.save(saved, f"{out_prefix}{runtime.rank}.pt")
teardown_runtime(runtime)
