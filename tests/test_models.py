import pytest
import torch
from torch import nn

from atlens.errors import ModelContractError
from atlens.models import MODELS, build_model, check_contract

# small options so every architecture builds and runs in well under a second
SMALL = {
    "preact_resnet18": {"width": 4},
    "resnet18": {"width": 4},
    "wrn": {"depth": 10, "widen_factor": 1},
    "vgg16_bn": {"width": 2},
    "deit_tiny": {"depth": 1, "embed_dim": 24, "heads": 2},
    "cnn": {"width": 4, "hidden": 8},
    "mlp": {"hidden": [16]},
    "torchvision": {"arch": "resnet18"},
    "timm": {"arch": "resnet10t"},
}


def test_every_registered_model_is_covered():
    assert set(MODELS.names) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_model_equals_head_of_features(name):
    torch.manual_seed(0)
    model = build_model(name, 10, 3, 32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25], SMALL[name]).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
    assert logits.shape == (3, 10)
    assert feats.ndim == 2 and feats.shape[1] == model.head.in_features
    assert torch.allclose(logits, model.head(feats), atol=1e-5)
    assert check_contract(model) is model.head


def test_preact_features_are_after_final_relu_and_pooling():
    model = build_model("preact_resnet18", 10, 3, 32, [0.5] * 3, [0.25] * 3, {"width": 16}).eval()
    feats = model.features(torch.rand(2, 3, 32, 32))
    assert feats.shape == (2, 128)  # 8 x width channels, globally pooled
    assert (feats >= 0).all()  # pooled post-ReLU activations


def test_normalisation_lives_inside_the_model():
    model = build_model("mlp", 2, 1, 2, [0.5], [0.5], {"hidden": []})
    assert torch.equal(model.normalize(torch.ones(1, 1, 2, 2)), torch.ones(1, 1, 2, 2))
    assert "normalize.mean" in model.state_dict()


def test_contract_violations_are_explained():
    with pytest.raises(ModelContractError, match="features"):
        check_contract(nn.Linear(4, 2))
    model = build_model("mlp", 2, 1, 2, [0.5], [0.5], {"hidden": [4]})
    model.head = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ModelContractError, match="nn.Linear"):
        check_contract(model)


@pytest.mark.parametrize("name,options,parameters", [
    ("preact_resnet18", {}, 11_172_170),  # the reference definitions' counts on CIFAR-10
    ("resnet18", {}, 11_173_962),
    ("wrn", {"depth": 34, "widen_factor": 10}, 46_160_474),
])
def test_parameter_counts_equal_the_reference_architectures(name, options, parameters):
    with torch.device("meta"):  # counted without allocating 46 M weights
        model = build_model(name, 10, 3, 32, [0.5] * 3, [0.25] * 3, options)
    assert sum(p.numel() for p in model.parameters()) == parameters
