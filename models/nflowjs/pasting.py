"""Mixed-content images (paper eq. 2): x' = (1 - s) x+ + pad(x-, s), one negative patch each."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MixedContentBatch:
    images: torch.Tensor  # (N, 3, H, W) x', differentiable w.r.t. the pasted patches
    labels: torch.Tensor  # (N, H, W) int64, pasted pixels set to the ignore id
    ood_mask: torch.Tensor  # (N, H, W) bool, True on pasted pixels (m = 1 in eq. 3)
    inlier_crops: torch.Tensor  # (N, 3, h, w) the inlier content each patch replaced (x^c)
    boxes: torch.Tensor  # (N, 4) int64: top, left, height, width


def draw_patch_size(
    side_range: tuple[int, int],
    multiple: int,
    max_size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """Height and width, each uniform over the multiples of ``multiple`` in ``side_range``.

    ``multiple`` is the flow's total downsampling (8 for three squeezes), so U(16, 216) becomes
    U{16, 24, ..., 216}; sides are also capped by ``max_size`` (the crop) so patches fit.
    """
    low, high = side_range
    sides = []
    for limit in max_size:
        first = -(-low // multiple) * multiple
        last = min(high, limit) // multiple * multiple
        if first > last:
            raise ValueError(
                f"no patch side in {side_range} that is a multiple of {multiple} fits in an image "
                f"of size {max_size}; lower the patch range or use larger crops"
            )
        choices = (last - first) // multiple + 1
        sides.append(first + multiple * int(torch.randint(choices, (), generator=generator)))
    return sides[0], sides[1]


def paste_patches(
    images: torch.Tensor,
    labels: torch.Tensor,
    patches: torch.Tensor,
    ignore_index: int = 255,
    generator: torch.Generator | None = None,
) -> MixedContentBatch:
    """Paste ``patches[i]`` at a uniformly random location fully inside ``images[i]``.

    Hard replacement (no blending), as in the paper; gradients flow from the result back into
    ``patches`` (and so into the flow that sampled them).
    """
    n, _, height, width = images.shape
    ph, pw = patches.shape[-2:]
    if patches.shape[0] != n or ph > height or pw > width:
        raise ValueError(f"{tuple(patches.shape)} patches do not fit {tuple(images.shape)} images")
    tops = torch.randint(height - ph + 1, (n,), generator=generator)
    lefts = torch.randint(width - pw + 1, (n,), generator=generator)

    mixed = images.clone()
    mixed_labels = labels.clone()
    ood_mask = torch.zeros(n, height, width, dtype=torch.bool, device=images.device)
    crops = []
    # A loop over the batch: each image has its own location, and slice assignment keeps autograd.
    for i, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True)):
        window = (slice(top, top + ph), slice(left, left + pw))
        crops.append(images[i, :, window[0], window[1]])
        mixed[i, :, window[0], window[1]] = patches[i]
        mixed_labels[i, window[0], window[1]] = ignore_index
        ood_mask[i, window[0], window[1]] = True
    boxes = torch.stack([tops, lefts, torch.full_like(tops, ph), torch.full_like(tops, pw)], 1)
    return MixedContentBatch(mixed, mixed_labels, ood_mask, torch.stack(crops), boxes)
