"""``compare_models``: costs against hand-worked counts, ratios as reported, output agreement by plain PyTorch.

Latencies are never judged here (the machine is shared and noisy): only that the reported speedup is
the ratio of the reported latencies. Timing runs are kept to one round and one warm-up call.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sepconv.convert import fold_batchnorm
from sepconv.data import load_dataset
from sepconv.deploy import compare_models
from sepconv.models import create_model

FAST = {"repeats": 1, "warmup_calls": 1}
# The demo CNNs at a quarter of their width or less: the same layers, a fraction of the compute.
TINY = {"widths": (4, 8, 8, 16)}
# The agreement images are run in batches of 32 by compare_models; the independent references below
# use at most 32 images so they run the same batch through the same kernels.
IMAGES = 32


def standard_pair() -> tuple[nn.Module, nn.Module]:
    """A 3x3 convolution and its depthwise-separable counterpart, both ending in a 4-class linear head."""
    torch.manual_seed(0)
    standard = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    separable = nn.Sequential(
        nn.Conv2d(3, 3, 3, padding=1, groups=3),
        nn.Conv2d(3, 8, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    return standard, separable


def trained_statistics_cnn() -> nn.Module:
    """standard_cnn with BatchNorm running statistics moved away from (0, 1), so folding them is not a no-op."""
    torch.manual_seed(3)
    model = create_model("standard_cnn", **TINY)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(2.0 * torch.randn(16, 1, 28, 28) + 0.5)
    return model.eval()


def reference_agreement(model_a: nn.Module, model_b: nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """Relative error ||b - a|| / ||a|| and top-1 agreement, computed directly in eval mode."""
    model_a, model_b = copy.deepcopy(model_a).eval(), copy.deepcopy(model_b).eval()
    with torch.no_grad():
        logits_a, logits_b = model_a(images), model_b(images)
    relative_error = ((logits_b - logits_a).pow(2).sum().sqrt() / logits_a.pow(2).sum().sqrt()).item()
    top1 = (logits_a.argmax(1) == logits_b.argmax(1)).double().mean().item()
    return relative_error, top1


def test_costs_equal_hand_worked_counts_and_ratios_are_as_reported():
    standard, separable = standard_pair()
    result = compare_models(standard, separable, input_size=(3, 8, 8), **FAST)
    document = result.to_dict()

    # Parameters: counted directly, and by hand: 3*8*9 + 8 + 8*4 + 4 = 260; 3*9 + 3 + 3*8 + 8 + 8*4 + 4 = 98.
    assert document["a"]["params"] == sum(p.numel() for p in standard.parameters()) == 260
    assert document["b"]["params"] == sum(p.numel() for p in separable.parameters()) == 98
    # MACs per image on 8x8 ('same' padding): a conv does H*W*C_out*(C_in/groups)*k*k, the linear 8*4.
    macs_standard = 8 * 8 * 8 * 3 * 3 * 3 + 8 * 4  # 13,856
    macs_separable = 8 * 8 * 3 * 1 * 3 * 3 + 8 * 8 * 8 * 3 * 1 * 1 + 8 * 4  # 1,728 + 1,536 + 32 = 3,296
    assert document["a"]["macs"] == macs_standard
    assert document["b"]["macs"] == macs_separable
    assert document["mac_ratio"] == macs_standard / macs_separable
    # Last spatial layer: one 3x3 convolution (then a 1x1 one for B) sees 3x3 input pixels.
    assert document["a"]["receptive_field"] == [3, 3]
    assert document["b"]["receptive_field"] == [3, 3]

    latency_a, latency_b = document["a"]["latency_ms"], document["b"]["latency_ms"]
    for phase in ("forward", "forward_backward"):
        assert latency_a[phase] > 0 and latency_b[phase] > 0
        assert document["speedup"][phase] == latency_a[phase] / latency_b[phase]
    # Plain modules have no sepconv origin: no agreement, and the reason says which one.
    assert document["agreement"] is None
    assert "A was not built by sepconv.models.create_model" in document["agreement_reason"]
    assert (document["input_size"], document["batch_size"], document["repeats"]) == ([3, 8, 8], 2, 1)
    assert document["threads"] == torch.get_num_threads()
    assert (document["a"]["name"], document["b"]["name"]) == ("Sequential", "Sequential")


def test_the_models_given_are_not_changed():
    model = trained_statistics_cnn()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    compare_models(model, fold_batchnorm(model), samples=8, **FAST)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)  # running stats included
    assert not model.training
    assert all(parameter.grad is None for parameter in model.parameters())


def test_a_model_against_itself_agrees_exactly():
    torch.manual_seed(1)
    model = create_model("standard_cnn", **TINY)
    result = compare_models(model, model, names=("one", "same"), samples=IMAGES, **FAST)
    agreement = result.agreement
    assert agreement is not None and result.agreement_reason is None
    # The same weights through the same CPU kernels on the same batch: identical logits.
    assert agreement.relative_error == 0.0
    assert agreement.top1_agreement == 1.0
    assert (agreement.samples, agreement.inputs) == (IMAGES, "mnist5k test images")
    assert (result.a.name, result.b.name) == ("one", "same")


def test_folded_batchnorm_agrees_to_float32_rounding_on_mnist5k():
    model = trained_statistics_cnn()
    result = compare_models(model, fold_batchnorm(model), samples=IMAGES, **FAST)
    agreement = result.agreement
    assert agreement is not None
    # Folding rescales each conv's weights by gamma / sqrt(var + eps): one extra float32 rounding
    # (~6e-8 relative) per weight and a reordered sum per layer; through 6 layers that stays near 1e-6.
    # A wrong fold (a missed eps or shift) moves the logits by 1e-2 or more.
    assert agreement.relative_error < 1e-5
    assert agreement.top1_agreement == 1.0
    assert (agreement.samples, agreement.inputs) == (IMAGES, "mnist5k test images")
    assert result.b.params < result.a.params  # the BatchNorm parameters are gone


def test_a_perturbed_copy_has_the_relative_error_computed_directly():
    model = trained_statistics_cnn()
    perturbed = copy.deepcopy(model)  # keeps the architecture origin (model_spec)
    conv = next(module for module in perturbed.modules() if isinstance(module, nn.Conv2d))
    with torch.no_grad():
        conv.weight.add_(0.3 * torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(5)))
    images = torch.randn(IMAGES, 1, 28, 28, generator=torch.Generator().manual_seed(6))

    result = compare_models(model, perturbed, images=images, **FAST)
    expected_error, expected_top1 = reference_agreement(model, perturbed, images)
    agreement = result.agreement
    assert agreement is not None
    assert expected_error > 1e-2  # the perturbation is visible, so the comparison below means something
    # Same images, same batch, same kernels; only the norms are summed in another order (float32:
    # relative differences ~1e-7 over a few thousand logits), so 1e-5 is generous and still tight.
    assert agreement.relative_error == pytest.approx(expected_error, rel=1e-5)
    assert agreement.top1_agreement == expected_top1
    assert (agreement.samples, agreement.inputs) == (IMAGES, "given images")


def test_three_channel_inputs_use_random_normal_images():
    torch.manual_seed(2)
    model = create_model("standard_cnn", in_channels=3, **TINY)
    result = compare_models(model, fold_batchnorm(model), samples=16, **FAST)
    assert result.input_size == (3, 28, 28)
    assert result.agreement is not None
    assert (result.agreement.samples, result.agreement.inputs) == (16, "random normal")


def test_a_data_set_gives_the_input_size_and_its_test_images():
    data = load_dataset("synthetic", seed=0)
    torch.manual_seed(2)
    model = create_model("standard_cnn", in_channels=data.in_channels, num_classes=data.num_classes, **TINY)
    perturbed = copy.deepcopy(model)
    head = next(module for module in perturbed.modules() if isinstance(module, nn.Linear))
    with torch.no_grad():
        head.weight.add_(0.2 * torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(7)))
    result = compare_models(model, perturbed, dataset=data, samples=IMAGES, **FAST)
    assert result.input_size == (data.in_channels, *data.image_size) == (3, 32, 32)
    test_images = torch.stack([data.test[index][0] for index in range(IMAGES)])
    expected_error, expected_top1 = reference_agreement(model, perturbed, test_images)
    assert result.agreement is not None
    assert result.agreement.inputs == "synthetic test images"
    assert expected_error > 1e-2
    assert result.agreement.relative_error == pytest.approx(expected_error, rel=1e-5)  # as above
    assert result.agreement.top1_agreement == expected_top1


def test_different_origins_give_no_agreement_and_say_why():
    result = compare_models(
        create_model("standard_cnn", **TINY), create_model("separable_cnn", **TINY), **FAST
    )
    assert result.agreement is None
    assert result.agreement_reason == (
        "different architectures: A is standard_cnn(widths=(4, 8, 8, 16)), "
        "B is separable_cnn(widths=(4, 8, 8, 16))"
    )
    assert result.to_dict()["agreement"] is None
    # Same builder, other arguments: also another architecture.
    other = compare_models(
        create_model("standard_cnn", **TINY), create_model("standard_cnn", num_classes=5, **TINY), **FAST
    )
    assert other.agreement is None and "num_classes=5" in other.agreement_reason


def test_text_table_lines_up_the_reported_numbers():
    standard, separable = standard_pair()
    result = compare_models(standard, separable, names=("conv", "sep"), input_size=(3, 8, 8), **FAST)
    text = result.format_table()
    lines = text.splitlines()
    assert lines[0].split() == ["A:", "conv", "B:", "sep", "A", "/", "B"]
    assert set(lines[1]) == {"-", " "}  # the rule under the header, as in every report's table
    assert lines[2].split() == ["parameters", "260", "98", f"{260 / 98:.2f}x"]
    assert lines[3].split() == ["MACs", "per", "image", "13.86K", "3.30K", f"{13856 / 3296:.2f}x"]
    forward = lines[5].split()
    assert forward == [
        "forward",
        "ms",
        f"{result.a.forward_ms:.3f}",
        f"{result.b.forward_ms:.3f}",
        f"{result.speedup['forward']:.2f}x",
    ]
    assert "output agreement: not measured (A was not built by" in text
    assert "medians of 1 interleaved rounds" in text
    # Columns are aligned: every row with a value in each column ends at the same place.
    assert len({len(lines[index]) for index in (0, 1, 2, 3, 5, 6)}) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"repeats": 0}, "repeats must be a positive integer, got 0"),
        ({"samples": -1}, "samples must be a positive integer, got -1"),
        ({"input_size": (28, 28)}, "input_size must be 3 positive integers"),
        ({"names": ("only one",)}, "names must be two strings"),
        ({"images": torch.zeros(1, 1, 28, 28), "dataset": object()}, "give images or dataset"),
        ({"images": torch.zeros(2, 1, 32, 32)}, "images must be a batch of 1x28x28 images"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(options, message):
    model = create_model("standard_cnn", **TINY)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compare_models(model, model, **options)


def test_models_with_different_default_sizes_need_an_input_size():
    with pytest.raises(ValueError, match=r"A \(standard_cnn\) takes 1x28x28 images and B \(mobilenet_v2\)"):
        compare_models(create_model("standard_cnn", **TINY), create_model("mobilenet_v2", width_mult=0.25))


def test_an_input_one_model_cannot_take_is_a_value_error_naming_it():
    model = create_model("standard_cnn", **TINY)
    with pytest.raises(ValueError, match=r"B cannot run on 3x28x28 inputs"):
        compare_models(
            create_model("standard_cnn", in_channels=3, **TINY),
            model,
            names=("A", "B"),
            input_size=(3, 28, 28),
        )
