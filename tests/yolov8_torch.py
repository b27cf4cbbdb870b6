"""A YOLOv8n-architecture detector in plain PyTorch, with seeded random weights, for the ``yolo`` tests.

The block structure is Ultralytics' (``yolov8.yaml`` at width 0.25, depth 0.33): Conv (BN,
SiLU), C2f, SPPF, nearest upsampling and concatenation in the PAN neck, and the decoupled Detect
head with DFL decoding and anchors inside the graph, so its ONNX export has the ops and output
([1, 4 + classes, anchors], boxes cx cy w h in input pixels, sigmoid scores) of a real export.
Neither torchvision nor ultralytics is needed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Conv(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))  # type: ignore[no-any-return]


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1, self.cv2 = Conv(c, c, 3), Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y  # type: ignore[no-any-return]


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int, shortcut: bool) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))  # type: ignore[no-any-return]


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c = c1 // 2
        self.cv1, self.cv2 = Conv(c1, c, 1), Conv(c * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))  # type: ignore[no-any-return]


class DFL(nn.Module):
    """Distribution focal loss integral: the expected distance over 16 bins, as a fixed 1x1 conv."""

    def __init__(self, bins: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(bins, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1)
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.bins, a).transpose(2, 1).softmax(1)).view(b, 4, a)  # type: ignore[no-any-return]


class Detect(nn.Module):
    points: torch.Tensor  # [1, 2, anchors] anchor centres in grid cells
    scale: torch.Tensor  # [1, anchors] the stride of each anchor

    def __init__(
        self, classes: int, channels: tuple[int, ...], strides: tuple[int, ...], size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.classes, self.bins, self.strides = classes, 16, strides
        c2, c3 = max(16, channels[0] // 4, self.bins * 4), max(channels[0], min(classes, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.bins, 1)) for c in channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, classes, 1)) for c in channels
        )
        self.dfl = DFL(self.bins)
        # Anchor centres and strides for the input size, constants of the graph as in an export.
        points, scale = [], []
        for stride in strides:
            columns = torch.arange(size[0] // stride, dtype=torch.float32) + 0.5
            rows = torch.arange(size[1] // stride, dtype=torch.float32) + 0.5
            sy, sx = torch.meshgrid(rows, columns, indexing="ij")
            points.append(torch.stack((sx, sy), -1).view(-1, 2))
            scale.append(torch.full((len(rows) * len(columns), 1), float(stride)))
        self.register_buffer("points", torch.cat(points).T.unsqueeze(0))
        self.register_buffer("scale", torch.cat(scale).T)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        b = maps[0].shape[0]
        outs = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(maps)]
        flat = torch.cat([o.view(b, 4 * self.bins + self.classes, -1) for o in outs], 2)
        box, cls = torch.split(flat, [4 * self.bins, self.classes], 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = self.points - lt, self.points + rb
        xywh = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.scale
        return torch.cat((xywh, cls.sigmoid()), 1)


class YoloV8n(nn.Module):
    def __init__(self, classes: int = 80, size: tuple[int, int] = (320, 320)) -> None:
        super().__init__()
        self.b0, self.b1, self.b2 = Conv(3, 16, 3, 2), Conv(16, 32, 3, 2), C2f(32, 32, 1, True)
        self.b3, self.b4 = Conv(32, 64, 3, 2), C2f(64, 64, 2, True)
        self.b5, self.b6 = Conv(64, 128, 3, 2), C2f(128, 128, 2, True)
        self.b7, self.b8, self.b9 = Conv(128, 256, 3, 2), C2f(256, 256, 1, True), SPPF(256, 256)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12, self.h15 = C2f(384, 128, 1, False), C2f(192, 64, 1, False)
        self.h16, self.h18 = Conv(64, 64, 3, 2), C2f(192, 128, 1, False)
        self.h19, self.h21 = Conv(128, 128, 3, 2), C2f(384, 256, 1, False)
        self.detect = Detect(classes, (64, 128, 256), (8, 16, 32), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        n4 = self.h12(torch.cat((self.up(p5), p4), 1))
        n3 = self.h15(torch.cat((self.up(n4), p3), 1))
        m4 = self.h18(torch.cat((self.h16(n3), n4), 1))
        m5 = self.h21(torch.cat((self.h19(m4), p5), 1))
        return self.detect([n3, m4, m5])  # type: ignore[no-any-return]


def _scale_output(branch: nn.Module, gain: float, bias: float) -> None:
    """Multiply the weights of a head branch's last convolution by ``gain`` and set its bias."""
    conv = list(branch.children())[-1]
    assert isinstance(conv, nn.Conv2d)
    assert conv.bias is not None
    conv.weight.mul_(gain)
    conv.bias.fill_(bias)


def seeded(frames: torch.Tensor, seed: int = 0, classes: int = 80) -> YoloV8n:
    """Random weights whose activations stay of order one through the depth, so that outputs depend
    on the image as a trained model's do: He-initialised convolutions, random batch-norm scales,
    and batch-norm statistics measured on ``frames`` ([B, 3, H, W], 0..1). The head's bias follows
    Ultralytics' initialisation for the boxes (1.0); class logits start at -4, so that a few
    anchors score high and most low."""
    torch.manual_seed(seed)
    model = YoloV8n(classes, (frames.shape[-1], frames.shape[-2]))
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.weight.requires_grad:
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.6, 1.0)
            module.bias.data.uniform_(-0.2, 0.2)
            module.momentum = None  # a cumulative average: the statistics of all of ``frames``
            module.reset_running_stats()
    with torch.no_grad():
        model.train()(frames)
        # Spread the head's outputs as training does: box bins of differing weight, and class
        # logits spread around -4, so that a few anchors score high and most low.
        for boxes, scores in zip(model.detect.cv2, model.detect.cv3, strict=True):
            _scale_output(boxes, 1.0, 1.0)
            _scale_output(scores, 1.5, -4.0)
    return model.eval()


def at_size(model: YoloV8n, size: tuple[int, int]) -> YoloV8n:
    """The same weights with the anchor points and strides of another input size (width, height), as
    Ultralytics makes them when it exports a model at that size."""
    other = YoloV8n(model.detect.classes, size)
    other.load_state_dict(
        {k: v for k, v in model.state_dict().items() if k not in ("detect.points", "detect.scale")}, strict=False
    )
    return other.eval()


def export_onnx(model: nn.Module, path: Path, size: tuple[int, int] = (320, 320)) -> Path:
    """The ONNX file an Ultralytics export writes: input ``images`` [1, 3, height, width], output ``output0``."""
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size[1], size[0]),),
            str(path),
            input_names=["images"],
            output_names=["output0"],
            opset_version=17,
            dynamo=False,
        )
    return path
