"""The DeepCAM network against shared/spec/model.md and reference_state_dict.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastcam.errors import CheckpointError, ConfigError, FastcamError
from fastcam.model import (
    InputShapeError,
    build_model,
    load_reference_state_dict,
    to_reference_state_dict,
)
from fastcam.model.layers import BatchNorm, SepConv

# A verbatim copy of shared/spec/reference_state_dict.json, so the suite needs nothing outside the repo.
REFERENCE_KEYS_FILE = Path(__file__).resolve().parent / "data" / "reference_state_dict.json"
REFERENCE_PARAMETER_COUNT = 56_454_720


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A freshly built model that tests only read (no load, no optimizer step)."""
    torch.manual_seed(0)
    return build_model(in_channels=16, num_classes=3)


@pytest.fixture(scope="module")
def reference_shapes() -> dict[str, list[int]]:
    if not REFERENCE_KEYS_FILE.is_file():
        pytest.skip(f"reference key list not found at {REFERENCE_KEYS_FILE}")
    return json.loads(REFERENCE_KEYS_FILE.read_text())


def random_reference_state_dict(shapes: dict[str, list[int]], prefix: str = "") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            value = torch.randint(0, 10_000, shape, generator=generator, dtype=torch.long)
        else:
            value = torch.randn(shape, generator=generator)
        state[prefix + key] = value
    return state


# --- structure -------------------------------------------------------------


def test_parameter_count_matches_reference(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == REFERENCE_PARAMETER_COUNT


def test_state_dict_keys_and_shapes_match_reference(model, reference_shapes):
    state = to_reference_state_dict(model)
    assert len(reference_shapes) == 529
    assert set(state) == set(reference_shapes)
    mismatched = {
        key: (list(value.shape), reference_shapes[key])
        for key, value in state.items()
        if list(value.shape) != reference_shapes[key]
    }
    assert mismatched == {}


def test_block_layouts_drop_last_relu_and_append_bn_free_sepconv(model):
    def kinds(block: nn.Module) -> list[str]:
        return [type(layer).__name__ for layer in block.rep]

    encoder = model.xception_features
    # stride 2: last ReLU dropped, strided SepConv appended without BN
    assert kinds(encoder.block1) == ["SepConv", "BatchNorm", "ReLU", "SepConv", "BatchNorm", "SepConv"]
    assert encoder.block1.rep[5].conv1.stride == (2, 2)
    # middle flow: three triples minus the last ReLU, identity skip
    assert kinds(encoder.block4) == ["SepConv", "BatchNorm", "ReLU"] * 2 + ["SepConv", "BatchNorm"]
    assert encoder.block4.skip is None
    # block20 (grow_first=False, is_last): widen in the second conv, stride-1 SepConv appended
    block20 = encoder.block20
    assert kinds(block20) == ["SepConv", "BatchNorm", "ReLU", "SepConv", "BatchNorm", "SepConv"]
    assert (block20.rep[0].pointwise.in_channels, block20.rep[0].pointwise.out_channels) == (728, 728)
    assert (block20.rep[3].pointwise.in_channels, block20.rep[3].pointwise.out_channels) == (728, 1024)
    assert block20.rep[5].conv1.stride == (1, 1)
    assert model.upsample.conv1[6].bias is not None
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.ConvTranspose2d))


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_sepconv_keeps_size_at_any_dilation(dilation):
    conv = SepConv(4, 6, stride=1, dilation=dilation)
    assert conv.conv1.groups == 4
    assert conv.conv1.padding == (dilation, dilation)
    assert conv(torch.randn(1, 4, 9, 11)).shape == (1, 6, 9, 11)
    strided = SepConv(4, 6, stride=2, dilation=dilation)
    assert strided(torch.randn(1, 4, 10, 12)).shape == (1, 6, 5, 6)


def test_sync_batchnorm_conversion_keeps_reference_keys(reference_shapes):
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(build_model())
    wrappers = [m for m in converted.modules() if isinstance(m, BatchNorm)]
    assert wrappers and all(isinstance(w.bn, nn.SyncBatchNorm) for w in wrappers)
    assert set(to_reference_state_dict(converted)) == set(reference_shapes)


def test_build_model_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="in_channels"):
        build_model(in_channels=0)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(num_classes=2.5)  # type: ignore[arg-type]


def test_other_channel_and_class_counts():
    small = build_model(in_channels=4, num_classes=5)
    assert small.xception_features.conv1.in_channels == 4
    assert small.upsample.last_deconv[0].out_channels == 5


# --- initialisation ----------------------------------------------------------


def _relative_std_error(weight: torch.Tensor, expected_std: float) -> float:
    return abs(weight.std().item() - expected_std) / expected_std


@pytest.mark.parametrize(
    "name",
    [
        "xception_features.block4.rep.0.pointwise",  # 728 x 728 pointwise
        "xception_features.conv5.conv1",  # depthwise, fan-in 9
        "xception_features.block3.skip",
        "bottleneck.aspp2.atrous_convolution",  # 3x3 atrous, fan-in 2048*9
    ],
)
def test_encoder_and_aspp_convs_are_kaiming_normal_fan_in(model, name):
    weight = model.get_submodule(name).weight
    fan_in = weight[0].numel()
    assert _relative_std_error(weight, math.sqrt(2.0 / fan_in)) < 0.03
    assert abs(weight.mean().item()) < 0.03 * math.sqrt(2.0 / fan_in)


@pytest.mark.parametrize(
    "name",
    ["bottleneck.global_avg_pool.global_average_pool.1", "bottleneck.conv", "upsample.conv1.3"],
)
def test_other_convs_keep_pytorch_default_init(model, name):
    # PyTorch's default is kaiming_uniform(a=sqrt(5)): std 1/sqrt(3 fan_in),
    # clearly below Kaiming-normal's sqrt(2/fan_in).
    weight = model.get_submodule(name).weight
    fan_in = weight[0].numel()
    assert _relative_std_error(weight, 1.0 / math.sqrt(3 * fan_in)) < 0.03
    assert weight.abs().max().item() <= 1.0 / math.sqrt(fan_in) + 1e-7


def test_batchnorms_start_at_identity(model):
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == sum(1 for k in to_reference_state_dict(model) if k.endswith(".bn.weight"))
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
        assert norm.eps == 1e-5 and norm.momentum == 0.1


def test_global_pool_affine_starts_at_identity(model):
    affine = model.bottleneck.global_avg_pool.global_average_pool[2]
    assert affine.weights.shape == (256, 1, 1)
    assert torch.equal(affine.weights, torch.ones(256, 1, 1))
    assert torch.equal(affine.bias, torch.zeros(256, 1, 1))


# --- state dict round trip ---------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "module."])
def test_reference_state_dict_round_trip(reference_shapes, prefix):
    original = random_reference_state_dict(reference_shapes, prefix)
    target = build_model()
    load_reference_state_dict(target, original)
    written = to_reference_state_dict(target)
    assert set(written) == set(reference_shapes)
    for key, value in written.items():
        assert torch.equal(value, original[prefix + key]), key


def test_to_reference_state_dict_sees_through_compile_and_ddp(reference_shapes):
    plain = build_model()
    expected = to_reference_state_dict(plain)
    compiled = torch.compile(plain)  # lazy: nothing is compiled until called
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    assert list(to_reference_state_dict(compiled)) == list(expected)

    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(plain)
        assert all(k.startswith("module.") for k in wrapped.state_dict())
        written = to_reference_state_dict(wrapped)
        assert set(written) == set(reference_shapes)
        assert all(torch.equal(written[k], expected[k]) for k in expected)
        load_reference_state_dict(wrapped, random_reference_state_dict(reference_shapes, "module."))
    finally:
        if owns_group:
            dist.destroy_process_group()


def _mutated(shapes: dict[str, list[int]], change: str) -> tuple[dict[str, torch.Tensor], str]:
    state = random_reference_state_dict(shapes)
    key = "xception_features.block20.rep.3.pointwise.weight"
    if change == "shape":
        state[key] = torch.randn(1024, 728)
    elif change == "missing":
        del state[key]
    else:
        key = "xception_features.block21.rep.0.conv1.weight"
        state[key] = torch.randn(3)
    return state, key


@pytest.mark.parametrize("change", ["shape", "missing", "extra"])
def test_mismatched_state_dict_raises_checkpoint_error(reference_shapes, change):
    state, offending_key = _mutated(reference_shapes, change)
    target = build_model()
    before = target.xception_features.conv1.weight.clone()
    with pytest.raises(CheckpointError) as caught:
        load_reference_state_dict(target, state)
    message = str(caught.value)
    assert offending_key in message and "\n" not in message
    assert torch.equal(target.xception_features.conv1.weight, before), "a failed load must not change the model"


def test_non_tensor_entry_raises_checkpoint_error(reference_shapes):
    state = random_reference_state_dict(reference_shapes)
    state["conv2.weight"] = [[1.0]]
    with pytest.raises(CheckpointError, match="conv2.weight"):
        load_reference_state_dict(build_model(), state)


# --- forward and backward ----------------------------------------------------


@pytest.mark.parametrize("height, width", [(64, 96), (32, 48)])
def test_forward_backward_reaches_every_parameter(height, width):
    torch.manual_seed(0)
    net = build_model()
    inputs = torch.rand(2, 16, height, width)
    logits = net(inputs)
    assert logits.shape == (2, 3, height, width)
    nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, height, width))).backward()
    without_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert without_grad == []
    zero_grad = [n for n, p in net.named_parameters() if not p.grad.abs().sum() > 0]
    assert zero_grad == []


@pytest.mark.parametrize("shape", [(1, 16, 50, 96), (1, 16, 64, 100), (1, 15, 64, 96), (16, 64, 96)])
def test_bad_input_shape_raises_clear_error(model, shape):
    with pytest.raises(InputShapeError) as caught:
        model(torch.zeros(shape))
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FastcamError)
    assert str(shape[-2]) in str(caught.value)


def test_low_level_feature_is_rectified_block1_output():
    torch.manual_seed(0)
    net = build_model()
    seen: dict[str, torch.Tensor] = {}

    def remember(name):
        def hook(module, args, output):
            # clone: the network rectifies block1's output in place afterwards
            seen[name] = (args[0] if name == "decoder_low_level_input" else output).detach().clone()

        return hook

    net.xception_features.block1.register_forward_hook(remember("block1_output"))
    net.xception_features.block2.register_forward_hook(remember("block2_output"))
    net.xception_features.block20.register_forward_hook(remember("block20_output"))
    net.conv2.register_forward_hook(remember("decoder_low_level_input"))
    net(torch.rand(2, 16, 32, 48))

    assert (seen["block1_output"] < 0).any(), "block1 has end_relu=False"
    assert torch.equal(seen["decoder_low_level_input"], seen["block1_output"].clamp(min=0))
    assert seen["decoder_low_level_input"].shape == (2, 128, 8, 12)
    assert (seen["block2_output"] >= 0).all(), "block2 has end_relu=True"
    assert (seen["block20_output"] < 0).any(), "block20 has end_relu=False"


def test_global_pool_branch_broadcasts_to_input_size(model):
    branch = model.bottleneck.global_avg_pool
    features = torch.rand(2, 2048, 3, 5)
    with torch.no_grad():
        out = branch(features)
        pooled = branch.global_average_pool(features)
    assert out.shape == (2, 256, 3, 5)
    assert torch.equal(out, pooled.expand_as(out))
    assert not torch.equal(out[0], out[1])


@pytest.mark.slow
def test_full_size_forward_backward():
    torch.manual_seed(0)
    net = build_model()
    logits = net(torch.rand(1, 16, 768, 1152))
    assert logits.shape == (1, 3, 768, 1152)
    logits.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
