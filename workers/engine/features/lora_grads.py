"""Per-sample gradients of LoRA weights for a whole batch in one backward pass.

Every LoRA factor is a bias-free nn.Linear: y = W x. For a loss that is a sum of per-sample
terms, sample n's gradient is dW[n] = Σ_t (∂L/∂y[n,t]) x[n,t]ᵀ, so capturing each factor's
input x and the gradient of its output is enough; padding positions get zero.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from workers.engine.models.loading import LoadedModel


def lora_parameters(loaded: LoadedModel, layers: list[int]) -> list[tuple[str, Any, Any]]:
    """(name, module, weight) of the LoRA factors in `layers`, in the canonical flatten order."""
    import torch

    out = []
    for i in layers:
        layer = loaded.decoder_layers[i]
        for name, param in layer.named_parameters():
            if "lora_" not in name:
                continue
            module = layer.get_submodule(name.rsplit(".", 1)[0])
            if not isinstance(module, torch.nn.Linear) or module.bias is not None or not name.endswith(".weight"):
                raise ValueError(f"unsupported LoRA parameter {name!r} (only plain LoRA on linear layers)")
            out.append((f"layers.{i}.{name}", module, param))
    if not out:
        raise ValueError(f"decoder layers {layers} have no LoRA parameters")
    return out


class LoraGradCapture:
    """Hooks that record the LoRA factors' inputs and outputs during one forward pass."""

    def __init__(self, loaded: LoadedModel, layers: list[int]) -> None:
        self.loaded, self.layers = loaded, layers
        self.params = lora_parameters(loaded, layers)
        self.dim = sum(p.numel() for _, _, p in self.params)
        self._captured: list[tuple[Any, Any] | None] = []

    def _recorder(self, k: int) -> Any:
        def record(module: Any, args: tuple, output: Any) -> None:
            if self._captured[k] is not None:
                raise RuntimeError(f"LoRA factor {self.params[k][0]} ran twice in one pass")
            self._captured[k] = (args[0].detach(), output)

        return record

    @contextmanager
    def capturing(self) -> Iterator["LoraGradCapture"]:
        """Within: only the chosen LoRA factors require grad, and the hidden state entering the
        lowest chosen layer is detached, so autograd records nothing below it."""
        model = self.loaded.model
        flags = {id(p): p.requires_grad for p in model.parameters()}
        was_training = model.training
        handles = [m.register_forward_hook(self._recorder(k)) for k, (_, m, _) in enumerate(self.params)]
        handles.append(self.loaded.decoder_layers[self.layers[0]].register_forward_pre_hook(_detach_hidden, with_kwargs=True))
        try:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            for _, _, p in self.params:
                p.requires_grad_(True)
            self._captured = [None] * len(self.params)
            yield self
        finally:
            for h in handles:
                h.remove()
            for p in model.parameters():
                p.requires_grad_(flags[id(p)])
            model.train(was_training)
            self._captured = []

    def per_sample_grads(self, loss: Any, mask: Any) -> Any:
        """Gradient of each sample's term of `loss`, float32[n, dim] (flattened in `params` order).

        Args:
            loss: scalar, a sum of per-sample terms.
            mask: bool[n, L], True at real (non-padding) tokens.
        """
        import torch

        missing = [self.params[k][0] for k, c in enumerate(self._captured) if c is None]
        if missing:
            raise RuntimeError(f"LoRA factors did not run in the forward pass: {missing}")
        inputs = [c[0] for c in self._captured]
        grads_out = torch.autograd.grad(loss, [c[1] for c in self._captured])
        self._captured = [None] * len(self.params)
        keep = mask.unsqueeze(-1)
        flat = []
        for x, g in zip(inputs, grads_out):
            # where(), not multiply: padded positions may hold non-finite activations
            x = torch.where(keep, x.float(), 0.0)
            g = torch.where(keep, g.float(), 0.0)
            flat.append(torch.einsum("nto,nti->noi", g, x).flatten(1))
        return torch.cat(flat, dim=1)


def _detach_hidden(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if args:
        args = (args[0].detach(),) + tuple(args[1:])
    elif "hidden_states" in kwargs:
        kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"].detach()}
    return args, kwargs
