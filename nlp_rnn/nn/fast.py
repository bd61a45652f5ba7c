"""Element-wise pieces that x86 CPUs compute faster in another, equal form, and when that form applies."""

import torch


def exporting() -> bool:
    """Traced or exported (ONNX, torch.compile): one graph for every batch size and the plain operators."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) as 2 sigmoid(2x) - 1 when no gradient is needed (decoding): torch's vectorised tanh takes
    4-7x as long as its sigmoid on x86 in fp32 (about 1.5x in bf16), and the four passes over a (B, H)
    tensor that stays in cache cost less than the one tanh. Equal to float32 rounding (a test checks it).
    With gradients, or traced for export, the plain tanh."""
    if torch.is_grad_enabled() or exporting():
        return torch.tanh(x)
    return torch.mul(x, 2).sigmoid_().mul_(2).sub_(1)


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """`tanh` in place, on a tensor of the caller's own (the same numbers, without the new tensors)."""
    if torch.is_grad_enabled() or exporting():
        return x.tanh_()
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)
