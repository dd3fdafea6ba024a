"""NFlowJS training losses (paper eqs. 3-6), normalised as in REFERENCE.md."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from nflowjs.scores import jsd_to_uniform


def negative_loss(logits: torch.Tensor, ood_mask: torch.Tensor) -> torch.Tensor:
    """L_neg: JS(U, softmax(logits)) summed over pasted pixels / their number in the batch.

    No temperature in training (T only shapes the inference score). Zero when nothing is pasted.
    """
    divergence = jsd_to_uniform(logits, temperature=1.0, dim=1)
    mask = ood_mask.to(divergence.dtype)
    return (divergence * mask).sum() / mask.sum().clamp_min(1.0)


class NFlowJSLoss(NamedTuple):
    """The three terms of one joint step and lambda.

    L_nll is in bits per dimension (the crop's mean over its C*H*W values, base 2), although
    eq. 4 writes -ln p(x^c), a total in nats. REFERENCE.md does not settle the authors' unit for
    L_nll; we use bits per dimension because the flow is pre-trained in that unit (DenseFlow's
    loss), and because the per-dimension mean keeps L_nll's weight against lambda * L_neg (itself
    a per-pixel mean) the same for every patch size: the sides are drawn from U(16, 216), so crop
    volumes differ 180x, and in nats per crop L_nll would be C*H*W*ln 2 times larger (about
    3e4 for a 120x120 crop), leaving lambda * L_neg no say in the flow's update. The paper's
    lambda = 0.03 is used with this unit.
    """

    cross_entropy: torch.Tensor  # mean over non-ignored (inlier) pixels
    negative: torch.Tensor  # L_neg as above
    nll: torch.Tensor  # L_nll: flow NLL of the replaced inlier crops, bits per dim
    lam: float

    @property
    def discriminative(self) -> torch.Tensor:
        """L_disc (eq. 3), what the segmenter minimises."""
        return self.cross_entropy + self.lam * self.negative

    @property
    def generative(self) -> torch.Tensor:
        """L_gen (eq. 4), what the flow minimises."""
        return self.nll + self.lam * self.negative

    @property
    def total(self) -> torch.Tensor:
        """CE + lambda * L_neg + L_nll: the value of the joint objective (eq. 5).

        L_disc and L_gen share lambda * L_neg, counted once here. Training must not simply
        backpropagate this sum: CE also depends on the pasted pixels, and eq. 4 gives the flow
        no CE gradient; ``nflowjs.training.stage2.nflowjs_step`` routes the gradients.
        """
        return self.cross_entropy + self.lam * self.negative + self.nll


def nflowjs_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ood_mask: torch.Tensor,
    nll: torch.Tensor,
    lam: float = 0.03,
    ignore_index: int = 255,
) -> NFlowJSLoss:
    """Losses of one stage-2 step on a mixed-content batch (labels of pasted pixels = ignore)."""
    cross_entropy = F.cross_entropy(logits, labels, ignore_index=ignore_index)
    return NFlowJSLoss(cross_entropy, negative_loss(logits, ood_mask), nll, lam)
