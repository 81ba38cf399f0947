"""The backbone zoo: registry, parameter counts, EfficientNet scaling, forward/backward."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from facesphere.errors import ConfigError
from facesphere.models.backbones import (
    BACKBONES,
    create_backbone,
    list_backbones,
    register_backbone,
)
from facesphere.models.backbones.efficientnet import efficientnet_scaling
from facesphere.models.summary import count_flops, count_params

EXPECTED_NAMES = {
    "mobilefacenet",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "shufflenetv2_x0_5",
    "shufflenetv2_x1_0",
    "snet49",
    "snet146",
    "inception_lite",
    "vit_t",
    "vit_s",
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # One thread: on a shared 2-core machine, two OpenMP threads spin and run far slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(previous)


def _params_on_meta(name: str, **kwargs: object) -> int:
    with torch.device("meta"):
        model = create_backbone(name, **kwargs)
    return count_params(model)


def test_every_model_is_registered() -> None:
    assert set(list_backbones()) >= EXPECTED_NAMES
    assert list_backbones() == sorted(list_backbones())


@pytest.mark.parametrize(
    ("name", "embedding_dim", "published"),
    [
        ("mobilefacenet", 128, 0.99e6),  # Chen et al. 2018
        ("iresnet50", 512, 43.6e6),  # insightface arcface_torch
        ("iresnet100", 512, 65.2e6),
    ],
)
def test_parameter_counts_match_published(name: str, embedding_dim: int, published: float) -> None:
    params = _params_on_meta(name, embedding_dim=embedding_dim)
    assert abs(params - published) / published < 0.05, f"{name}: {params} vs {published}"


def test_iresnet_depths_order_parameter_counts() -> None:
    counts = [_params_on_meta(f"iresnet{d}") for d in (18, 34, 50, 100)]
    assert counts == sorted(counts) and len(set(counts)) == 4


def _round8(value: float) -> int:
    """Nearest multiple of 8, ties up, at least 8 and not below 90% of the value."""
    out = max(8, math.floor(value / 8 + 0.5) * 8)
    return out + 8 if out < 0.9 * value else out


@pytest.mark.parametrize("phi", [0, 1, 2, 3])
def test_efficientnet_compound_scaling(phi: int) -> None:
    alpha, beta, gamma = 1.2, 1.1, 1.15
    # EfficientNet-B0 (Tan and Le, 2019, table 1): stem, seven stage widths, head; repeats.
    b0_widths = [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    b0_repeats = [1, 2, 2, 3, 3, 4, 1]
    scaling = efficientnet_scaling(phi)
    assert list(scaling.widths) == [_round8(c * beta**phi) for c in b0_widths]
    assert list(scaling.depths) == [math.ceil(n * alpha**phi) for n in b0_repeats]
    assert scaling.resolution == round(112 * gamma**phi / 8) * 8
    assert all(w % 8 == 0 for w in scaling.widths)
    model = create_backbone(f"efficientnet_b{phi}", embedding_dim=32)
    assert model.input_size == (scaling.resolution, scaling.resolution)
    # The built network really has the scaled number of MBConv blocks and head width.
    assert len(model.blocks) == sum(scaling.depths)
    assert model.head[0].out_channels == scaling.widths[-1]


@pytest.mark.parametrize("name", sorted(list_backbones()))
def test_forward_backward(name: str) -> None:
    model = create_backbone(name, embedding_dim=128)
    assert model.embedding_dim == 128
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[0] == 2
    out = model(x)
    assert out.shape == (2, 128)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 128)


def test_default_embedding_dim_and_input_size() -> None:
    model = create_backbone("mobilefacenet")
    assert model.embedding_dim == 512 and model.input_size == (112, 112)


@pytest.mark.parametrize("name", ["mobilefacenet", "iresnet18", "snet49", "inception_lite"])
def test_other_input_size(name: str) -> None:
    model = create_backbone(name, embedding_dim=64, input_size=(96, 96)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 64)


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        create_backbone("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message and "iresnet50" in message and "vit_t" in message


def test_register_backbone_decorator() -> None:
    name = "test_tiny_backbone"

    @register_backbone(name)
    def tiny(embedding_dim: int = 512) -> nn.Module:
        return nn.Linear(4, embedding_dim)

    try:
        assert name in list_backbones()
        assert create_backbone(name, embedding_dim=7).out_features == 7
    finally:
        BACKBONES._factories.pop(name, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pos_embed": "alibi"},
        {"attention": "performer"},
        {"pos_embed": "relative_bias", "attention": "linear"},
    ],
)
def test_vit_rejects_bad_options(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        create_backbone("vit_t", **kwargs)


VIT_OPTIONS = [
    (pos_embed, attention)
    for pos_embed in ("none", "learned", "sincos2d", "relative_bias", "rope2d")
    for attention in ("softmax", "linear")
    if (pos_embed, attention) != ("relative_bias", "linear")  # refused: see the test above
]


@pytest.mark.parametrize(("pos_embed", "attention"), VIT_OPTIONS)
def test_vit_options_run(pos_embed: str, attention: str) -> None:
    model = create_backbone(
        "vit_t", embedding_dim=32, depth=2, pos_embed=pos_embed, attention=attention
    )
    out = model(torch.randn(2, 3, 112, 112))
    out.sum().backward()
    assert out.shape == (2, 32)
    if pos_embed == "relative_bias":
        assert model.blocks[0].attn.relative_bias.table.grad is not None


def test_vit_position_encoding_changes_output() -> None:
    # Without position encoding, softmax self-attention is permutation equivariant over
    # tokens; with RoPE it is not. Compare token maps for a patch-shuffled input.
    x = torch.randn(1, 3, 112, 112)
    patches = x.unfold(2, 8, 8).unfold(3, 8, 8)  # (1, 3, 14, 14, 8, 8)
    flipped = patches.flip(3).permute(0, 1, 2, 4, 3, 5).reshape(1, 3, 112, 112)
    for pos_embed, equivariant in (("none", True), ("rope2d", False)):
        torch.manual_seed(1)
        model = create_backbone("vit_t", depth=2, pos_embed=pos_embed).eval()
        with torch.no_grad():
            a = model.forward_features(x).flip(3)
            b = model.forward_features(flipped)
        assert torch.allclose(a, b, atol=1e-4) == equivariant, pos_embed


@pytest.mark.parametrize(
    ("name", "c4_channels", "c5_channels"),
    [("snet49", 120, 512), ("snet146", 264, 528), ("shufflenetv2_x1_0", 232, 1024)],
)
def test_snet_c4_c5_shapes(name: str, c4_channels: int, c5_channels: int) -> None:
    model = create_backbone(name).eval()
    with torch.no_grad():
        c4, c5 = model.forward_c4_c5(torch.randn(1, 3, 320, 320))
    assert c4.shape == (1, c4_channels, 20, 20)
    assert c5.shape == (1, c5_channels, 10, 10)


def test_snet_uses_5x5_depthwise() -> None:
    def depthwise_kernels(model: nn.Module) -> set[int]:
        return {
            m.kernel_size[0]
            for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1
        }

    assert depthwise_kernels(create_backbone("snet49")) == {5}
    assert depthwise_kernels(create_backbone("shufflenetv2_x0_5")) == {3}


def test_count_flops_and_params_on_small_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 36, 5)
    )
    # conv: 2 * (3*3*3) MACs per output, 8*6*6 outputs; linear: 2 * 288 * 5.
    expected = 2 * 27 * 8 * 36 + 2 * 8 * 36 * 5
    assert count_flops(model, (6, 6)) == expected
    assert count_flops(model, (6, 6), batch_size=2) == 2 * expected
    with pytest.raises(ValueError, match="width, height"):
        count_flops(model, (3, 6, 6))
    assert count_params(model) == 3 * 3 * 3 * 8 + 8 * 36 * 5 + 5
    assert model.training  # restored


def test_count_flops_uses_model_input_size() -> None:
    with torch.device("meta"):
        model = create_backbone("iresnet18")
    flops = count_flops(model)
    # IResNet-18 at 112x112 is about 5.2 GFLOPs (2.6 GMACs) in torch's counting.
    assert 4.5e9 < flops < 6e9


def test_concat_shuffled_is_cat_then_channel_shuffle_in_both_layouts() -> None:
    from facesphere.models.backbones.shufflenet import concat_shuffled

    a, b = torch.randn(2, 6, 5, 7), torch.randn(2, 6, 5, 7)
    # the textbook channel shuffle (groups=2) of the concatenation
    expected = torch.cat((a, b), 1).view(2, 2, 6, 5, 7).transpose(1, 2).reshape(2, 12, 5, 7)
    assert torch.equal(concat_shuffled(a, b), expected)
    cl = torch.channels_last
    # as in a stride-1 unit: `a` is the kept half, a channel slice of a channels-last input
    kept = torch.cat((a, b), 1).contiguous(memory_format=cl)[:, :6]
    nhwc = concat_shuffled(kept, b.contiguous(memory_format=cl))
    assert torch.equal(nhwc, expected)
    assert nhwc.is_contiguous(memory_format=cl)  # no copy back to NCHW
