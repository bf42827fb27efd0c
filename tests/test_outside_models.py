"""Models from outside atlens: atlens.wrap, model specs on the command line, and the errors users meet."""

from __future__ import annotations

import json
import re
import sys
import warnings

import pytest
import timm
import torch
import torchvision
from torch import nn

import atlens
from atlens.cli.main import main
from atlens.errors import ModelContractError
from atlens.models import wrap

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def scripted(model: nn.Module, path) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, but the field's files exist
        torch.jit.save(torch.jit.script(model), str(path))
        return torch.jit.load(str(path))


def independent_cas(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, classes: int) -> float:
    """Class-wise mean of features ⊙ head weight, cosine matrix, positive off-diagonal sum — written here."""
    vectors = torch.stack([(features[labels == c] * weight[c]).mean(0) for c in range(classes)]).double()
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    cosine = unit @ unit.T
    return sum(max(cosine[i, j].item(), 0.0) for i in range(classes) for j in range(classes) if i != j)


@pytest.fixture(scope="module")
def outside_models(tmp_path_factory):
    """Each source's model and the eager network whose computation it is (for the independent checks)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("outside")
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    tiny_timm = timm.create_model("resnet10t", num_classes=10).eval()
    eager = torchvision.models.resnet18(num_classes=10).eval()
    return {"torchvision": (resnet, resnet), "timm": (tiny_timm, tiny_timm),
            "torchscript": (scripted(eager, folder / "model.ts"), eager)}


@pytest.mark.parametrize("source", ["torchvision", "timm", "torchscript"])
def test_wrap_keeps_the_logits_and_features_feed_the_head_exactly(outside_models, source):
    model, _ = outside_models[source]
    wrapped = wrap(model, MEAN, STD)
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        logits = model(normalised(x))
        assert torch.allclose(wrapped(x), logits, atol=1e-5)
        assert torch.allclose(wrapped.head(wrapped.features(x)), logits, atol=1e-5)
    assert wrapped.head_path == "fc" and wrapped.head.out_features == 10


@pytest.mark.parametrize("source", ["torchvision", "timm", "torchscript"])
def test_cas_of_a_wrapped_model_equals_an_independent_computation(outside_models, source):
    model, eager = outside_models[source]
    x = torch.rand(50, 3, 32, 32)
    y = torch.arange(50) % 10
    captured = []  # the input of the eager network's final linear layer, read by a hook written here
    hook = eager.fc.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    with torch.no_grad():
        eager(normalised(x))
    hook.remove()
    expected = independent_cas(captured[0], y, eager.fc.weight.detach(), 10)
    result = atlens.cas(wrap(model, MEAN, STD), (x, y), attack="clean")
    assert result.cas == pytest.approx(expected, abs=1e-4)
    assert result.classes == [str(i) for i in range(10)] and result.examples == 50


def test_the_head_is_found_where_the_architecture_keeps_it():
    vgg = torchvision.models.vgg11(num_classes=10)
    assert wrap(vgg).head_path == "classifier.6"
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8)
    assert wrap(vit).head_path == "head"
    custom = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    assert wrap(custom).head_path == "3"
    assert wrap(custom, head="3").head is custom[3]


def test_a_head_that_is_not_the_last_operation_is_caught():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return 2 * self.fc(x.flatten(1))

    with pytest.raises(ModelContractError, match="not the last operation.*head="):
        wrap(Scaled()).verify(torch.rand(2, 3, 2, 2))


def test_a_model_without_a_linear_layer_says_how_to_name_the_head():
    convolutional = nn.Sequential(nn.Conv2d(3, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ModelContractError, match="no linear layer.*head="):
        wrap(convolutional)
    with pytest.raises(ModelContractError, match="no submodule 'classifier'"):
        wrap(nn.Sequential(nn.Linear(3, 2)), head="classifier")


# ---------------------------------------------------------------- the command line

def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


DATA = ("--data", "synthetic", "--examples", "20", "--device", "cpu")


def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import torch.nn as nn\n"
        "def small_net(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),\n"
        "                         nn.Linear(32, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)  # each test's own file


@pytest.mark.parametrize("source", ["torchvision", "timm", "torchscript", "factory"])
def test_cas_of_an_outside_model_from_the_command_line(tmp_path, capsys, monkeypatch, source):
    torch.manual_seed(0)
    if source == "torchvision":
        torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "w.pt")
        spec = ["--model", "torchvision:resnet18", "--weights", tmp_path / "w.pt", "--num-classes", "10",
                "--normalize", "cifar10"]
    elif source == "timm":
        from safetensors.torch import save_file

        save_file(timm.create_model("resnet10t", num_classes=10).state_dict(), str(tmp_path / "w.safetensors"))
        spec = ["--model", "timm:resnet10t", "--weights", tmp_path / "w.safetensors"]
    elif source == "torchscript":
        scripted(torchvision.models.resnet18(num_classes=10).eval(), tmp_path / "net.ts")
        spec = ["--model", tmp_path / "net.ts", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]
    else:
        factory_module(tmp_path, monkeypatch)
        spec = ["--model", "my_models:small_net"]
    out = tmp_path / "out"
    code, printed, err = cli(capsys, "cas", *spec, *DATA, "--out", out)
    assert code == 0, err
    (written,) = out.glob("cas-*.json")
    result = json.loads(written.read_text())
    assert len(result["matrix"]) == 10 and result["examples"] == 20 and "CAS" in printed
    assert result["source"]["model"]["spec"] == str(spec[1]) and result["source"]["model"]["head"]
    assert written.with_suffix(".png").is_file()
    code, _, err = cli(capsys, "cas", *spec, *DATA, "--out", out)
    assert code == 2 and "--overwrite" in err  # an earlier result is never replaced unasked


def test_eval_and_analyze_of_an_outside_model(tmp_path, capsys, monkeypatch):
    factory_module(tmp_path, monkeypatch)
    out = tmp_path / "out"
    code, printed, err = cli(capsys, "eval", "--model", "my_models:small_net", *DATA, "--attacks", "clean,pgd5",
                             "--out", out)
    assert code == 0, err
    report = json.loads((out / "eval-my_models-small_net.json").read_text())
    assert set(report["attacks"]) == {"clean", "pgd5"} and report["model"]["kind"] == "factory"
    code, printed, err = cli(capsys, "analyze", "--model", "my_models:small_net", "--data", "synthetic",
                             "--examples", "16", "--device", "cpu", "--what", "gradcam,linearity", "--out", out)
    assert code == 0, err
    assert (out / "gradcam.png").is_file() and (out / "linearity.json").is_file()


@pytest.mark.parametrize("case", ["unknown prefix", "no head", "classes", "weights"])
def test_outside_model_errors_are_one_line(tmp_path, capsys, monkeypatch, case):
    factory_module(tmp_path, monkeypatch)
    (tmp_path / "my_models.py").write_text(
        (tmp_path / "my_models.py").read_text()
        + "def no_head():\n    return nn.Sequential(nn.Conv2d(3, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n")
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "r18.pt")
    args, expected = {
        "unknown prefix": (["--model", "hf:org/model"], "unknown model spec 'hf:org/model'"),
        "no head": (["--model", "my_models:no_head"], "no linear layer.*--head"),
        "classes": (["--model", "torchvision:resnet18", "--num-classes", "1000"],
                    "1000 outputs but the data has 10 classes; pass --num-classes 10"),
        "weights": (["--model", "torchvision:vgg11", "--weights", tmp_path / "r18.pt"],
                    r"does not match the model: the architecture differs.*only in the model: classifier\.0\.bias.*"
                    r"only in the weights: bn1\.bias.*give the --model the weights were saved from"),
    }[case]
    code, _, err = cli(capsys, "cas", *args, *DATA, "--out", tmp_path / "out")
    assert code in (1, 2)
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(expected, err), err


def robustbench_zoo():
    """RobustBench's model zoo, or a skip saying why (it is the optional extra atlens[robustbench])."""
    try:
        import pyautoattack

        sys.modules.setdefault("autoattack", pyautoattack)  # as atlens does: RobustBench imports `autoattack`
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as err:
        pytest.skip(f"RobustBench is not installed (pip install 'atlens[robustbench]'): {err}")
    return model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]


@pytest.mark.slow
def test_robustbench_models_load_offline_from_the_local_model_folder(tmp_path, capsys, monkeypatch):
    """What a user without network access does: the weights in RobustBench's folder, <dir>/cifar10/Linf/NAME.pt."""
    from PIL import Image

    zoo = robustbench_zoo()
    torch.manual_seed(0)
    architecture = zoo["Wong2020Fast"]["model"]()  # PreActResNet-18 with its normalisation inside
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    torch.save(architecture.state_dict(), folder / "Wong2020Fast.pt")
    monkeypatch.setenv("ATLENS_CACHE", str(tmp_path / "cache"))
    for split in ("train", "test"):
        for c in range(10):
            (tmp_path / "data" / split / f"c{c}").mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (25 * c, 10 * i, 128)).save(tmp_path / "data" / split / f"c{c}" / f"{i}.png")
    out = tmp_path / "out"
    code, printed, err = cli(capsys, "cas", "--model", "robustbench:Wong2020Fast", "--model-dir", tmp_path / "models",
                             "--data", "imagefolder", "--root", tmp_path / "data", "--device", "cpu", "--out", out)
    assert code == 0, err
    result = json.loads((out / "cas-robustbench-Wong2020Fast.json").read_text())
    assert result["source"]["model"]["normalization"] == "inside the model" and result["examples"] == 20
    model = atlens.load_model("robustbench:Wong2020Fast", model_dir=tmp_path / "models")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), architecture.eval()(x), atol=1e-5)  # the weights placed there
    code, _, err = cli(capsys, "cas", "--model", "robustbench:Wong2020Fast", "--model-dir", tmp_path / "none",
                       "--data", "imagefolder", "--root", tmp_path / "data", "--device", "cpu", "--out", out)
    assert code == 1 and "place them at" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_outside_architecture_trained_here_has_the_same_cas_as_an_outside_model_as_as_a_run(tmp_path, capsys):
    """The study's check in small: a torchvision ResNet-18 trained by atlens, exported as a plain torchvision
    state dict and analysed through --model, gives its run's matrix exactly."""
    config = {"data": {"name": "synthetic", "per_class": 5, "batch_size": 50},
              "model": {"name": "torchvision", "arch": "resnet18"},
              "attack": {"epsilon": 8 / 255, "steps": 2}, "optim": {"epochs": 1, "lr": 0.01},
              "runtime": {"progress": False}}
    run = atlens.train(config, tmp_path / "run")
    trained = atlens.load_model(run.path)
    torch.save(trained.model.state_dict(), tmp_path / "w.pt")
    assert set(torch.load(tmp_path / "w.pt")) == set(torchvision.models.resnet18().state_dict())
    mean = ",".join(repr(v) for v in trained.normalize.mean.flatten().tolist())
    std = ",".join(repr(v) for v in trained.normalize.std.flatten().tolist())
    code, _, err = cli(capsys, "cas", run.path, "--examples", "30", "--device", "cpu")
    assert code == 0, err
    code, _, err = cli(capsys, "cas", "--model", "torchvision:resnet18", "--weights", tmp_path / "w.pt", "--mean", mean,
                       "--std", std, "--data", "synthetic", "--examples", "30", "--device", "cpu", "--out",
                       tmp_path / "out")
    assert code == 0, err
    as_run = json.loads((run.path / "analysis" / "cas-best-pgd20-n30.json").read_text())
    outside = json.loads((tmp_path / "out" / "cas-torchvision-resnet18.json").read_text())
    assert outside["example_indices"] == as_run["example_indices"]
    assert outside["matrix"] == as_run["matrix"] and outside["cas"] == as_run["cas"]


def test_the_evaluation_estimate_counts_what_each_attack_costs():
    from atlens.evaluation.attacks import ATTACKS
    from atlens.evaluation.suite import estimate_seconds

    assert ATTACKS.cost("pgd20") == pytest.approx(20 + 1 / 3) and ATTACKS.cost("cw") > 100
    assert ATTACKS.cost("autoattack") > 1000
    model = wrap(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))
    data = atlens.api.as_image_data((torch.rand(30, 3, 2, 2), torch.arange(30) % 3))
    short = estimate_seconds(model, data, ["clean", "pgd20"], curve=False)
    long = estimate_seconds(model, data, ["clean", "pgd20", "pgd100", "cw", "autoattack"], curve=True)
    assert 0 < short < long
