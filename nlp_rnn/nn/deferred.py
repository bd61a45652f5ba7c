"""Per-step products whose weight gradient is computed once, after the loop over steps (training only).

A teacher-forced decoder multiplies the same weights at every target step: x_t Wᵀ for t = 1..T. Autograd's
backward of each such product computes that step's share of the weight gradient, dy_tᵀ x_t, a small product
of B rows, and adds it into the weight's gradient: T small products and T additions of a whole (out, in)
matrix per weight. The weight gradient is the sum over steps, Σ_t dy_tᵀ x_t = DYᵀ X over all B·T rows, so
here each step's backward computes only the input gradient dy_t W and keeps dy_t; once the last step's
backward has run, one product over all rows gives the weight gradient (what cuDNN's recurrent layers do).

    product = DeferredLinear(weight, bias)  # once per forward pass, before the loop
    y_t = product(x_t)                      # at every step: x_t Wᵀ + b

Under autocast the weight is cast once per pass (as autocast's own cache does) and every product runs in
the autocast type; the gradient reaching the weight is the same sum, in one product instead of T (equal to
float rounding: a test compares it with `F.linear` step by step). The inputs x_t are kept without autograd's
version check, so they must not be changed in place after the step; `DeferredLinear` checks their versions
in the backward and refuses with one line if one changed.
"""

from typing import Optional

import torch


class _Store:
    """The inputs of the steps (forward order) and their output gradients (as the backward reaches them)."""

    def __init__(self) -> None:
        self.inputs: list[tuple[torch.Tensor, int]] = []  # (x_t, its version when used)
        self.grads: dict[int, torch.Tensor] = {}


class _Weight(torch.autograd.Function):
    """The weight as the steps use it (cast to the compute type); its backward runs after every step's backward
    (autograd runs a node once all the nodes using its output are done) and turns the kept rows into dW."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, store: _Store, dtype: torch.dtype) -> torch.Tensor:
        ctx.store, ctx.weight_dtype = store, weight.dtype
        return weight.to(dtype) if weight.dtype != dtype else weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        store: _Store = ctx.store
        steps = [i for i in range(len(store.inputs)) if i in store.grads]
        if steps:
            for i in steps:
                x, version = store.inputs[i]
                if x._version != version:
                    raise RuntimeError(
                        "DeferredLinear: a step's input was changed in place after its product; "
                        "compute the next step from a new tensor"
                    )
            dy = torch.cat([store.grads[i] for i in steps])  # (rows, out)
            x = torch.cat([store.inputs[i][0].to(dy.dtype) for i in steps])  # (rows, in)
            grad = grad + (dy.t() @ x).to(grad.dtype)
        store.inputs.clear()
        store.grads.clear()
        return grad.to(ctx.weight_dtype), None, None


class _Step(torch.autograd.Function):
    """x Wᵀ whose backward gives x's gradient only and keeps dy for `_Weight`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, store: _Store) -> torch.Tensor:
        ctx.store, ctx.index, ctx.x_dtype = store, len(store.inputs), x.dtype
        store.inputs.append((x, x._version))
        ctx.save_for_backward(weight)
        return x.to(weight.dtype) @ weight.t()

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (weight,) = ctx.saved_tensors
        ctx.store.grads[ctx.index] = dy
        dx = (dy @ weight).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return dx, None, None


class DeferredLinear:
    """y = x Wᵀ + b at every step of one forward pass, W's gradient computed once for all steps (see above)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        self.store = _Store()
        dtype = (
            torch.get_autocast_dtype(weight.device.type)
            if torch.is_autocast_enabled(weight.device.type)
            else weight.dtype
        )
        self.weight = _Weight.apply(weight, self.store, dtype)
        self.bias = None if bias is None else bias.to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # the step's own casts (above), not autocast's
            y = _Step.apply(x, self.weight, self.store)
            return y if self.bias is None else y + self.bias


def applies(module: torch.nn.Module) -> bool:
    """Whether a forward pass of `module` should defer its per-step weight gradients: training with gradients."""
    return module.training and torch.is_grad_enabled()
