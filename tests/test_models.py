"""The three Table I detectors: shapes, fusion weights, initialisation, gradients, errors, volume."""
import pytest
import torch

from crackcore.labels import encode
from crackcore.losses import centernet_loss
from crackcore.models import VARIANTS, build_model, load_imagenet, model_stats

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {v: build_model(v).eval() for v in VARIANTS}


@pytest.mark.parametrize("size", [80, 384])
def test_output_shapes(models, size):
    for v, m in models.items():
        stride = 4 if v == "centernet_r18" else 1
        with torch.no_grad():
            out = m(torch.rand(1, 3, size, size))
        s = size // stride
        assert out["hm"].shape == (1, 1, s, s) and out["wh"].shape == (1, 2, s, s)
        assert ("reg" in out) == (v == "centernet_r18")
        assert ("aff" in out) == (v == "modified_aff")


def test_heatmap_bias_prior(models):
    for m in models.values():
        b = m.heads["hm"][-1].bias.item()
        assert torch.sigmoid(torch.tensor(b)).item() == pytest.approx(0.1, abs=1e-6)


def test_fusion_weights_sum_to_one_everywhere(models):
    with torch.no_grad():
        ab = models["modified_aff"](torch.rand(2, 3, 40, 48))["aff"]
    assert ab.shape == (2, 2, 40, 48)
    assert torch.allclose(ab.sum(1), torch.ones(2, 40, 48), atol=1e-6)
    assert (ab >= 0).all()


def test_modified_architecture_matches_section_iv_a(models):
    m = models["modified"]
    convs = [l for l in m.backbone.stem.modules() if isinstance(l, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in convs] == [((3, 3), (1, 1), 64)] * 3
    assert not any(isinstance(l, torch.nn.MaxPool2d) for l in m.backbone.modules())
    for name in ("hm", "wh"):  # three 3×3 convs + one 1×1, no BatchNorm in the heads
        layers = list(m.heads[name])
        ks = [l.kernel_size for l in layers if isinstance(l, torch.nn.Conv2d)]
        assert ks == [(3, 3)] * 3 + [(1, 1)]
        assert not any(isinstance(l, torch.nn.BatchNorm2d) for l in layers)
    assert m.heads["hm"][0].weight.data_ptr() != m.heads["wh"][0].weight.data_ptr()


@pytest.mark.parametrize("bad, msg", [((1, 1, 80, 80), "3, H, W"), ((1, 3, 82, 80), "divisible by 4"),
                                      ((3, 80, 80), "3, H, W")])
def test_bad_inputs_are_clear_errors(models, bad, msg):
    with pytest.raises(ValueError, match=msg):
        models["modified"](torch.rand(*bad))


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        build_model("resnet50")


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant):
    torch.manual_seed(0)
    m = build_model(variant).train()
    size = 64
    x = torch.rand(2, 3, size, size)
    stride = m.stride
    enc = [encode([[8, 8, 30, 24], [36, 40, 60, 58]], (size // stride,) * 2, stride) for _ in range(2)]
    tg = {k: torch.stack([e[k] for e in enc]) for k in enc[0]}
    centernet_loss(m(x), tg)["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_imagenet_init_from_local_file(tmp_path):
    from torchvision.models import resnet18
    torch.manual_seed(1)
    ref = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    m = build_model("centernet_r18", imagenet=path)
    assert torch.equal(m.backbone.stem[0].weight, ref.conv1.weight)
    assert torch.equal(m.backbone.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    loaded = load_imagenet(build_model("modified"), path)
    assert not any(k.startswith("stem") for k in loaded) and "layer1.0.conv1.weight" in loaded
    torch.save({"foo": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="ResNet-18"):
        build_model("modified", imagenet=tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError):
        build_model("modified", imagenet=tmp_path / "missing.pth")


def test_model_stats_counts_parameters_and_volume(models):
    m = models["modified_aff"]
    s = model_stats(m)
    n = sum(p.numel() for p in m.parameters())
    assert s["params"] == n
    # fp32 state dict: 4 bytes per parameter and BN buffer, plus a little pickle overhead
    n_buffers = sum(b.numel() for b in m.state_dict().values()) - n
    assert 4 * (n + n_buffers) / 1e6 < s["volume_mb"] < 4 * (n + n_buffers) / 1e6 * 1.01
    assert model_stats(models["centernet_r18"])["gflops"] > 0


def test_bilinear_neck_starts_as_a_projection_then_bilinear_upsampling():
    import torch.nn.functional as F

    from crackcore.models import deconv_bn_relu
    torch.manual_seed(0)
    up = deconv_bn_relu(6, 6, "bilinear")[0]
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4
    kernel = torch.outer(taps, taps)  # (4, 4), sums to 4: a 2×2 set of taps per output phase, each summing to 1
    proj = up.weight[:, :, 1, 1] / kernel[1, 1]  # (cin, cout)
    assert torch.allclose(up.weight, proj[:, :, None, None] * kernel, atol=1e-7)  # one projection, one kernel
    with torch.no_grad():  # identity projection: the deconvolution is bilinear ×2 (half-pixel centres)
        up.weight.copy_(torch.eye(6)[:, :, None, None] * kernel)
        x = torch.randn(2, 6, 5, 7)
        golden = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        y = up(x)
    assert y.shape == golden.shape
    assert torch.allclose(y[..., 1:-1, 1:-1], golden[..., 1:-1, 1:-1], atol=1e-6)  # the border pads with zeros


@pytest.mark.parametrize("neck_init, grid", [("default", True), ("bilinear", False)])
def test_untrained_neck_paints_a_grid_only_with_the_default_init(neck_init, grid):
    torch.manual_seed(0)
    neck = build_model("modified", neck_init=neck_init).neck.eval()
    with torch.no_grad():
        y = neck(torch.ones(1, 512, 8, 8))[..., 4:-4, 4:-4]  # (1, 128, 24, 24): a flat input, borders cut
    by_phase = y.reshape(1, 128, 6, 4, 6, 4).mean((2, 4))  # (1, 128, 4, 4): each channel's mean per phase
    spread = (by_phase.amax((2, 3)) - by_phase.amin((2, 3))).max()
    assert (spread > 1e-3) if grid else (spread < 1e-5)


def test_unknown_neck_init_is_a_clear_error():
    from crackcore.engine.config import TrainConfig
    with pytest.raises(ValueError, match="neck_init"):
        TrainConfig(neck_init="nearest")
    with pytest.raises(ValueError, match="neck init"):
        build_model("modified", neck_init="nearest")


@pytest.mark.parametrize("hm_init", ["default", "he"])
def test_heatmap_head_hidden_start_sets_how_much_signal_reaches_its_output(hm_init):
    """PyTorch's init passes ~0.4 of the RMS through each conv + ReLU (variance × 1/3 × 1/2), He's about all of it."""
    torch.manual_seed(0)
    hm = build_model("modified", hm_init=hm_init).heads["hm"]
    x = torch.randn(2, 128, 20, 20).relu()  # (B, C, H, W): post-ReLU features as the neck gives them
    with torch.no_grad():
        y = hm[:-1](x)  # the three hidden convs with their ReLUs
    ratio = float(y.pow(2).mean().sqrt() / x.pow(2).mean().sqrt())
    assert (0.3 < ratio < 1.5) if hm_init == "he" else (0.03 < ratio < 0.15)  # ≈ 0.41³ ≈ 0.07 for PyTorch's
    if hm_init == "he":  # the heatmap head alone: the size head keeps PyTorch's init (its random biases)
        model = build_model("modified", hm_init=hm_init)
        assert all(not c.bias.any() for c in model.heads["hm"][:-1] if isinstance(c, torch.nn.Conv2d))
        assert all(c.bias.abs().min() > 0 for c in model.heads["wh"][:-1] if isinstance(c, torch.nn.Conv2d))


def test_unknown_hm_init_is_a_clear_error():
    from crackcore.engine.config import TrainConfig
    with pytest.raises(ValueError, match="hm_init"):
        TrainConfig(hm_init="xavier")
    with pytest.raises(ValueError, match="hm_init"):
        build_model("modified", hm_init="xavier")
