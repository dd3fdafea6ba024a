"""JSD score against SciPy, its closed-form maximum, temperature, baselines, the fused head."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from nflowjs.head import OutlierAwareSegmenter
from nflowjs.scores import (
    SCORES,
    energy_score,
    entropy_score,
    jsd_ood_score,
    jsd_to_uniform,
    max_jsd_to_uniform,
    max_logit_score,
    msp_score,
)


@pytest.mark.parametrize("k", [2, 11, 19])
def test_jsd_matches_scipy_on_random_distributions(k):
    rng = np.random.default_rng(k)
    logits = torch.from_numpy(rng.normal(scale=3.0, size=(50, k)))
    ours = jsd_to_uniform(logits, dim=1).numpy()
    p = torch.softmax(logits, 1).numpy()
    uniform = np.full(k, 1.0 / k)
    expected = np.array([jensenshannon(uniform, row) ** 2 for row in p])  # natural log
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [2, 19, 1000])
def test_jsd_maximum_is_reached_at_one_hot(k):
    one_hot_logits = torch.full((1, k), -1e4, dtype=torch.float64)
    one_hot_logits[0, 0] = 1e4
    assert jsd_to_uniform(one_hot_logits).item() == pytest.approx(max_jsd_to_uniform(k), rel=1e-9)
    uniform = np.full(k, 1.0 / k)
    one_hot = np.eye(k)[0]
    assert max_jsd_to_uniform(k) == pytest.approx(jensenshannon(uniform, one_hot) ** 2, rel=1e-9)
    assert max_jsd_to_uniform(k) < math.log(2)


def test_jsd_maximum_values_from_reference():
    assert max_jsd_to_uniform(19) == pytest.approx(0.589, abs=5e-4)
    assert max_jsd_to_uniform(10**6) == pytest.approx(math.log(2), abs=1e-5)


def test_ood_score_range_and_orientation():
    k = 19
    uniform = torch.zeros(1, k, 1, 1)
    confident = torch.zeros(1, k, 1, 1)
    confident[0, 3] = 100.0
    assert jsd_ood_score(uniform).item() == pytest.approx(1.0, abs=1e-6)
    assert jsd_ood_score(confident, temperature=1.0).item() == pytest.approx(0.0, abs=1e-6)
    random = torch.randn(4, k, 8, 8) * 5
    score = jsd_ood_score(random)
    assert score.shape == (4, 8, 8)
    assert (score >= -1e-6).all() and (score <= 1 + 1e-6).all()


def test_higher_temperature_raises_the_score_of_a_confident_pixel():
    logits = torch.tensor([[6.0, 1.0, 0.0, -1.0]])
    t1, t2 = jsd_ood_score(logits, 1.0), jsd_ood_score(logits, 2.0)
    assert t2.item() > t1.item()


def test_temperature_lowers_border_pixels_relative_to_homogeneous_ones():
    # Paper 3.3: T > 1 reduces the OOD score of two dominant logits (a class border) relative
    # to one maximum over homogeneous others, at equal score under T = 1.
    k = 19
    border = torch.zeros(1, k)
    border[0, :2] = 4.0
    target = jsd_ood_score(border, 1.0)
    lo, hi = 0.0, 20.0
    for _ in range(60):  # bisect the single-peak logit that matches the border's T=1 score
        mid = (lo + hi) / 2
        peak = torch.zeros(1, k)
        peak[0, 0] = mid
        lo, hi = (mid, hi) if jsd_ood_score(peak, 1.0) > target else (lo, mid)
    assert jsd_ood_score(peak, 1.0).item() == pytest.approx(target.item(), abs=1e-6)
    assert jsd_ood_score(border, 2.0).item() < jsd_ood_score(peak, 2.0).item() - 0.01


def test_baselines_are_oriented_like_the_jsd_score():
    confident = torch.tensor([[10.0, 0.0, 0.0]])
    unsure = torch.tensor([[0.1, 0.0, 0.05]])
    for name, score in SCORES.items():
        assert score(confident).item() < score(unsure).item(), name


def test_baseline_values():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    p = torch.softmax(logits, 1)
    assert msp_score(logits).item() == pytest.approx(1 - p.max().item())
    assert max_logit_score(logits).item() == pytest.approx(-2.0)
    assert entropy_score(logits).item() == pytest.approx(-(p * p.log()).sum().item())
    assert energy_score(logits).item() == pytest.approx(-math.log(math.exp(2) + math.exp(1) + 1))


class _FixedLogits(torch.nn.Module):
    """A segmenter that returns given logits, to check the head's arithmetic exactly."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, image):
        return self.logits.expand(image.shape[0], -1, -1, -1)


def test_fused_head_outputs_dtypes_shapes_and_threshold():
    k, h, w = 5, 6, 7
    logits = torch.zeros(1, k, h, w)
    logits[0, 2, :3] = 20.0  # confident class 2 in the top half, uniform below
    head = OutlierAwareSegmenter(
        _FixedLogits(logits), num_classes=k, temperature=2.0, threshold=0.5
    )
    labels, score, mask = head(torch.rand(2, 3, h, w))
    assert labels.dtype == torch.uint8 and mask.dtype == torch.uint8
    assert score.dtype == torch.float32
    assert labels.shape == score.shape == mask.shape == (2, h, w)
    assert (labels[:, :3] == 2).all()
    assert (mask[:, :3] == 0).all() and (mask[:, 3:] == 1).all()
    torch.testing.assert_close(score, jsd_ood_score(logits, 2.0).expand(2, h, w))


def test_fused_head_relabels_ood_pixels_as_unknown():
    k = 4
    logits = torch.zeros(1, k, 2, 2)
    logits[0, 1, 0] = 30.0
    head = OutlierAwareSegmenter(_FixedLogits(logits), num_classes=k, threshold=0.5, unknown_id=254)
    labels, _, mask = head(torch.rand(1, 3, 2, 2))
    assert labels[0, 0].tolist() == [1, 1]
    assert labels[0, 1].tolist() == [254, 254]
    assert mask[0, 1].tolist() == [1, 1]


def test_fused_head_on_ldn_at_input_resolution():
    from nflowjs.networks import LadderDenseNet, ldn_config

    segmenter = LadderDenseNet(ldn_config("ldn-lite", num_classes=11)).eval()
    head = OutlierAwareSegmenter(segmenter, num_classes=11)
    with torch.no_grad():
        labels, score, mask = head(torch.rand(1, 3, 90, 120))
    assert labels.shape == score.shape == mask.shape == (1, 90, 120)
    assert int(labels.max()) < 11


def test_fused_head_exports_as_one_graph():
    # torch.export refuses data-dependent Python control flow, which ONNX/TensorRT cannot hold.
    k = 3
    head = OutlierAwareSegmenter(_FixedLogits(torch.randn(1, k, 4, 4)), num_classes=k)
    exported = torch.export.export(head, (torch.rand(1, 3, 4, 4),))
    image = torch.rand(1, 3, 4, 4)
    for expected, got in zip(head(image), exported.module()(image), strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 300}, "uint8"),
        ({"num_classes": 5, "temperature": 0.0}, "temperature"),
        ({"num_classes": 5, "unknown_id": 256}, "unknown_id"),
    ],
)
def test_fused_head_rejects_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OutlierAwareSegmenter(torch.nn.Identity(), **kwargs)
