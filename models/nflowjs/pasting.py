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


def clamp_to_image_range(samples: torch.Tensor) -> torch.Tensor:
    """Flow samples clamped to [0, 1] in value, with the identity's gradient (straight-through).

    Pasted pixels stay in the image range: out-of-range values would be a trivial cue for the
    segmenter that real anomalies never show. A plain ``clamp`` passes no gradient outside the
    range (about 8 % of an initial flow's sampled pixels), so lambda dL_neg/dx' (eq. 4) would
    never reach the flow through them; here every pasted pixel passes its gradient on.
    """
    return samples + (samples.clamp(0.0, 1.0) - samples).detach()


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


def random_locations(
    n: int, patch_size: tuple[int, int], image_size: tuple[int, int], generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners, uniform over the positions where the patch lies fully inside."""
    (ph, pw), (height, width) = patch_size, image_size
    if ph > height or pw > width:
        raise ValueError(f"patches of {ph}x{pw} do not fit {height}x{width} images")
    tops = torch.randint(height - ph + 1, (n,), generator=generator)
    lefts = torch.randint(width - pw + 1, (n,), generator=generator)
    return tops, lefts


def inlier_locations(
    labels: torch.Tensor,
    patch_size: tuple[int, int],
    ignore_index: int = 255,
    max_ignored: float = 0.1,
    tries: int = 8,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform locations, redrawn (up to ``tries`` times) while the window is mostly ignored.

    The crop a negative replaces is what the flow's L_nll learns from; void and held-out
    anomaly pixels (ignored in the labels) must not become inlier evidence. When no draw has
    at most ``max_ignored`` ignored pixels, the least ignored draw is kept.
    """
    n = labels.shape[0]
    candidates = [
        random_locations(n, patch_size, labels.shape[-2:], generator) for _ in range(tries)
    ]
    h, w = patch_size
    tops, lefts = [], []
    for i in range(n):
        fractions = [
            (labels[i, int(t[i]) : int(t[i]) + h, int(lf[i]) : int(lf[i]) + w] == ignore_index)
            .float()
            .mean()
            .item()
            for t, lf in candidates
        ]
        ok = [k for k, f in enumerate(fractions) if f <= max_ignored]
        k = ok[0] if ok else min(range(tries), key=fractions.__getitem__)
        tops.append(candidates[k][0][i])
        lefts.append(candidates[k][1][i])
    return torch.stack(tops), torch.stack(lefts)


def crop_windows(
    images: torch.Tensor, locations: tuple[torch.Tensor, torch.Tensor], size: tuple[int, int]
) -> torch.Tensor:
    """The (N, C, h, w) windows of ``images`` at ``locations``: the crops x^c of eq. 4."""
    return torch.stack(
        [
            images[i, :, t : t + size[0], left : left + size[1]]
            for i, (t, left) in enumerate(zip(*(x.tolist() for x in locations), strict=True))
        ]
    )


def paste_patches(
    images: torch.Tensor,
    labels: torch.Tensor,
    patches: torch.Tensor,
    ignore_index: int = 255,
    generator: torch.Generator | None = None,
    locations: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> MixedContentBatch:
    """Paste ``patches[i]`` into ``images[i]`` at ``locations`` (default: uniformly random).

    Hard replacement (no blending), as in the paper; gradients flow from the result back into
    ``patches`` (and so into the flow that sampled them). Pass ``locations`` when the replaced
    crops had to be known before sampling (the flow's NLL and samples in one forward pass).
    """
    n, _, height, width = images.shape
    ph, pw = patches.shape[-2:]
    if patches.shape[0] != n:
        raise ValueError(f"{patches.shape[0]} patches for {n} images")
    if locations is None:
        locations = random_locations(n, (ph, pw), (height, width), generator)
    tops, lefts = locations

    mixed = images.clone()
    mixed_labels = labels.clone()
    ood_mask = torch.zeros(n, height, width, dtype=torch.bool, device=images.device)
    # A loop over the batch: each image has its own location, and slice assignment keeps autograd.
    for i, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True)):
        window = (slice(top, top + ph), slice(left, left + pw))
        mixed[i, :, window[0], window[1]] = patches[i]
        mixed_labels[i, window[0], window[1]] = ignore_index
        ood_mask[i, window[0], window[1]] = True
    crops = crop_windows(images, locations, (ph, pw))
    boxes = torch.stack([tops, lefts, torch.full_like(tops, ph), torch.full_like(tops, pw)], 1)
    return MixedContentBatch(mixed, mixed_labels, ood_mask, crops, boxes)
