"""The paper's Figure 2 toy: NFlowJS must beat max-softmax off the inlier manifold."""

import pytest
import torch

from nflowjs import toy2d


def test_nflowjs_beats_max_softmax_off_the_manifold(tmp_path):
    # The defaults of `python -m nflowjs.toy2d`, seed 0: docs/toy2d.md's first rows. Issue 14's
    # target for Figure 2: far-band AUROC >= 0.95 and >= 0.2 above max-softmax, with negatives
    # drawn from the flow (latent temperature 3, the default).
    torch.set_num_threads(2)
    result = toy2d.run(toy2d.ToyConfig(), tmp_path, progress=False)
    msp, nflowjs = result.auroc["max-softmax baseline"], result.auroc["NFlowJS (JSD)"]
    for band in msp:
        assert nflowjs[band] >= msp[band] + 0.2, (band, result.auroc)
    assert nflowjs["far > 1.0"] >= 0.95, result.auroc
    assert (tmp_path / "toy2d.png").stat().st_size > 10_000
    for stage, fractions in result.placement.items():
        assert abs(sum(fractions.values()) - 1.0) < 1e-6, stage


def test_negatives_around_the_manifold_make_the_classifier_confident_only_near_it():
    # Figure 2's negatives (a ring 0.2-1.0 from the inliers) in place of the flow: the
    # classifier's half of the method reaches the far-band target.
    torch.set_num_threads(2)
    config = toy2d.ToyConfig(negatives_from="ring", flow_steps=1, joint_steps=1000)
    result = toy2d.run(config, None, progress=False)
    far = "far > 1.0"
    assert result.auroc["NFlowJS (JSD)"][far] >= 0.95, result.auroc
    assert result.auroc["NFlowJS (JSD)"][far] >= result.auroc["max-softmax baseline"][far] + 0.2


def test_distance_profile_counts_each_point_once():
    inliers = torch.zeros(1, 2)
    points = torch.tensor([[0.05, 0.0], [0.2, 0.0], [0.5, 0.0], [3.0, 0.0]])
    assert toy2d.distance_profile(points, inliers) == {
        "0-0.1": 0.25,
        "0.1-0.3": 0.25,
        "0.3-1": 0.25,
        "> 1": 0.25,
    }


def test_off_manifold_points_respect_their_distance_band():
    inliers, _ = toy2d.make_inliers(500, seed=0)
    points = toy2d.off_manifold_points(inliers, 200, (0.3, 1.0), seed=1)
    nearest = torch.cdist(points, inliers).amin(1)
    assert len(points) == 200
    assert (nearest > 0.3).all() and (nearest <= 1.0).all()


@pytest.mark.parametrize("kind", ["coupling", "affine"])
def test_point_flow_density_integrates_to_one(kind):
    flow = toy2d.PointFlow(steps=3, hidden=8, kind=kind).eval()  # eval: no data-dependent init
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    # The density integrates to one over the plane (Riemann sum on a wide grid).
    grid = torch.linspace(-8, 8, 401)
    xs, ys = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([xs.ravel(), ys.ravel()], 1)
    with torch.no_grad():
        mass = flow.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass.item() - 1.0) < 0.02


def test_sampling_temperature_scales_the_latent():
    flow = toy2d.PointFlow(steps=1, hidden=4, kind="affine").eval()
    torch.manual_seed(0)
    cold = flow.sample(4000, tau=1.0)
    torch.manual_seed(0)
    hot = flow.sample(4000, tau=3.0)
    # An affine flow maps tau * z to mean + tau * (x - mean): three times the spread.
    assert torch.allclose(hot - hot.mean(0), 3 * (cold - cold.mean(0)), atol=1e-4)
