"""The three NFlowJS training stages: segmenter on inliers, flow pre-training, joint stage 2."""

from nflowjs.training.flow_pretrain import train_flow
from nflowjs.training.stage1 import train_stage1
from nflowjs.training.stage2 import train_stage2

STAGES = {"stage1": train_stage1, "flow": train_flow, "stage2": train_stage2}

__all__ = ["STAGES", "train_flow", "train_stage1", "train_stage2"]
