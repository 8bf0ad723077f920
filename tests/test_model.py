"""ResCNN parameter counts and shapes at each stage."""

import pytest
import torch

from audiocert import ResCNN
from audiocert.model import count_parameters


def test_paper_parameter_counts():
    assert count_parameters(ResCNN(num_classes=10)) == 24_177_418
    assert count_parameters(ResCNN(num_classes=None)) == 24_172_288


def test_shapes_at_each_stage():
    model = ResCNN(num_classes=10).eval()
    x = torch.randn(2, 1, 160, 64)
    shapes = []
    for stage in model.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 80, 32), (128, 40, 16), (256, 20, 8), (512, 10, 4)]
    with torch.no_grad():
        assert model(torch.randn(2, 1, 160, 64)).shape == (2, 10)
        assert model.embed(torch.randn(2, 1, 160, 64)).shape == (2, 512)


def test_small_widths_and_clipped_relu_and_bn():
    model = ResCNN(num_classes=5, widths=[4, 8, 8, 16], embedding_dim=32).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, 160, 64)).shape == (3, 5)
    bn = model.stages[0].bn
    assert bn.eps == 1e-3 and bn.momentum == 0.01
    with pytest.raises(ValueError, match="widths"):
        ResCNN(widths=[4, 8, 16])


def test_time_major_reshape_matches_keras_layout():
    model = ResCNN(num_classes=None, widths=[2, 2, 2, 3], embedding_dim=4).eval()
    features = torch.randn(1, 3, 10, 4)  # (N, C, T, F) after the stages
    manual = features.permute(0, 2, 3, 1).reshape(1, 10, 12).mean(1)
    model.stages = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(features), model.affine(manual))


def test_strided_convolution_pads_like_keras_same():
    # Keras 'same' on an even size with a 5x5 stride-2 kernel pads 1 before and 2 after. With an all-ones kernel
    # on an all-ones input, the first output sees 4 x 4 real inputs and the last 3 x 3 (symmetric padding=2
    # would give 9 and 16 instead).
    conv = ResCNN(num_classes=None, widths=[1, 1, 1, 1], embedding_dim=2).stages[0].conv
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        out = conv(torch.ones(1, 1, 160, 64))
    assert out.shape == (1, 1, 80, 32)
    assert out[0, 0, 0, 0].item() == 16.0 and out[0, 0, -1, -1].item() == 9.0
    # An odd size pads 2 on both sides, as Keras does, and keeps ceil(size / 2) outputs.
    with torch.no_grad():
        odd = conv(torch.ones(1, 1, 9, 7))
    assert odd.shape == (1, 1, 5, 4)
    assert odd[0, 0, 0, 0].item() == 9.0 and odd[0, 0, -1, -1].item() == 9.0
