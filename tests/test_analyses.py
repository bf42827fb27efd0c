"""Landscapes, directions, local linearity, Grad-CAM, catastrophic-overfitting detection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atlens.analysis.directions import filter_normalized_direction, moved, random_unit_direction
from atlens.analysis.gradcam import feature_map_layer, grad_cam
from atlens.analysis.landscapes import (
    craft,
    input_loss_surface,
    lsc_landscape,
    per_example_losses,
    weight_robustness_curve,
)
from atlens.analysis.linearity import local_linearity
from atlens.analysis.lsc import EDGES, lsc_groups
from atlens.attacks import ThreatModel
from atlens.data import ImageTensors
from atlens.errors import ModelContractError
from atlens.evaluation import PGDAttack
from atlens.models import build_model
from atlens.training.monitors import catastrophic_overfitting
from tests.conftest import linear_classifier


def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("preact_resnet18", 3, 3, 16, [0.5] * 3, [0.25] * 3, {"width": 4}).eval()


def random_images(n: int = 12, classes: int = 3, size: int = 16, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    return ImageTensors(torch.rand(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))


def test_filter_normalised_direction_matches_each_filter_norm_and_skips_bn_and_biases():
    model = small_resnet()
    d = filter_normalized_direction(model, torch.Generator().manual_seed(1))
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1), w.detach().flatten(1).norm(dim=1))
    assert any(w.dim() <= 1 for w in model.parameters())  # the model does have BN weights and biases


def test_random_unit_direction_has_unit_norm_on_conv_and_linear_weights_only():
    model = small_resnet()
    u = random_unit_direction(model, torch.Generator().manual_seed(2))
    total = torch.sqrt(sum((t**2).sum() for t in u.values()))
    torch.testing.assert_close(total, torch.tensor(1.0))
    assert all(torch.count_nonzero(u[n]) == 0 for n, w in model.named_parameters() if w.dim() <= 1)


def test_moving_along_a_direction_is_exact_and_fully_undone():
    model = small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = filter_normalized_direction(model, torch.Generator().manual_seed(3))
    with moved(model, d, 0.3):
        for name, w in model.named_parameters():
            torch.testing.assert_close(w, before[name] + 0.3 * d[name])
        model.train()(torch.rand(4, 3, 16, 16))  # would update BN running statistics
    model.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_lsc_groups_partition_the_examples_and_match_the_direct_group_means():
    losses = torch.tensor([0.0, 0.49, 0.5, 1.2, 2.99, 3.0, 3.01, 7.0])
    groups = lsc_groups(losses)
    assert groups.tolist() == [0, 0, 1, 2, 5, 5, 6, 6]
    for loss, group in zip(losses.tolist(), groups.tolist()):
        assert EDGES[group] <= loss and (group == len(EDGES) - 1 or loss <= EDGES[group + 1])

    model = small_resnet()
    data = random_images(24)
    result = lsc_landscape(model, data, [-0.1, 0.0, 0.1], directions=2)
    assert sum(result["group_sizes"]) == len(data)
    direct = per_example_losses(model, data.images, data.labels)
    groups = lsc_groups(direct)
    for j, name in enumerate(result["groups"]):
        curve = result["loss"][name]
        if result["group_sizes"][j] == 0:
            assert curve is None
        else:
            assert curve[1] == pytest.approx(direct[groups == j].mean().item(), rel=1e-5)


def test_local_linearity_of_a_linear_model_is_one_and_of_a_network_below_one(trained_digits_model, digits):
    torch.manual_seed(0)
    binary = linear_classifier(torch.randn(2, 3 * 8 * 8))  # ∇x CE ∝ ±(w1 − w0): always the same line
    data = ImageTensors(torch.rand(32, 3, 8, 8), torch.randint(0, 2, (32,)))
    threat = ThreatModel("linf", 0.1)
    assert local_linearity(binary, data, threat, samples=2) == pytest.approx(1.0, abs=1e-5)
    network = local_linearity(trained_digits_model, digits[1].head(128), ThreatModel("linf", 0.3))
    assert 0 < network < 0.99


def test_input_loss_surface_is_the_loss_at_x_in_the_centre():
    model = small_resnet()
    data = random_images(3)
    result = input_loss_surface(model, data.images, data.labels, ThreatModel("linf", 8 / 255), points=5)
    z = torch.tensor(result["loss"])
    assert z.shape == (3, 5, 5)
    with torch.no_grad():
        direct = F.cross_entropy(model(data.images), data.labels, reduction="none")
    torch.testing.assert_close(z[:, 2, 2], direct, rtol=1e-5, atol=1e-6)
    assert all(rise >= 0 for rise in result["max_rise"])


def test_weight_robustness_curve_starts_at_the_unperturbed_robust_loss():
    model = small_resnet()
    data = random_images(16)
    attack = PGDAttack(ThreatModel("linf", 8 / 255), steps=2)
    result = weight_robustness_curve(model, data, attack, [0.0, 0.5], directions=3, device="cpu")
    adversarial = craft(model, data, attack, "cpu")
    assert result["robust_loss_mean"][0] == pytest.approx(per_example_losses(model, adversarial.images,
                                                                             adversarial.labels).mean().item())
    assert result["robust_loss_std"][0] == 0
    assert result["robust_loss_mean"][1] != result["robust_loss_mean"][0]


def test_gradcam_is_the_relu_of_the_gradient_weighted_feature_maps_upsampled():
    """Selvaraju et al.'s Grad-CAM by hand: α_k = the spatial mean of ∂y_c/∂A_k over the final stage's maps A,
    map = ReLU(Σ_k α_k A_k), bilinearly upsampled to the input."""
    model = small_resnet().eval()
    x, target = torch.rand(5, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1])
    layer = feature_map_layer(model, x)
    assert layer is model.body.stages  # the final stage, as in the papers' ResNet Grad-CAMs
    maps = grad_cam(model, x, target, layer)
    kept = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: kept.update(a=output))
    scores = model(x).gather(1, target[:, None]).sum()
    handle.remove()
    gradients = torch.autograd.grad(scores, kept["a"])[0]
    weights = gradients.mean((2, 3), keepdim=True)
    by_hand = torch.relu((weights * kept["a"]).sum(1, keepdim=True)).detach()
    by_hand = torch.nn.functional.interpolate(by_hand, size=(16, 16), mode="bilinear").squeeze(1)
    assert maps.shape == (5, 16, 16) and by_hand.abs().max() > 0
    assert torch.allclose(maps, by_hand, atol=1e-6)


def test_gradcam_refuses_a_model_without_a_feature_map():
    mlp = build_model("mlp", 3, 3, 16, [0.5] * 3, [0.25] * 3, {"hidden": [8]})
    with pytest.raises(ModelContractError, match="convolutional feature map"):
        feature_map_layer(mlp, torch.rand(2, 3, 16, 16))


def _trace(pgd: list[float], fgsm: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "test_robust_acc": p, "test_fgsm_acc": f} for i, (p, f) in enumerate(zip(pgd, fgsm))]


def test_catastrophic_overfitting_fires_on_a_collapse_and_not_otherwise():
    collapse = _trace([0.30, 0.38, 0.42, 0.05, 0.01], [0.40, 0.45, 0.48, 0.80, 0.90])
    assert catastrophic_overfitting(collapse) == 4
    healthy = _trace([0.30, 0.38, 0.42, 0.41, 0.43], [0.40, 0.45, 0.48, 0.49, 0.50])
    assert catastrophic_overfitting(healthy) is None
    both_fall = _trace([0.30, 0.40, 0.05], [0.40, 0.50, 0.10])  # a broken model, not catastrophic overfitting
    assert catastrophic_overfitting(both_fall) is None
    with_gaps = [{"epoch": 1, "test_robust_acc": 0.3, "test_fgsm_acc": 0.4}, {"epoch": 2, "test_robust_acc": None},
                 {"epoch": 3, "test_robust_acc": 0.02, "test_fgsm_acc": 0.7}]
    assert catastrophic_overfitting(with_gaps) == 3


def test_gradcam_skips_a_final_map_of_one_pixel():
    """torchvision's ResNet-18 on 32x32 images ends in a 1x1 map (ImageNet stem): its third stage is used."""
    import torchvision

    from atlens.models import wrap

    model = wrap(torchvision.models.resnet18(num_classes=3)).eval()
    assert feature_map_layer(model, torch.rand(2, 3, 32, 32)) is model.model.layer3


def test_the_analysis_estimate_counts_each_analysis_cost(monkeypatch):
    from atlens.analysis import runner
    from atlens.data import DatasetInfo, PreparedData

    monkeypatch.setattr(runner, "seconds_per_gradient", lambda model, data, device: 0.001)
    images = ImageTensors(torch.rand(40, 1, 4, 4), torch.arange(40) % 4)
    info = DatasetInfo("toy", [f"c{i}" for i in range(4)], (0.5,), (0.25,), 4, 1)
    settings = runner.AnalysisSettings(examples=20, train_examples=30)
    data = PreparedData(info, images, images, None, None)
    models = {"best": (nn.Identity(), 3), "last": (nn.Identity(), 9)}
    ctx = runner.AnalysisContext(None, 0, data, ThreatModel("linf", 0.1), "cpu", settings, models=models)
    # two models x (linearity: 2 gradients on 20 test examples + lsc: 30 training examples x (PGD-10 + 21 x 5 / 3))
    expected = 2 * (20 * 2 + 30 * (11 + 21 * 5 / 3)) * 0.001
    assert runner.estimate_seconds(ctx, ["linearity", "lsc"]) == pytest.approx(expected)
    settings.train_examples = 60  # more than the 40 training examples there are: all 40 are crafted
    assert runner.estimate_seconds(ctx, ["lsc"]) == pytest.approx(2 * 40 * (11 + 35) * 0.001)
