"""Any classifier under atlens' contract: inputs in [0, 1], normalisation inside, ``features(x)`` = the
input of the final linear layer and ``head`` = that layer.

``features`` reads the head's input while the model runs (a forward hook), so it is exact for any
architecture. TorchScript modules take no hooks; for them the model's inlined forward graph is cut at the
head's ``aten::linear`` and returns its input instead, which is equally exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atlens.errors import ModelContractError
from atlens.models.base import Normalize

# torchvision's and timm's statistics, for --normalize NAME
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "none": None,
}

# where torchvision's classification models keep their final linear layer
_CONVENTIONAL_HEADS = ("fc", "classifier", "heads.head", "head", "heads", "last_linear")


def _is_scripted(module: nn.Module) -> bool:
    return isinstance(module, torch.jit.ScriptModule)


def _is_linear(module: nn.Module) -> bool:
    if _is_scripted(module):
        return getattr(module, "original_name", "") == "Linear"
    return isinstance(module, nn.Linear)


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    module = model
    for part in path.split("."):
        if part.isdigit() and isinstance(module, (nn.Sequential, nn.ModuleList)):
            index = int(part)
            module = module[index] if -len(module) <= index < len(module) else None
        else:
            module = getattr(module, part, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def _last_linear(model: nn.Module, prefix: str = "") -> str | None:
    names = [name for name, module in model.named_modules() if name and _is_linear(module)]
    return (prefix + "." if prefix else "") + names[-1] if names else None


def find_head(model: nn.Module, head: str | nn.Module | None = None) -> str:
    """The path of the model's final linear layer: ``head`` when given (a path such as ``"fc"`` or the
    module itself), else timm's ``get_classifier()``, torchvision's ``fc`` / ``classifier[-1]`` /
    ``heads.head``, else the last ``nn.Linear`` the model registers."""
    hint = ("name the final linear layer: atlens.wrap(model, head='path.to.layer'), or --head on the command "
            "line")
    if isinstance(head, nn.Module):
        for name, module in model.named_modules():
            if module is head and name:
                head = name
                break
        else:
            raise ModelContractError(f"the head given is not a submodule of {type(model).__name__}")
    if isinstance(head, str):
        module = _submodule(model, head)
        if module is None:
            raise ModelContractError(f"{type(model).__name__} has no submodule {head!r}; {hint}")
        if not _is_linear(module):
            raise ModelContractError(f"{type(model).__name__}.{head} is a {type(module).__name__}, not a linear "
                                     f"layer; {hint}")
        return head
    classifier = getattr(model, "get_classifier", None)
    if callable(classifier) and not _is_scripted(model):  # timm
        module = classifier()
        for name, candidate in model.named_modules():
            if candidate is module and name and _is_linear(candidate):
                return name
    for path in _CONVENTIONAL_HEADS:
        module = _submodule(model, path)
        if module is None:
            continue
        if _is_linear(module):
            return path
        if isinstance(module, nn.Sequential) or (_is_scripted(module) and any(True for _ in module.children())):
            found = _last_linear(module, path)
            if found:
                return found
    found = _last_linear(model)
    if found is None:
        raise ModelContractError(f"{type(model).__name__} has no linear layer to serve as the head (CAS attributes "
                                 f"logits to the input of a linear classifier); {hint}")
    return found


class WrappedClassifier(nn.Module):
    """``model`` behind a normalisation layer, with ``features(x)`` and ``head`` read off its final linear layer.

    The state dict holds ``normalize.*`` and ``model.*`` (the outside model's own keys under ``model.``);
    ``wrapped.model.state_dict()`` is the plain state dict the outside code reads.
    """

    def __init__(self, model: nn.Module, normalize: nn.Module, head_path: str,
                 classes: Sequence[str] | None = None) -> None:
        super().__init__()
        self.normalize = normalize
        self.model = model
        self.head_path = head_path
        self.classes = list(classes) if classes is not None else None
        self._features_graph = _features_function(model, head_path) if _is_scripted(model) else None

    @property
    def head(self) -> nn.Linear:
        module = _submodule(self.model, self.head_path)
        if not _is_scripted(module):
            return module
        linear = nn.Linear.__new__(nn.Linear)  # a view of the scripted layer's own parameters
        nn.Module.__init__(linear)
        linear._parameters["weight"] = module.weight
        linear._parameters["bias"] = module.bias
        linear.out_features, linear.in_features = module.weight.shape
        return linear

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self._features_graph is not None:
            return self._features_graph(self.model._c, self.normalize(x))
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0]))
        try:
            self.model(self.normalize(x))
        finally:
            handle.remove()
        if not captured:
            raise ModelContractError(f"{type(self.model).__name__}.{self.head_path} was not called in forward; "
                                     f"name the final linear layer with head=")
        return captured[-1]

    def verify(self, x: torch.Tensor, tolerance: float = 1e-4) -> None:
        """Check on a batch that ``head(features(x))`` is the model's output, i.e. that the head is the
        model's last operation (nothing after it but identities)."""
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                logits = self(x)
                if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                    got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise ModelContractError(f"{type(self.model).__name__} returns {got}, not a [batch, classes] "
                                             f"tensor of logits")
                error = (self.head(self.features(x)) - logits).abs().max().item()
        finally:
            self.train(training)
        scale = max(1.0, logits.abs().max().item())
        if not error <= tolerance * scale:
            raise ModelContractError(
                f"{self.head_path} is not the last operation of {type(self.model).__name__}: head(features(x)) "
                f"differs from its logits by {error:.3g}; name the final linear layer with head= (--head)")


def _features_function(model: torch.jit.ScriptModule, head_path: str) -> torch.jit.ScriptFunction:
    """The scripted model's forward, inlined and cut so that it returns the input of the head's linear map."""
    graph = model.forward.graph.copy()
    torch._C._jit_pass_inline(graph)

    def attribute_path(value: torch._C.Value) -> str:
        names, node = [], value.node()
        while node.kind() == "prim::GetAttr":
            names.append(node.s("name"))
            node = node.input().node()
        return ".".join(reversed(names))

    calls = [node for node in graph.nodes()
             if node.kind() == "aten::linear" and attribute_path(node.inputsAt(1)) == head_path + ".weight"]
    if not calls:
        raise ModelContractError(f"the TorchScript model's forward does not apply {head_path} as a linear map; "
                                 f"name its final linear layer with head=")
    graph.return_node().replaceInput(0, calls[-1].inputsAt(0))
    torch._C._jit_pass_dce(graph)
    return torch._C._create_function_from_graph(f"features_of_{head_path.replace('.', '_')}", graph)


def normalization(name: str | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Mean and std from a preset name (imagenet, cifar10, none) or given values; None: no normalisation."""
    if name is not None:
        if mean is not None or std is not None:
            raise ModelContractError("give a normalisation by name or by mean and std, not both")
        if name not in NORMALIZATIONS:
            raise ModelContractError(f"unknown normalisation {name!r}; choose from {', '.join(NORMALIZATIONS)}")
        return NORMALIZATIONS[name]
    if (mean is None) != (std is None):
        raise ModelContractError("give both mean and std (or neither: the model normalises its inputs itself)")
    if mean is None:
        return None
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ModelContractError(f"mean {list(mean)} and std {list(std)} need one value per channel, std > 0")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def wrap(model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         head: str | nn.Module | None = None, classes: Sequence[str] | None = None) -> WrappedClassifier:
    """``model`` as an atlens classifier: inputs in [0, 1] are normalised by ``mean``/``std`` first (leave both
    None when the model normalises itself, as RobustBench models do); ``head`` names the final linear layer
    when it cannot be found (see ``find_head``); ``classes`` names the outputs for figures."""
    if isinstance(model, WrappedClassifier):
        return model
    stats = normalization(None, mean, std)
    path = find_head(model, head)
    normalize = Normalize(*stats) if stats else nn.Identity()
    parameter = next(iter(model.parameters()), None)
    if parameter is not None:
        normalize = normalize.to(parameter.device)
    wrapped = WrappedClassifier(model, normalize, path, classes)
    if classes is not None and len(wrapped.classes) != wrapped.num_classes:
        raise ModelContractError(f"{len(wrapped.classes)} class names for a head with {wrapped.num_classes} outputs")
    return wrapped
