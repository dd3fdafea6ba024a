"""DenseFlow: invertibility, exact log-determinant, sampling at any size, gradients."""

import math

import pytest
import torch

from conftest import initialised_flow, variational_parameter_names
from nflowjs.flow import DENSEFLOW_PRESETS, DenseFlow, DenseFlowConfig
from nflowjs.flow.bijections import squeeze2x2, unsqueeze2x2

TINY = DENSEFLOW_PRESETS["denseflow-tiny"]


def test_squeeze_round_trip():
    x = torch.randn(2, 3, 8, 12)
    assert squeeze2x2(x).shape == (2, 12, 4, 6)
    torch.testing.assert_close(unsqueeze2x2(squeeze2x2(x)), x, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(16, 16), (24, 40), (64, 32)])
def test_inverse_of_forward_is_identity(size):
    flow = initialised_flow(TINY).eval()
    x = torch.rand(3, 3, *size)
    with torch.no_grad():
        latents, _ = flow.encode(x)
        reconstruction = flow.decode(latents)
    assert (reconstruction - x).abs().max() < 1e-4


def test_log_determinant_matches_brute_force_jacobian():
    # Without cross-unit noise the flow is a bijection, so its log-det is exactly checkable.
    config = DenseFlowConfig(**{**TINY.__dict__, "growth": 0})
    flow = initialised_flow(config, size=(8, 8)).eval().double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)

    def flat_latents(inp):
        latents, _ = flow.encode(inp)
        return torch.cat([z.flatten(1) for z in latents], 1)

    jacobian = torch.autograd.functional.jacobian(flat_latents, x).reshape(192, 192)
    _, brute_force = torch.linalg.slogdet(jacobian)
    _, ldj = flow.encode(x)
    assert abs(ldj.item() - brute_force.item()) <= 1e-3 * abs(brute_force.item())
    assert abs(brute_force.item()) > 1.0  # a non-trivial Jacobian, not the identity


def test_log_prob_is_finite_and_per_sample():
    flow = initialised_flow(TINY).eval()
    lp = flow.log_prob(torch.rand(5, 3, 16, 24))
    assert lp.shape == (5,) and torch.isfinite(lp).all()


@pytest.mark.parametrize("size", [(8, 8), (16, 40), (48, 24)])
def test_sampling_at_any_allowed_size(size):
    flow = initialised_flow(TINY).eval()
    with torch.no_grad():
        patches = flow.sample(4, *size)
    assert patches.shape == (4, 3, *size)
    assert torch.isfinite(patches).all()
    assert patches.std() > 0.01


def test_log_prob_at_several_sizes():
    flow = initialised_flow(TINY).eval()
    for size in [(8, 8), (16, 40), (48, 24)]:
        assert flow.log_prob(torch.rand(2, 3, *size)).shape == (2,)


def test_sizes_that_the_flow_cannot_take_are_refused():
    flow = DenseFlow(TINY)
    assert flow.size_multiple == 8
    with pytest.raises(ValueError, match="multiples of 8"):
        flow.sample(1, 12, 16)
    with pytest.raises(ValueError, match="multiples of 8"):
        flow.log_prob(torch.rand(1, 3, 20, 16))


def test_loss_on_samples_reaches_every_generative_parameter(tiny_flow):
    flow = tiny_flow
    flow.sample(4, 16, 24).square().mean().backward()
    variational = variational_parameter_names(flow)
    params = dict(flow.named_parameters())
    generative = {n: p for n, p in params.items() if n not in variational}
    assert variational, "cross-unit augmentation networks are expected in this config"
    for name, p in generative.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
    # q(e|x) networks only enter the likelihood; the NLL must reach them.
    flow.zero_grad()
    flow.nll_bits_per_dim(torch.rand(4, 3, 16, 16)).backward()
    for name in variational:
        p = params[name]
        assert p.grad is not None and p.grad.abs().sum() > 0, f"NLL did not reach {name}"


def test_bits_per_dim_improves_with_training():
    torch.manual_seed(1)
    flow = DenseFlow(TINY)
    # Patches of smooth colour: easy to model, so a few Adamax steps must lower the NLL.
    data = torch.rand(64, 3, 1, 1).expand(64, 3, 16, 16) * 0.5 + 0.25
    optimizer = torch.optim.Adamax(flow.parameters(), lr=2e-3)
    first = flow.nll_bits_per_dim(data).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss = flow.nll_bits_per_dim(data)
        loss.backward()
        optimizer.step()
    assert math.isfinite(first)
    assert loss.item() < first - 0.5


def test_denseflow_25_6_size():
    with torch.device("meta"):
        flow = DenseFlow(DENSEFLOW_PRESETS["denseflow-25-6"])
    assert flow.config.coupling_steps == 25 and flow.config.growth == 6
    params = sum(p.numel() for p in flow.parameters())
    assert 38e6 <= params <= 45e6  # REFERENCE.md: plausible DenseFlow-25-6 splits
