import pytest
import torch

from nflowjs.flow import DENSEFLOW_PRESETS, DenseFlow, DenseFlowConfig
from nflowjs.flow.denseflow import CrossUnitAugmentation


def initialised_flow(config: DenseFlowConfig, size=(16, 16)) -> DenseFlow:
    """A flow as after some training: ActNorms initialised on data, last layers no longer zero.

    Fresh couplings are the identity (zero-initialised last layers), so gradients would not
    reach their inner layers yet; tests of invertibility and gradient flow need a generic flow.
    """
    torch.manual_seed(0)
    flow = DenseFlow(config)
    flow.log_prob(torch.rand(8, 3, *size))  # data-dependent ActNorm init (train mode)
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith(("exit.weight", "net.2.weight")):
                p.normal_(0.0, 0.05)
    return flow


def variational_parameter_names(flow: DenseFlow) -> set[str]:
    """Parameters of the q(e|x) networks: they enter the likelihood, not generation."""
    return {
        f"{module_name}.{name}"
        for module_name, module in flow.named_modules()
        if isinstance(module, CrossUnitAugmentation)
        for name, _ in module.named_parameters()
    }


@pytest.fixture
def tiny_flow() -> DenseFlow:
    return initialised_flow(DENSEFLOW_PRESETS["denseflow-tiny"])
