"""Pooled OOD metrics against scikit-learn, and (open-)mIoU."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from nflowjs.metrics import (
    ConfusionMatrix,
    OODMetricAccumulator,
    _order_preserving_buckets,
    open_miou,
    open_set_labels,
)


def sklearn_reference(scores: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    valid = gt != 255
    y, s = gt[valid], scores[valid]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    fpr95 = fpr[np.searchsorted(tpr, 0.95)]
    return average_precision_score(y, s), fpr95, roc_auc_score(y, s)


def accumulate(batches) -> OODMetricAccumulator:
    acc = OODMetricAccumulator()
    for scores, gt in batches:
        acc.update(torch.from_numpy(scores), torch.from_numpy(gt))
    return acc


def test_buckets_preserve_the_order_of_floats():
    values = torch.tensor([-1e30, -5.0, -1.0, -1e-20, 0.0, 1e-20, 0.5, 0.5005, 1.0, 7.0, 1e30])
    buckets = _order_preserving_buckets(values)
    assert (buckets[1:] >= buckets[:-1]).all()
    assert buckets[6] < buckets[7]  # 1e-3 relative apart: distinct buckets (resolution 2^-11)
    assert buckets.min() >= 0 and buckets.max() < 2**20


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_on_random_images(seed):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(6):
        gt = (rng.random((40, 60)) < 0.1).astype(np.uint8)
        gt[rng.random((40, 60)) < 0.05] = 255
        scores = (rng.normal(size=(40, 60)) + 1.2 * (gt == 1)).astype(np.float32)
        batches.append((scores, gt))
    ours = accumulate(batches).compute()
    ap, fpr95, auroc = sklearn_reference(
        np.concatenate([s.ravel() for s, _ in batches]),
        np.concatenate([g.ravel() for _, g in batches]),
    )
    assert ours.ap == pytest.approx(ap, abs=0.002)
    assert ours.auroc == pytest.approx(auroc, abs=0.002)
    assert ours.fpr95 == pytest.approx(fpr95, abs=0.002)
    assert ours.anomalies + ours.inliers == sum(int((g != 255).sum()) for _, g in batches)


def test_ties_are_handled_like_sklearn():
    # Few distinct scores: every bucket holds one exact value, so results must be exact.
    rng = np.random.default_rng(3)
    gt = (rng.random(5000) < 0.3).astype(np.uint8)
    scores = rng.integers(0, 5, 5000).astype(np.float32) + gt * rng.integers(0, 2, 5000)
    ours = accumulate([(scores, gt)]).compute()
    ap, fpr95, auroc = sklearn_reference(scores, gt)
    assert ours.ap == pytest.approx(ap, abs=1e-12)
    assert ours.auroc == pytest.approx(auroc, abs=1e-12)
    assert ours.fpr95 == pytest.approx(fpr95, abs=1e-12)


def test_images_without_anomalies_only_add_negatives():
    rng = np.random.default_rng(4)
    gt = (rng.random(1000) < 0.2).astype(np.uint8)
    scores = (rng.normal(size=1000) + gt).astype(np.float32)
    clean_gt = np.zeros(500, np.uint8)
    clean_scores = rng.normal(size=500).astype(np.float32)
    ours = accumulate([(scores, gt), (clean_scores, clean_gt)]).compute()
    ap, fpr95, auroc = sklearn_reference(np.r_[scores, clean_scores], np.r_[gt, clean_gt])
    assert ours.anomalies == int(gt.sum())
    assert ours.ap == pytest.approx(ap, abs=0.002)
    assert ours.auroc == pytest.approx(auroc, abs=0.002)
    assert ours.fpr95 == pytest.approx(fpr95, abs=0.002)


def test_perfect_and_worst_scores():
    gt = np.array([0, 0, 0, 1, 1, 255], np.uint8)
    perfect = accumulate([(np.array([0.1, 0.2, 0.3, 0.8, 0.9, 5.0], np.float32), gt)]).compute()
    assert (perfect.ap, perfect.auroc, perfect.fpr95) == (1.0, 1.0, 0.0)
    worst = accumulate([(np.array([0.8, 0.9, 0.7, 0.1, 0.2, 0.0], np.float32), gt)]).compute()
    assert worst.auroc == 0.0 and worst.fpr95 == 1.0
    assert worst.ap == pytest.approx(
        average_precision_score([0, 0, 0, 1, 1], [0.8, 0.9, 0.7, 0.1, 0.2])
    )


def test_no_anomalies_gives_nan_not_a_number_that_looks_real():
    scores = np.linspace(0, 1, 10, dtype=np.float32)
    result = accumulate([(scores, np.zeros(10, np.uint8))]).compute()
    assert math.isnan(result.ap) and math.isnan(result.auroc)


def test_bad_ground_truth_is_named():
    acc = OODMetricAccumulator()
    with pytest.raises(ValueError, match=r"0, 1 or 255; found values \[2\]"):
        acc.update(torch.zeros(3), torch.tensor([0, 2, 255]))
    with pytest.raises(ValueError, match="NaN"):
        acc.update(torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]))


def test_threshold_at_tpr_flags_95_percent_of_anomalies():
    rng = np.random.default_rng(5)
    gt = (rng.random(20000) < 0.3).astype(np.uint8)
    scores = (rng.normal(size=20000) + 2 * gt).astype(np.float32)
    acc = accumulate([(scores, gt)])
    threshold = acc.threshold_at_tpr(0.95)
    tpr = (scores[gt == 1] >= threshold).mean()
    assert 0.95 <= tpr < 0.952
    assert threshold < np.quantile(scores[gt == 1], 0.06)


def test_miou_and_void():
    cm = ConfusionMatrix(3)
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    prediction = torch.tensor([0, 1, 1, 1, 0, 2])
    cm.update(prediction, target)
    # IoU: class 0: 1/(2+2-1)=1/3, class 1: 2/3, class 2: 0/1
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 0.0])
    assert cm.miou() == pytest.approx(1 / 3)


def test_open_miou_equals_closed_miou_with_ideal_ood_detection():
    rng = np.random.default_rng(6)
    k = 4
    target = torch.from_numpy(rng.integers(0, k + 1, 5000))  # class k = anomaly
    closed = torch.from_numpy(rng.integers(0, k, 5000))
    closed = torch.where(torch.from_numpy(rng.random(5000) < 0.7), target.clamp(max=k - 1), closed)
    is_anomaly = target == k

    closed_cm = ConfusionMatrix(k)
    closed_cm.update(closed[~is_anomaly], target[~is_anomaly])
    ideal = ConfusionMatrix(k + 1)
    ideal.update(open_set_labels(closed, is_anomaly, k), target)
    assert open_miou(ideal) == pytest.approx(closed_cm.miou())

    blind = ConfusionMatrix(k + 1)  # no OOD detection: anomalies become false positives
    blind.update(closed, target)
    assert open_miou(blind) < closed_cm.miou() - 0.05


def near_uniform_case(seed: int = 0, n: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """JS/JS_max of anomalies log-uniform in [1e-6, 3e-4], of inliers in [1e-4, 1e-1]: what a
    model trained with NFlowJS gives (anomalies pushed to near-uniform predictions)."""
    rng = np.random.default_rng(seed)
    gt = (rng.random(n) < 0.05).astype(np.uint8)
    low, high = np.where(gt == 1, 1e-6, 1e-4), np.where(gt == 1, 3e-4, 1e-1)
    ratio = np.exp(rng.uniform(np.log(low), np.log(high)))
    return ratio, gt


def test_near_uniform_predictions_keep_their_order():
    """The JSD score is accumulated as -JS/JS_max: AP as scikit-learn's on the exact ratios
    (bucketing the exported form 1 - JS/JS_max instead gives AP 0.28 here, not 0.89)."""
    ratio, gt = near_uniform_case()
    key = (-ratio).astype(np.float32)
    ours = accumulate([(key, gt)]).compute()
    ap, fpr95, auroc = sklearn_reference(-ratio, gt)
    assert ap > 0.8
    assert ours.ap == pytest.approx(ap, abs=0.002)
    assert ours.fpr95 == pytest.approx(fpr95, abs=0.002)
    assert ours.auroc == pytest.approx(auroc, abs=0.002)


def test_jsd_is_accumulated_with_resolution_near_uniform_predictions():
    """evaluate's JSD map is the key form (-JS/JS_max), ordered like the exported score."""
    from nflowjs.evaluation import as_metric_key, as_score, score_maps
    from nflowjs.scores import jsd_ood_score

    logits = torch.zeros(1, 9, 1, 4)
    logits[0, 0, 0] = torch.tensor([0.02, 0.05, 0.1, 1.0])  # near-uniform to confident
    key = score_maps(logits, temperature=2.0)["jsd"][0]
    score = jsd_ood_score(logits, 2.0)[0, 0]
    assert (key[:-1] > key[1:]).all()  # distinct and ordered like the score
    assert torch.allclose(1 + key.double(), score.double(), atol=1e-7)
    assert as_score("jsd", as_metric_key("jsd", 0.75)) == pytest.approx(0.75)
    assert as_score("energy", -3.0) == -3.0


def test_jsd_key_of_near_uniform_logits_ranks_like_exact_arithmetic():
    """Real float32 logits 1e-4..3e-3 from uniform (JS/JS_max 1e-10..1e-6): the key keeps their
    order, where JS computed in float32 is mostly rounding error."""
    from scipy.stats import spearmanr

    from nflowjs.scores import jsd_ood_key, jsd_to_uniform

    generator = torch.Generator().manual_seed(0)
    scale = torch.logspace(-4, -2.5, 2000)[:, None, None, None]
    logits = (torch.randn(2000, 19, 1, 1, generator=generator) * scale).float()
    exact = jsd_to_uniform(logits.double(), 2.0).flatten()
    key = jsd_ood_key(logits, 2.0).flatten()
    assert spearmanr(-key, exact).statistic > 0.9999
    assert (key <= 0).all()
    float32 = jsd_to_uniform(logits, 2.0).flatten()
    assert spearmanr(float32, exact).statistic < 0.99  # what the float64 computation avoids


def test_threshold_at_fpr_keeps_false_alarms_within_the_budget():
    rng = np.random.default_rng(7)
    gt = (rng.random(100_000) < 0.1).astype(np.uint8)
    scores = (rng.normal(size=100_000) + 2.5 * gt).astype(np.float32)
    acc = accumulate([(scores, gt)])
    for target in (0.01, 0.05):
        threshold = acc.threshold_at_fpr(target)
        flagged = scores >= threshold
        fpr, tpr = flagged[gt == 0].mean(), flagged[gt == 1].mean()
        assert target - 0.001 < fpr <= target
        assert acc.rates_at(threshold) == pytest.approx((tpr, fpr))
    assert acc.threshold_at_fpr(0.01) > acc.threshold_at_fpr(0.05)
    assert acc.rates_at(math.inf) == (0.0, 0.0)
    minus_inf = accumulate([(np.array([-np.inf, 0.0], np.float32), np.array([1, 0], np.uint8))])
    assert minus_inf.threshold_at_tpr(1.0) == -math.inf
