"""Observation encoders: one feature vector per observation step, the input of the condition tokens.

- :class:`ResNet18GN`: the paper's image backbone (ResNet-18, BatchNorm replaced by GroupNorm, global
  pooling replaced by spatial-softmax keypoints). Written here because torchvision does not import
  beside the pinned torch.
- :class:`SmallCNN`: four conv layers with the same spatial-softmax head, trainable on a CPU.
- Low-dim: the privileged keypoint vector, passed through (already normalized).

Images arrive as uint8-range floats in [0, 1], [B, To, 3, H, W]; training takes a random crop, evaluation
the centre crop (Diffusion Policy's augmentation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sag_ros.policy.config import EncoderConfig, EncoderKind


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=max(1, channels // 16), num_channels=channels)


class SpatialSoftmax(nn.Module):
    """Feature map [B, C, H, W] -> expected (x, y) of K learned keypoint heat maps, flattened [B, 2K]."""

    def __init__(self, channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.to_keypoints = nn.Conv2d(channels, num_keypoints, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        heat = self.to_keypoints(features)
        b, k, h, w = heat.shape
        attention = heat.flatten(2).softmax(dim=-1)  # (B, K, H*W)
        ys = torch.linspace(-1.0, 1.0, h, device=heat.device)
        xs = torch.linspace(-1.0, 1.0, w, device=heat.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((grid_x.flatten(), grid_y.flatten()), dim=-1)  # (H*W, 2)
        return (attention @ grid).reshape(b, 2 * k)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _group_norm(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _group_norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18GN(nn.Module):
    """ResNet-18 trunk (no pooling, no classifier) with GroupNorm: [B, 3, H, W] -> [B, 512, H/32, W/32]."""

    out_channels = 512

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), _group_norm(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class SmallCNN(nn.Module):
    """3x3 conv layers with GroupNorm, stride 2 but the last: 84 px -> an 11x11 map for the keypoints.

    (ResNet-18 ends at 3x3 on the same crop; spatial softmax still gives sub-cell keypoint positions.)
    """

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        layers, c_in = [], 3
        for i, c_out in enumerate(channels):
            stride = 1 if i == len(channels) - 1 else 2
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), _group_norm(c_out), nn.ReLU()]
            c_in = c_out
        self.net = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def crop_images(images: torch.Tensor, size: int, random: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Square crop of [N, C, H, W]: one random offset per image in training, the centre otherwise."""
    n, _, h, w = images.shape
    if size == h and size == w:
        return images
    if not random:
        top, left = (h - size) // 2, (w - size) // 2
        return images[:, :, top:top + size, left:left + size]
    device = images.device
    tops = torch.randint(0, h - size + 1, (n,), generator=generator).to(device)
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator).to(device)
    rows = tops[:, None] + torch.arange(size, device=device)  # (N, size)
    cols = lefts[:, None] + torch.arange(size, device=device)
    batch = torch.arange(n, device=device)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class ObservationEncoder(nn.Module):
    """Normalized observation dict -> features [B, To, feature_dim]."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        if config.kind is EncoderKind.LOWDIM:
            self.backbone = None
            return
        self.backbone = ResNet18GN() if config.kind is EncoderKind.RESNET18 else SmallCNN(config.cnn_channels)
        self.keypoints = SpatialSoftmax(self.backbone.out_channels, config.num_keypoints)
        self.project = nn.Linear(2 * config.num_keypoints, config.image_feature_dim)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.backbone is None:
            return obs["keypoints"]
        images = obs["image"]
        b, t = images.shape[:2]
        flat = crop_images(images.flatten(0, 1), self.config.crop_size, random=self.training)
        features = self.project(self.keypoints(self.backbone(flat))).view(b, t, -1)
        return torch.cat((features, obs["state"]), dim=-1)
