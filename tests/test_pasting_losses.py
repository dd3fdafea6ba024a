"""Mixed-content assembly and the NFlowJS losses."""

import pytest
import torch
import torch.nn.functional as F

from conftest import variational_parameter_names
from nflowjs.losses import negative_loss, nflowjs_loss
from nflowjs.networks import LadderDenseNet, ldn_config
from nflowjs.pasting import clamp_to_image_range, draw_patch_size, paste_patches
from nflowjs.scores import jsd_to_uniform


def test_patch_sides_are_multiples_within_the_range():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(400):
        h, w = draw_patch_size((16, 216), 8, (768, 768), g)
        assert 16 <= h <= 216 and 16 <= w <= 216
        assert h % 8 == 0 and w % 8 == 0
        seen.update((h, w))
    assert min(seen) == 16 and max(seen) == 216  # both ends are reachable
    assert len(seen) == 26  # every multiple of 8 from 16 to 216


def test_patch_sides_are_capped_by_the_image_and_snapped_inward():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        h, w = draw_patch_size((10, 216), 8, (100, 40), g)
        assert 16 <= h <= 96 and 16 <= w <= 40
    with pytest.raises(ValueError, match="fits in an image"):
        draw_patch_size((16, 216), 8, (12, 100), g)


def test_pasting_sets_mask_labels_and_pixels():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(4, 3, 40, 56)
    labels = torch.randint(0, 11, (4, 40, 56))
    patches = torch.full((4, 3, 16, 24), 7.0)
    batch = paste_patches(images, labels, patches, ignore_index=255, generator=g)

    assert batch.ood_mask.dtype == torch.bool
    for i, (top, left, h, w) in enumerate(batch.boxes.tolist()):
        assert (h, w) == (16, 24)
        assert 0 <= top <= 40 - h and 0 <= left <= 56 - w  # fully inside
        inside = torch.zeros(40, 56, dtype=torch.bool)
        inside[top : top + h, left : left + w] = True
        assert torch.equal(batch.ood_mask[i], inside)
        assert (batch.images[i][:, inside] == 7.0).all()
        assert torch.equal(batch.images[i][:, ~inside], images[i][:, ~inside])
        assert (batch.labels[i][inside] == 255).all()
        assert torch.equal(batch.labels[i][~inside], labels[i][~inside])
        # x^c is the inlier content that the patch replaced
        assert torch.equal(batch.inlier_crops[i], images[i, :, top : top + h, left : left + w])
    assert batch.ood_mask.sum() == 4 * 16 * 24
    # inputs are left untouched
    assert not (labels == 255).any()


def test_locations_vary_over_the_image():
    g = torch.Generator().manual_seed(0)
    batch = paste_patches(
        torch.rand(64, 3, 32, 32),
        torch.zeros(64, 32, 32, dtype=torch.long),
        torch.rand(64, 3, 8, 8),
        generator=g,
    )
    assert len(set(batch.boxes[:, 0].tolist())) > 10 and len(set(batch.boxes[:, 1].tolist())) > 10


def test_patches_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        paste_patches(
            torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long), torch.rand(1, 3, 16, 8)
        )


def test_negative_loss_is_mean_jsd_over_pasted_pixels():
    logits = torch.randn(2, 5, 6, 6)
    mask = torch.zeros(2, 6, 6, dtype=torch.bool)
    mask[0, :2, :3] = True
    mask[1, 4:, 4:] = True
    expected = jsd_to_uniform(logits)[mask].sum() / 10
    torch.testing.assert_close(negative_loss(logits, mask), expected)
    assert negative_loss(logits, torch.zeros_like(mask)).item() == 0.0


def test_lambda_zero_reduces_the_discriminative_loss_to_cross_entropy():
    logits = torch.randn(2, 5, 6, 6)
    labels = torch.randint(0, 5, (2, 6, 6))
    labels[0, :2] = 255
    mask = labels == 255
    loss = nflowjs_loss(logits, labels, mask, nll=torch.tensor(3.0), lam=0.0)
    ce = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(loss.discriminative, ce)
    # CE averages over the inlier pixels only
    inlier = ~mask
    manual = -F.log_softmax(logits, 1).gather(1, labels.clamp(max=4)[:, None])[:, 0][inlier].mean()
    torch.testing.assert_close(ce, manual)


def test_joint_step_gives_each_network_the_gradient_of_its_own_loss(tiny_flow):
    """Segmenter: d(CE + lam L_neg)/dtheta; flow: d(L_nll + lam L_neg)/dgamma, no CE (eqs. 3-5)."""
    from nflowjs.pasting import crop_windows, random_locations
    from nflowjs.training.common import FlowObjective
    from nflowjs.training.stage2 import nflowjs_step

    torch.manual_seed(0)
    segmenter = LadderDenseNet(ldn_config("ldn-lite", num_classes=5)).eval()  # fixed BN stats
    flow_objective = FlowObjective(tiny_flow.eval())
    images, labels = torch.rand(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    size, locations, lam = (16, 24), random_locations(2, (16, 24), (64, 64)), 0.5

    def gradients(backward):
        for module in (segmenter, tiny_flow):
            module.zero_grad()
        torch.manual_seed(1)  # the same negatives and noise in every run
        backward()
        return (
            {n: p.grad.clone() for n, p in segmenter.named_parameters() if p.grad is not None},
            {n: p.grad.clone() for n, p in tiny_flow.named_parameters() if p.grad is not None},
        )

    def plain_graph(pick):  # the mixed image keeps its link to the flow
        negatives, nll = flow_objective(crop_windows(images, locations, size), size)
        batch = paste_patches(images, labels, negatives, locations=locations)
        loss = nflowjs_loss(segmenter(batch.images), batch.labels, batch.ood_mask, nll, lam)
        pick(loss).backward()

    def joint_step():
        objective, *_ = nflowjs_step(
            segmenter, flow_objective, images, labels, size, locations, lam
        )
        objective.backward()

    step = gradients(joint_step)
    discriminative = gradients(lambda: plain_graph(lambda loss: loss.discriminative))
    generative = gradients(lambda: plain_graph(lambda loss: loss.generative))
    naive_total = gradients(lambda: plain_graph(lambda loss: loss.total))

    for name, g in discriminative[0].items():
        torch.testing.assert_close(step[0][name], g, rtol=1e-4, atol=1e-7, msg=name)
    assert step[1].keys() == generative[1].keys()
    for name, g in generative[1].items():
        torch.testing.assert_close(step[1][name], g, rtol=1e-4, atol=1e-7, msg=name)
    # and the routing matters: backpropagating the plain sum hands the flow a CE gradient
    assert any(
        not torch.allclose(naive_total[1][n], g, rtol=1e-3, atol=1e-8)
        for n, g in generative[1].items()
    )


def test_clamped_negatives_pass_the_gradient_at_out_of_range_values():
    samples = torch.tensor([-0.5, 0.25, 1.5], requires_grad=True)
    pasted = clamp_to_image_range(samples)
    assert pasted.tolist() == [0.0, 0.25, 1.0]  # the segmenter sees only image values
    pasted.backward(torch.tensor([2.0, 3.0, 4.0]))
    assert samples.grad.tolist() == [2.0, 3.0, 4.0]  # plain clamp gives [0, 3, 0]


def test_the_flow_learns_from_an_out_of_range_pasted_pixel(tiny_flow):
    from nflowjs.training.common import FlowObjective

    torch.manual_seed(0)
    objective = FlowObjective(tiny_flow)
    negatives, _ = objective(torch.rand(2, 3, 16, 24), (16, 24))
    # clamped pixels sit exactly on 0 or 1 (an in-range sample lands there with probability 0)
    outside = ((negatives == 0) | (negatives == 1)).nonzero()
    assert len(outside) > 0, "the seeded initial flow draws some out-of-range pixels"
    tiny_flow.zero_grad()
    negatives[tuple(outside[0])].backward()  # d(that one pasted pixel)/d(flow parameters)
    grads = [p.grad for p in tiny_flow.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_negative_term_reaches_the_flow_through_pasted_samples(tiny_flow):
    flow = tiny_flow
    segmenter = LadderDenseNet(ldn_config("ldn-lite", num_classes=5))
    images = torch.rand(2, 3, 64, 64)
    labels = torch.randint(0, 5, (2, 64, 64))
    batch = paste_patches(images, labels, flow.sample(2, 16, 24))
    logits = segmenter(batch.images)
    loss = nflowjs_loss(
        logits, batch.labels, batch.ood_mask, flow.nll_bits_per_dim(batch.inlier_crops)
    )

    flow.zero_grad()
    (loss.lam * loss.negative).backward(retain_graph=True)
    variational = variational_parameter_names(flow)
    for name, p in flow.named_parameters():
        if name not in variational:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"L_neg did not reach {name}"

    # and the full objective trains both networks
    flow.zero_grad()
    segmenter.zero_grad()
    loss.total.backward()
    assert all(p.grad is not None for p in segmenter.parameters())
    assert all(p.grad is not None for p in flow.parameters())
