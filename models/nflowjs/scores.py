"""Dense OOD scores from logits ``(N, K, H, W)`` (class axis ``dim``), all oriented alike:

a higher value means "more likely out-of-distribution". The training loss L_neg is the raw
divergence ``jsd_to_uniform``; the NFlowJS OOD score rescales it so that it reads as a heatmap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jsd_to_uniform(logits: torch.Tensor, temperature: float = 1.0, dim: int = 1) -> torch.Tensor:
    """JS(U, softmax(logits / T)) in nats: 0 where the prediction is uniform.

    JS(U, p) = 0.5 KL(U || M) + 0.5 KL(p || M) with M = (U + p) / 2 (paper eq. 6).
    """
    log_p = F.log_softmax(logits / temperature, dim=dim)
    p = log_p.exp()
    k = logits.shape[dim]
    log_m = torch.log(0.5 * (p + 1.0 / k))
    kl_u_m = (-math.log(k) - log_m).mean(dim=dim)  # sum_k (1/K) (log(1/K) - log M_k)
    kl_p_m = (p * (log_p - log_m)).sum(dim=dim)
    return 0.5 * (kl_u_m + kl_p_m)


def max_jsd_to_uniform(num_classes: int) -> float:
    """JS(U, one-hot) for K classes: the largest value ``jsd_to_uniform`` can take (< ln 2)."""
    k = num_classes
    kl_u_m = math.log(2.0 / (k + 1)) / k + (k - 1) / k * math.log(2.0)
    kl_p_m = math.log(2.0 * k / (k + 1))
    return 0.5 * (kl_u_m + kl_p_m)


def jsd_ood_score(logits: torch.Tensor, temperature: float = 2.0, dim: int = 1) -> torch.Tensor:
    """NFlowJS OOD score (paper eq. 7), as ``1 - JS(U, softmax(l/T)) / JS_max(K)`` in [0, 1].

    The paper thresholds JS(U, p) itself, which is *low* on anomalies; we flip and normalise it
    (a monotone map, so AP / AUROC / FPR95 are unchanged) so that 1 means a uniform prediction,
    0 a one-hot one, and one threshold reads the same for any number of classes.
    """
    k = logits.shape[dim]
    return 1.0 - jsd_to_uniform(logits, temperature, dim) / max_jsd_to_uniform(k)


def jsd_ood_key(logits: torch.Tensor, temperature: float = 2.0, dim: int = 1) -> torch.Tensor:
    """``-JS(U, softmax(l/T)) / JS_max(K)``: ordered like ``jsd_ood_score`` (score = 1 + key).

    Metrics and thresholds use this form: near-uniform predictions, the very pixels NFlowJS
    trains anomalies towards, have JS/JS_max around 1e-6..1e-3, which float32 keeps to full
    relative precision here but rounds to a few steps of 6e-8 in ``1 - JS/JS_max``. The
    divergence itself is computed in float64: in float32 its log terms cancel to an absolute
    error of a few 1e-8, as large as the JS of the most uniform predictions.
    """
    js = jsd_to_uniform(logits.double(), temperature, dim)
    return (-js / max_jsd_to_uniform(logits.shape[dim])).float()


def msp_score(logits: torch.Tensor, temperature: float = 1.0, dim: int = 1) -> torch.Tensor:
    """Max-softmax baseline (Hendrycks & Gimpel): 1 - max_k softmax(l/T)_k."""
    return 1.0 - F.softmax(logits / temperature, dim=dim).amax(dim=dim)


def max_logit_score(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Max-logit baseline (Hendrycks et al. 2022): -max_k l_k."""
    return -logits.amax(dim=dim)


def entropy_score(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Entropy of the softmax in nats."""
    log_p = F.log_softmax(logits, dim=dim)
    return -(log_p.exp() * log_p).sum(dim=dim)


def energy_score(logits: torch.Tensor, temperature: float = 1.0, dim: int = 1) -> torch.Tensor:
    """Free energy (Liu et al. 2020): -T logsumexp(l/T)."""
    return -temperature * torch.logsumexp(logits / temperature, dim=dim)


SCORES = {
    "jsd": jsd_ood_score,
    "msp": msp_score,
    "max_logit": max_logit_score,
    "entropy": entropy_score,
    "energy": energy_score,
}
