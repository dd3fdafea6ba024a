"""The paper's Figure 2 toy: NFlowJS must beat max-softmax off the inlier manifold."""

import torch

from nflowjs import toy2d


def test_nflowjs_beats_max_softmax_off_the_manifold(tmp_path):
    # The defaults of `python -m nflowjs.toy2d` (about 30 s on 2 cores): what the README shows.
    torch.set_num_threads(2)
    results = toy2d.run(toy2d.ToyConfig(), tmp_path, progress=False)
    msp, nflowjs = results["max-softmax baseline"], results["NFlowJS (JSD)"]
    for band in msp:
        assert nflowjs[band] > msp[band] + 0.1, (band, results)
    assert (tmp_path / "toy2d.png").stat().st_size > 10_000


def test_off_manifold_points_respect_their_distance_band():
    inliers, _ = toy2d.make_inliers(500, seed=0)
    points = toy2d.off_manifold_points(inliers, 200, (0.3, 1.0), seed=1)
    nearest = torch.cdist(points, inliers).amin(1)
    assert len(points) == 200
    assert (nearest > 0.3).all() and (nearest <= 1.0).all()


def test_point_flow_density_integrates_to_one():
    flow = toy2d.PointFlow(steps=3, hidden=8).eval()  # eval: no data-dependent ActNorm init
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
