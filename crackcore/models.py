"""The three detectors of Table I: original CenterNet-R18 and the modified stride-1 ResNet-18, with and without AFF.

Reading of §IV-A and §III-A that this file commits to (the paper's Fig. 3 is not in the text we have):
- `modified`: the 7×7/2 stem and the max-pool are replaced by three 3×3/1 conv-BN-ReLU layers of 64 channels.
  "We reduce the resolution in the ResNet by 4×" is read as layer2 and layer3 keeping stride 2 and layer4
  set to stride 1 (no dilation), so the backbone ends at H/4 with 512 channels; two 4×4/2 transposed
  convolutions (256 then 128 channels, BN, ReLU, as CenterNet's deconvolution neck) bring it back to H×W. They
  start as bilinear upsampling (the paper leaves their init open; chosen on a validation split).
- Heads of the modified model: three stacked 3×3 convs (64 channels, ReLU, no BN) and one 1×1 conv; `hm` and
  `wh` do not share parameters. No offset head: at stride 1 the centre is the pixel centre.
- `modified_aff` (§III-C, eq. 4): P_img = conv3×3-BN-ReLU(image) with the neck's channel count; a 1×1 conv on
  [P_res, P_img] followed by a softmax over the two sources gives per-pixel weights (a, b), a + b = 1.
- Every model takes float images in [0, 1] and normalises them itself (ImageNet statistics), so callers,
  exporters and notebooks never have to remember a preprocessing constant.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import resnet18

VARIANTS = ("centernet_r18", "modified", "modified_aff")
STRIDE = {"centernet_r18": 4, "modified": 1, "modified_aff": 1}
INPUT_SIZE = {"centernet_r18": 384, "modified": 80, "modified_aff": 80}
# The stride-4 backbone of the modified model must come back exactly through two transposed convs; the original
# model pads its input to a multiple of 32 (as CenterNet does at test time) and crops the output back to H/4.
SIZE_MULTIPLE = 4
HM_PRIOR = 0.1  # initial heatmap probability: bias = -log((1 - p) / p) = -2.197, as in CenterNet / RetinaNet
# The size head regresses pixels (eq. 2); its 1×1 output is multiplied by WH_SCALE so that Adam's parameter-sized
# steps move a size by pixels, not by hundredths of one. Provisional until `make readings` has compared it on a
# validation split (README, "Readings and decisions").
WH_SCALE = 16.0
HEAD_INITS = ("default", "centernet")
# How the transposed convolutions start: a smooth upsampling (chosen on a validation split: README, "Readings and
# decisions"), or PyTorch's init, which every run before that reading trained with.
NECK_INITS = ("bilinear", "default")
# How the heatmap head's hidden 3×3 convs start (§IV-A leaves it open): PyTorch's init, under which each conv + ReLU
# passes on ~0.4 of its input's RMS (the modified model's three convs ~15× less), or He's, which keeps it.
HM_INITS = ("default", "he")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def deconv_bn_relu(cin: int, cout: int, init: str = "bilinear") -> nn.Sequential:
    """4×4 stride-2 transposed convolution that exactly doubles H and W (CenterNet's upsampling neck).

    init="bilinear" starts it as a random 1×1 projection followed by bilinear ×2 upsampling (the 4×4 kernel is the
    outer product of (1, 3, 3, 1)/4 with itself, the projection PyTorch's 1×1 init), as CenterNet's released
    DCN ResNets start theirs: the same parameters and function class, but no grid at the start. init="default"
    (PyTorch's) gives each of the four output phases its own random 2×2 taps, so an untrained neck paints a grid of
    period 2 per deconvolution, 4 output cells after two.
    """
    if init not in NECK_INITS:
        raise ValueError(f"unknown neck init {init!r}; choose one of {', '.join(NECK_INITS)}")
    up = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
    if init == "bilinear":
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4
        proj = torch.empty(cout, cin, 1, 1)
        nn.init.kaiming_uniform_(proj, a=math.sqrt(5))  # PyTorch's default for a 1×1 conv of cin inputs
        with torch.no_grad():
            up.weight.copy_(proj[:, :, 0, 0].T[:, :, None, None] * torch.outer(taps, taps))  # (cin, cout, 4, 4)
    return nn.Sequential(up, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def head(cin: int, cout: int, n_conv: int, mid: int = 64, bias: float | None = None,
         init: str = "default", hidden: str = "default") -> nn.Sequential:
    """Detection head: `n_conv` 3×3 convs with ReLU (no BatchNorm, §IV-A) and a 1×1 output conv.

    Hidden convs keep PyTorch's default init (a small one would shrink the signal ~40× per layer through the
    modified model's three stacked convs), or with hidden="he" start as He et al. (normal, fan-in, ReLU gain; bias 0)
    so that the signal keeps its scale through them. The output conv gets `bias` (the heatmap prior) when given; with
    init="centernet" it gets CenterNet's released regression init (weights std 0.001, bias 0), under which every
    size starts near 0 px and the size head collapses to one aspect ratio when trained from scratch.
    """
    if init not in HEAD_INITS:
        raise ValueError(f"unknown head init {init!r}; choose one of {', '.join(HEAD_INITS)}")
    if hidden not in HM_INITS:
        raise ValueError(f"unknown hm_init {hidden!r}; choose one of {', '.join(HM_INITS)}")
    layers: list[nn.Module] = []
    for i in range(n_conv):
        conv = nn.Conv2d(cin if i == 0 else mid, mid, 3, 1, 1)
        if hidden == "he":
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
    out = nn.Conv2d(mid, cout, 1)
    if bias is not None:
        nn.init.constant_(out.bias, bias)
    elif init == "centernet":
        nn.init.normal_(out.weight, std=0.001)
        nn.init.zeros_(out.bias)
    return nn.Sequential(*layers, out)


class Backbone(nn.Module):
    """ResNet-18 trunk: the original stride-32 one, or the modified stride-4 one of §IV-A."""

    def __init__(self, modified: bool):
        super().__init__()
        r = resnet18(weights=None)
        if modified:
            self.stem = nn.Sequential(conv_bn_relu(3, 64), conv_bn_relu(64, 64), conv_bn_relu(64, 64))
            r.layer4[0].conv1.stride = (1, 1)
            r.layer4[0].downsample[0].stride = (1, 1)
        else:
            self.stem = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = r.layer1, r.layer2, r.layer3, r.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


class AdaptiveFeatureFusion(nn.Module):
    """§III-C, eq. (4): P_fusion = a·P_res + b·P_img with (a, b) = softmax(conv1×1([P_res, P_img]))."""

    def __init__(self, channels: int):
        super().__init__()
        self.img = conv_bn_relu(3, channels)  # the one-layer shortcut from the input image
        self.weights = nn.Conv2d(2 * channels, 2, 1)

    def forward(self, p_res: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p_img = self.img(image)  # (B, C, H, W)
        ab = self.weights(torch.cat([p_res, p_img], 1)).softmax(1)  # (B, 2, H, W), a + b = 1 at every pixel
        return ab[:, :1] * p_res + ab[:, 1:] * p_img, ab


class CenterNet(nn.Module):
    """CenterNet detector (§III): backbone → upsampling neck → [AFF] → `hm`, `wh` (and `reg` at stride 4) heads."""

    def __init__(self, variant: str, wh_init: str = "default", wh_scale: float = WH_SCALE, neck_init: str = "bilinear",
                 hm_init: str = "default"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.variant, self.stride, self.input_size = variant, STRIDE[variant], INPUT_SIZE[variant]
        modified = variant != "centernet_r18"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = Backbone(modified)
        up = (256, 128) if modified else (256, 256, 256)
        self.neck = nn.Sequential(*(deconv_bn_relu(cin, cout, neck_init) for cin, cout in zip((512,) + up[:-1], up)))
        self.aff = AdaptiveFeatureFusion(up[-1]) if variant == "modified_aff" else None
        n_conv = 3 if modified else 1
        bias = -math.log((1 - HM_PRIOR) / HM_PRIOR)
        self.heads = nn.ModuleDict({"hm": head(up[-1], 1, n_conv, bias=bias, hidden=hm_init),
                                    "wh": head(up[-1], 2, n_conv, init=wh_init)})
        if not modified:
            self.heads["reg"] = head(up[-1], 2, n_conv, init="centernet")  # offsets live in [0, 1): start at 0
        # saved with the weights, so a checkpoint rebuilds its own size scale
        self.register_buffer("wh_scale", torch.tensor(float(wh_scale)))

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[2] % SIZE_MULTIPLE or x.shape[3] % SIZE_MULTIPLE:
            raise ValueError(f"{self.variant} needs H and W divisible by {SIZE_MULTIPLE}, got {x.shape[2]}×{x.shape[3]}")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs: `hm` logits (B, 1, H/s, W/s), `wh` (B, 2, ·) in output pixels, `reg`, and `aff` weights."""
        self.check_input(x)
        x = (x - self.mean) / self.std
        H, W = x.shape[2:]
        if self.stride == 4 and (H % 32 or W % 32):  # zero padding = the mean colour after normalisation
            x = F.pad(x, (0, -W % 32, 0, -H % 32))
        feat = self.neck(self.backbone(x))[..., :H // self.stride, :W // self.stride]  # (B, C, H/s, W/s)
        out = {}
        if self.aff is not None:
            feat, out["aff"] = self.aff(feat, x)
        out.update({name: h(feat) for name, h in self.heads.items()})
        out["wh"] = out["wh"] * self.wh_scale  # (B, 2, H/s, W/s) in output pixels
        return out

    def init_wh_bias(self, mean_wh) -> None:
        """Start every predicted size at the training set's mean (w, h) in output pixels (a prior, as HM_PRIOR)."""
        b = torch.as_tensor(mean_wh, dtype=torch.float32) / self.wh_scale
        with torch.no_grad():
            self.heads["wh"][-1].bias.copy_(b)


def build_model(variant: str, imagenet: str | Path | None = None, wh_init: str = "default",
                wh_scale: float = WH_SCALE, neck_init: str = "bilinear", hm_init: str = "default") -> CenterNet:
    """One of Table I's three detectors, from scratch or with a local torchvision ResNet-18 state dict."""
    model = CenterNet(variant, wh_init, wh_scale, neck_init, hm_init)
    if imagenet is not None:
        load_imagenet(model, imagenet)
    return model


def load_imagenet(model: CenterNet, path: str | Path) -> list[str]:
    """Copy matching ResNet-18 weights from a local file (nothing is downloaded); returns the keys loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    ours = model.backbone.state_dict()
    renamed = {("stem.0." + k[6:] if k.startswith("conv1.") else "stem.1." + k[4:] if k.startswith("bn1.") else k): v
               for k, v in state.items()}
    if model.variant != "centernet_r18":  # the modified stem has no 7×7 conv to receive
        renamed = {k: v for k, v in renamed.items() if not k.startswith("stem.")}
    take = {k: v for k, v in renamed.items() if k in ours and ours[k].shape == v.shape}
    if not any(k.startswith("layer") for k in take):
        raise ValueError(f"{path} does not look like a torchvision ResNet-18 state dict")
    model.backbone.load_state_dict(take, strict=False)
    return sorted(take)


def model_stats(model: nn.Module, input_size: int | None = None) -> dict[str, float]:
    """Table I's "Volume": parameters, fp32 state-dict size in MB (10^6 bytes) and GFLOPs for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    buf = io.BytesIO()
    torch.save({k: v.float() for k, v in model.state_dict().items()}, buf)
    size = input_size or model.input_size
    p = next(model.parameters())
    x = torch.zeros(1, 3, size, size, device=p.device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    model.train(was_training)
    return {"params": sum(q.numel() for q in model.parameters()), "volume_mb": buf.tell() / 1e6,
            "gflops": fc.get_total_flops() / 1e9}


def sigmoid_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """Heatmap logits → probabilities, clamped as in the loss (§III-A) so decoding sees what training saw."""
    return torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)


__all__ = ["VARIANTS", "STRIDE", "INPUT_SIZE", "CenterNet", "AdaptiveFeatureFusion", "build_model", "load_imagenet",
           "model_stats", "sigmoid_heatmap"]
