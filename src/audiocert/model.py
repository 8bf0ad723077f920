"""Deep Speaker's ResCNN (Li et al. 2017), after the Keras reference implementation, with a classifier head.

Four stages of (64, 128, 256, 512) filters by default; each stage is a 5x5 stride-2 convolution (with bias),
batch norm and clipped ReLU min(max(x, 0), 20), then three identity blocks
(conv3x3 -> BN -> cReLU -> conv3x3 -> BN -> cReLU, + input, cReLU). An input of (N, 1, 160, 64) becomes
(N, 512, 10, 4); that is read time-major as 10 steps of 4 * 512 = 2048 features, averaged over time, and
projected to a 512-d embedding ("affine"). The classifier head is Dropout(0.5) -> Linear(512 -> speakers),
without Deep Speaker's length normalization. Widths are a knob so CPUs can run small models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PAPER_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
# Stored in checkpoints: weights trained under another layout (v1: torch's symmetric stride-2 padding) load
# without error but compute something else, so loading refuses them.
ARCHITECTURE = "deep-speaker-rescnn/v2-keras-same-padding"
CLIP = 20.0


def clipped_relu(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, CLIP)


KERAS_BN_MOMENTUM = 0.01  # Keras' moving-average momentum 0.99, counted the torch way


def keras_batch_norm(channels: int, momentum: float = KERAS_BN_MOMENTUM) -> nn.BatchNorm2d:
    # Keras defaults: epsilon 1e-3; short CPU runs may raise the momentum so running statistics settle sooner.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=momentum)


class IdentityBlock(nn.Module):
    def __init__(self, channels: int, bn_momentum: float = KERAS_BN_MOMENTUM) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn_a = keras_batch_norm(channels, bn_momentum)
        self.conv_b = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn_b = keras_batch_norm(channels, bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = clipped_relu(self.bn_a(self.conv_a(x)))
        y = clipped_relu(self.bn_b(self.conv_b(y)))
        return clipped_relu(y + x)


def keras_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) zero padding of Keras/TensorFlow 'same': output ceil(size / stride), odd totals put the
    extra zero after. A 5x5 stride-2 conv on an even size pads (1, 2); torch's symmetric padding=2 would shift
    every receptive field by one and make Keras weights land off by a pixel."""
    total = max(kernel - (size % stride or stride), 0)
    return total // 2, total - total // 2


class StridedSameConv2d(nn.Conv2d):
    """A square-kernel strided convolution with Keras 'same' padding, computed from the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kernel, _), (stride, _) = self.kernel_size, self.stride
        top, bottom = keras_same_padding(x.shape[-2], kernel, stride)
        left, right = keras_same_padding(x.shape[-1], kernel, stride)
        return super().forward(nn.functional.pad(x, (left, right, top, bottom)))


class ConvResStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, blocks: int = 3,
                 bn_momentum: float = KERAS_BN_MOMENTUM) -> None:
        super().__init__()
        self.conv = StridedSameConv2d(in_channels, out_channels, 5, stride=2)
        self.bn = keras_batch_norm(out_channels, bn_momentum)
        self.blocks = nn.Sequential(*(IdentityBlock(out_channels, bn_momentum) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(clipped_relu(self.bn(self.conv(x))))


class ResCNN(nn.Module):
    """Deep Speaker ResCNN classifier: (N, 1, T, F) normalized filterbank energies -> (N, num_classes) logits.

    ``num_classes=None`` gives the embedding network alone (N, embedding_dim), 24,172,288 trainable
    parameters at paper widths; a 10-speaker head brings it to 24,177,418.
    """

    def __init__(
        self, num_classes: int | None = 10, widths: Sequence[int] = PAPER_WIDTHS, embedding_dim: int = 512,
        num_filters: int = 64, dropout: float = 0.5, bn_momentum: float = KERAS_BN_MOMENTUM,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"model.widths must be four positive channel counts, got {list(widths)}")
        if num_filters % 16:
            raise ValueError(f"num_filters={num_filters} must be divisible by 16 (four stride-2 stages)")
        channels = (1, *widths)
        self.stages = nn.Sequential(
            *(ConvResStage(channels[i], channels[i + 1], bn_momentum=bn_momentum) for i in range(4))
        )
        self.affine = nn.Linear(widths[-1] * (num_filters // 16), embedding_dim)
        self.num_classes = num_classes
        self.head = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding_dim, num_classes)) if num_classes else None
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)  # (N, C, T/16, F/16)
        n, c, t, f = x.shape
        x = x.permute(0, 2, 3, 1).reshape(n, t, f * c)  # time-major, as Keras' NHWC reshape
        return self.affine(x.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.embed(x)
        return self.head(embedding) if self.head is not None else embedding


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
