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

import math
from dataclasses import dataclass
from typing import Optional

import torch


class _Store:
    """What the steps kept in the forward (in order, with its version then) and their output gradients (as the
    backward reaches them), for the one backward after the loop."""

    def __init__(self) -> None:
        self.inputs: list[tuple[torch.Tensor, int]] = []  # (x_t, its version when used)
        self.grads: dict[int, torch.Tensor] = {}

    def answered(self, who: str) -> list[int]:
        """The steps whose backward ran, in forward order; refuses (one line) if one's kept input changed."""
        steps = [i for i in range(len(self.inputs)) if i in self.grads]
        for i in steps:
            x, version = self.inputs[i]
            if x._version != version:
                raise RuntimeError(
                    f"{who}: a step's input was changed in place after its product; "
                    "compute the next step from a new tensor"
                )
        return steps

    def clear(self) -> None:
        self.inputs.clear()
        self.grads.clear()


class _Weight(torch.autograd.Function):
    """The weight as the steps use it (cast to the compute type); its backward runs after every step's backward
    (autograd runs a node once all the nodes using its output are done) and turns the kept rows into dW."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, store: _Store, dtype: torch.dtype) -> torch.Tensor:
        ctx.store, ctx.weight_dtype = store, weight.dtype
        # the steps give it no gradient: no zero-filled (out, in) matrix to add the product to
        ctx.set_materialize_grads(False)
        return weight.to(dtype) if weight.dtype != dtype else weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad: Optional[torch.Tensor]):
        store: _Store = ctx.store
        steps = store.answered("DeferredLinear")
        if steps:
            dy = torch.cat([store.grads[i] for i in steps], dim=-2)  # ([D,] rows, out)
            x = torch.cat([store.inputs[i][0].to(dy.dtype) for i in steps], dim=-2)  # ([D,] rows, in)
            product = dy.transpose(-1, -2) @ x
            grad = product if grad is None else grad + product.to(grad.dtype)
        store.clear()
        return None if grad is None else grad.to(ctx.weight_dtype), None, None


class _Step(torch.autograd.Function):
    """x Wᵀ whose backward gives x's gradient only and keeps dy for `_Weight`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, store: _Store) -> torch.Tensor:
        ctx.store, ctx.index, ctx.x_dtype = store, len(store.inputs), x.dtype
        store.inputs.append((x, x._version))
        ctx.save_for_backward(weight)
        return x.to(weight.dtype) @ weight.transpose(-1, -2)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (weight,) = ctx.saved_tensors
        ctx.store.grads[ctx.index] = dy
        dx = (dy @ weight).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return dx, None, None


class DeferredLinear:
    """y = x Wᵀ + b at every step of one forward pass, W's gradient computed once for all steps (see above).

    A stack of D weights (D, out, in) multiplies a stack of inputs (D, B, in), each its own (e.g. a
    bidirectional layer's two directions in one batched product); the bias is then (D, 1, out)."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
        self.store = _Store()
        dtype = compute_dtype(weight)
        self.weight = _Weight.apply(weight, self.store, dtype)
        self.bias = None if bias is None else bias.to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # the step's own casts (above), not autocast's
            y = _Step.apply(x, self.weight, self.store)
            return y if self.bias is None else y + self.bias


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The type a pass's products run in: autocast's where it is on for the tensor's device, else its own."""
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else tensor.dtype


def applies(module: torch.nn.Module) -> bool:
    """Whether a forward pass of `module` should defer its per-step weight gradients: training with gradients."""
    return module.training and torch.is_grad_enabled()


class _Blocks:
    """Memory for the score buffers, kept between passes. A fresh (T, B, S, A) buffer (up to a few hundred MB)
    at every training step pays a page fault at the first touch of each page, and in a virtual machine that
    made the forward's additions into it several times slower than into memory touched before (docs/results.md:
    ~11 ms a call against ~1.4 ms on a 2-core Xeon). So a pass borrows the block an earlier pass gave back when
    its backward was done: one block kept per device and type, replaced by a larger one (a quarter to spare)
    when a larger pass comes. Passes in flight together each get their own; a pass whose backward never runs
    keeps its block, freed with it."""

    def __init__(self) -> None:
        self.free: dict[tuple, torch.Tensor] = {}

    def borrow(self, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        need = math.prod(shape)
        block = self.free.pop((like.device, dtype), None)
        if block is None or block.numel() < need:
            block = like.new_empty(need + need // 4, dtype=dtype)
        return block

    def give_back(self, block: torch.Tensor) -> None:
        kept = self.free.get((block.device, block.dtype))
        if kept is None or kept.numel() < block.numel():
            self.free[(block.device, block.dtype)] = block


BLOCKS = _Blocks()


class _ScoreStore:
    """One pass's additive-attention buffers: every step's sigmoid (T, B, S, A) in a borrowed block, turned in
    place into that step's gradient of the keys as the backward reaches it; which steps have one."""

    def __init__(self, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype) -> None:
        self.block: Optional[torch.Tensor] = BLOCKS.borrow(shape, like, dtype)
        self.buffer = self.block[: math.prod(shape)].view(shape)
        self.used = 0  # steps run forward
        self.done: set[int] = set()  # steps whose backward ran


class _AfterSteps(torch.autograd.Function):
    """A tensor as every step of a pass uses it, unchanged, with the pass's store; the subclass's backward runs
    after every step's backward (autograd runs a node once all the nodes using its output are done) and
    computes the tensor's gradient from what the steps kept. The steps give it none: no zero-filled tensor."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, store) -> torch.Tensor:
        ctx.store = store
        ctx.set_materialize_grads(False)
        return tensor.view_as(tensor)


class _Keys(_AfterSteps):
    """The keys: their gradient is the sum of the steps' key gradients, in one pass over the buffer (instead
    of autograd adding a (B, S, A) gradient into them at every step)."""

    @staticmethod
    def backward(ctx, grad: Optional[torch.Tensor]):
        store: _ScoreStore = ctx.store
        steps = sorted(store.done)
        if steps:  # the first steps (all of them, in training): a slice, not an indexed copy
            part = store.buffer[: len(steps)] if len(steps) == steps[-1] + 1 else store.buffer[steps]
            total = part.sum(0)
            grad = total if grad is None else grad + total
        store.done.clear()
        if store.block is not None:  # nothing reads the buffer after this: the next pass may write into it
            BLOCKS.give_back(store.block)
            store.block = None
        return grad, None


class _Score(torch.autograd.Function):
    """One step's additive scores 2 v . sigmoid(keys + 2 q) - sum(v) (B, S), the sigmoid written into the
    pass's buffer; the backward leaves the keys' gradient of the step there (for `_Keys`)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, keys: torch.Tensor, v: torch.Tensor, store: _ScoreStore):
        index = store.used
        store.used += 1
        s = torch.add(keys, q.unsqueeze(1), alpha=2, out=store.buffer[index]).sigmoid_()  # (B, S, A)
        ctx.store, ctx.index = store, index
        ctx.save_for_backward(v)
        return (s @ v) * 2 - v.sum()

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (v,) = ctx.saved_tensors
        store: _ScoreStore = ctx.store
        s = store.buffer[ctx.index]  # the pass's own buffer: nothing else writes into it
        g = g.to(s.dtype)
        rows = g.reshape(1, -1)  # (1, B*S)
        dv = (rows @ s.reshape(rows.size(1), -1)).squeeze(0) * 2 - g.sum()  # (A,)
        upstream = (g * 2).unsqueeze(-1) * v  # (B, S, A): the gradient reaching the sigmoid
        torch.ops.aten.sigmoid_backward.grad_input(upstream, s, grad_input=s)  # in place: the pre-sigmoid's
        store.done.add(ctx.index)
        dq = s.sum(1) * 2  # (B, A)
        return dq, None, dv, None


class DeferredScores:
    """Additive attention's scores at every step of one teacher-forced pass (training): the sigmoid of each
    step kept in one preallocated (T, B, S, A) buffer, its backward turned into the keys' gradient in place,
    and the keys' gradient summed once after the loop. Autograd's own graph makes about eleven passes over a
    (B, S, A) tensor per step in the backward (an outer product, the sigmoid's backward, a copy for the
    query's factor 2, its sum, the energy's weight gradient and an addition into the keys' gradient); this
    makes five, with no allocation of a (B, S, A) tensor for the forward. Same scores; gradients equal to
    float rounding (the keys' sum over steps runs in one reduction instead of T additions).

        scores = DeferredScores(keys, energy_weight, steps)  # once per pass, keys (B, S, A), weight (1, A)
        s_t = scores(q_t)                                      # at every step: q_t (B, A) -> (B, S)
    """

    def __init__(self, keys: torch.Tensor, weight: torch.Tensor, steps: int) -> None:
        self.dtype = dtype = compute_dtype(keys)
        self.store = _ScoreStore((steps, *keys.shape), keys, dtype)
        self.keys = _Keys.apply(keys.to(dtype), self.store)
        self.v = weight.reshape(-1).to(dtype)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        if self.store.used >= self.store.buffer.size(0):
            raise RuntimeError("DeferredScores: more steps than the pass was built for")
        with torch.autocast(q.device.type, enabled=False):
            return _Score.apply(q.to(self.dtype), self.keys, self.v, self.store)


class _Values(_AfterSteps):
    """The values: their gradient in one batched product, Σ_t w_tᵀ g_t = Wᵀ G over the steps, instead of
    autograd adding a (B, S, Dv) outer product into them at every step."""

    @staticmethod
    def backward(ctx, grad: Optional[torch.Tensor]):
        # the store holds the steps' attention weights (in the compute type) and their contexts' gradients
        store: _Store = ctx.store
        steps = store.answered("DeferredContext")
        if steps:
            weights = torch.stack([store.inputs[i][0] for i in steps], dim=2)  # (B, S, T)
            grads = torch.stack([store.grads[i] for i in steps], dim=1)  # (B, T, Dv)
            total = torch.bmm(weights, grads)  # (B, S, Dv)
            grad = total if grad is None else grad + total
        store.clear()
        return grad, None


class _Context(torch.autograd.Function):
    """One step's context w (B, S) · values (B, S, Dv) -> (B, Dv); the backward gives w's gradient and keeps
    the context's gradient for `_Values`."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, values: torch.Tensor, store: _Store) -> torch.Tensor:
        ctx.store, ctx.index, ctx.w_dtype = store, len(store.inputs), w.dtype
        w = w.to(values.dtype)  # under autocast a new tensor; else the softmax's output
        store.inputs.append((w, w._version))
        ctx.save_for_backward(values)
        return torch.bmm(w.unsqueeze(1), values).squeeze(1)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (values,) = ctx.saved_tensors
        g = g.to(values.dtype)
        ctx.store.grads[ctx.index] = g
        dw = torch.bmm(values, g.unsqueeze(2)).squeeze(2).to(ctx.w_dtype) if ctx.needs_input_grad[0] else None
        return dw, None, None


class DeferredContext:
    """Attention's context at every step of one teacher-forced pass (training): the values cast to the compute
    type once per pass (not at every step, as autocast does for a tensor that is not a parameter), and their
    gradient computed once after the loop, one batched product over all steps' weights and context gradients,
    instead of a (B, S, Dv) outer product added into them at every step. Same contexts; gradients equal to
    float rounding.

        mix = DeferredContext(values, steps)  # once per pass, values (B, S, Dv)
        c_t = mix(w_t)                        # at every step: weights (B, S) -> context (B, Dv)
    """

    def __init__(self, values: torch.Tensor, steps: int) -> None:
        self.store, self.steps = _Store(), steps
        self.values = _Values.apply(values.to(compute_dtype(values)), self.store)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        if len(self.store.inputs) >= self.steps:
            raise RuntimeError("DeferredContext: more steps than the pass was built for")
        with torch.autocast(w.device.type, enabled=False):
            return _Context.apply(w, self.values, self.store)


@dataclass
class AttentionPass:
    """An attention's deferred products for one teacher-forced pass (`Attention.deferred_pass`): the query's product
    (None where the kind has none), the scores (None: the module's own) and the context."""

    query: Optional[DeferredLinear]
    scores: Optional[DeferredScores]
    context: DeferredContext
