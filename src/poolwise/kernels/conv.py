"""The pain CNN's native ops: the direct convolution of ``csrc/direct_conv.cpp`` and the
fused batch norm / ReLU / row max-pool of ``csrc/bn_relu_pool.cpp``.

:func:`conv2d_direct` is a ``torch.library`` custom op (opaque to ``torch.compile``) for 3x3,
stride-1, one-group float32 convolutions on CPU; :func:`bn_relu_pool` is one for training-mode
batch norm followed by ReLU and an optional (2, 1) row max-pool. Each has its backward as a
second op. Callers check :func:`supports` / :func:`supports_bn` and otherwise keep PyTorch's
own kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from poolwise import kernels
from poolwise.kernels.build import library

__all__ = [
    "available",
    "bn_relu_pool",
    "bn_relu_pool_backward",
    "conv2d_direct",
    "conv2d_direct_backward",
    "conv_output_size",
    "library",
    "supports",
    "supports_bn",
]

@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the library is built, loaded and switched on (a constant to ``torch.compile``)."""
    return kernels.available()


def supports(x: Tensor, weight: Tensor, padding: list[int]) -> bool:
    """Whether :func:`conv2d_direct` handles this call (3x3 float32 CPU, padding 0 or 1)."""
    return (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and tuple(weight.shape[2:]) == (3, 3)
        and all(p in (0, 1) for p in padding)
        and x.shape[2] + 2 * padding[0] >= 3
        and x.shape[3] + 2 * padding[1] >= 3
        and available()
    )


def conv_output_size(x: Tensor, weight: Tensor, padding: list[int]) -> tuple[int, int, int, int]:
    """(B, C_out, H_out, W_out) of a stride-1, undilated convolution with zero padding."""
    height = x.shape[2] + 2 * padding[0] - weight.shape[2] + 1
    width = x.shape[3] + 2 * padding[1] - weight.shape[3] + 1
    return x.shape[0], weight.shape[0], height, width


def _forward(x: Tensor, weight: Tensor, bias: Tensor | None, padding: list[int]) -> Tensor:
    # contiguous copies are bound to names so they outlive the call that reads their memory
    x, weight = x.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    out = x.new_empty(conv_output_size(x, weight, padding))
    if out.numel() == 0:
        return out
    library().pw_conv_forward(
        x.data_ptr(),
        weight.data_ptr(),
        None if bias is None else bias.data_ptr(),
        out.data_ptr(),
        *x.shape,
        weight.shape[0],
        *padding,
        torch.get_num_threads(),
    )
    return out


@torch.library.custom_op("poolwise::conv2d_direct", mutates_args=())
def conv2d_direct(x: Tensor, weight: Tensor, bias: Tensor, padding: list[int]) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` by the C++ kernel; see :func:`supports`."""
    return _forward(x, weight, bias, padding)


@conv2d_direct.register_fake
def _(x, weight, bias, padding):
    return x.new_empty(conv_output_size(x, weight, padding))


@torch.library.custom_op("poolwise::conv2d_direct_backward", mutates_args=())
def conv2d_direct_backward(
    grad: Tensor, x: Tensor, weight: Tensor, padding: list[int], need_input_grad: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for (x, weight, bias) of :func:`conv2d_direct`; the x gradient is zeros when
    ``need_input_grad`` is False. The x gradient is the forward kernel run on the output
    gradient with the kernel flipped in both axes and its channel axes swapped."""
    grad, x = grad.contiguous(), x.contiguous()
    if need_input_grad:
        flipped = weight.flip(2, 3).transpose(0, 1)
        grad_x = _forward(grad, flipped, None, [2 - padding[0], 2 - padding[1]])
    else:
        grad_x = x.new_zeros(x.shape)
    grad_w, grad_b = weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])
    library().pw_conv_weight_grad(
        x.data_ptr(),
        grad.data_ptr(),
        grad_w.data_ptr(),
        grad_b.data_ptr(),
        *x.shape,
        weight.shape[0],
        *padding,
        torch.get_num_threads(),
    )
    return grad_x, grad_w, grad_b


@conv2d_direct_backward.register_fake
def _(grad, x, weight, padding, need_input_grad):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _, padding = inputs
    ctx.save_for_backward(x, weight)
    ctx.padding = padding


def _backward(ctx, grad: Tensor):
    x, weight = ctx.saved_tensors
    need_x = ctx.needs_input_grad[0]
    grad_x, grad_w, grad_b = conv2d_direct_backward(grad, x, weight, ctx.padding, need_x)
    return (grad_x if need_x else None), grad_w, grad_b, None


conv2d_direct.register_autograd(_backward, setup_context=_setup_context)


def supports_bn(x: Tensor) -> bool:
    """Whether :func:`bn_relu_pool` handles this input (a 4-d float32 CPU map)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and available()


def _pooled_shape(x: Tensor, pool: bool) -> tuple[int, int, int, int]:
    b, c, h, w = x.shape
    return b, c, (h // 2 if pool else h), w


@torch.library.custom_op("poolwise::bn_relu_pool", mutates_args=())
def bn_relu_pool(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float, pool: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``relu(batch_norm(x))`` with batch statistics, then ``max_pool2d(., (2, 1))`` if
    ``pool``; also returns the batch mean and biased variance per channel (for the running
    statistics, which the caller updates)."""
    x, weight, bias = x.contiguous(), weight.contiguous(), bias.contiguous()
    out = x.new_empty(_pooled_shape(x, pool))
    mean, var = x.new_empty(x.shape[1]), x.new_empty(x.shape[1])
    library().pw_bn_relu_pool_forward(
        x.data_ptr(),
        weight.data_ptr(),
        bias.data_ptr(),
        eps,
        pool,
        out.data_ptr(),
        mean.data_ptr(),
        var.data_ptr(),
        *x.shape,
        torch.get_num_threads(),
    )
    return out, mean, var


@bn_relu_pool.register_fake
def _(x, weight, bias, eps, pool):
    return x.new_empty(_pooled_shape(x, pool)), x.new_empty(x.shape[1]), x.new_empty(x.shape[1])


@torch.library.custom_op("poolwise::bn_relu_pool_backward", mutates_args=())
def bn_relu_pool_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    var: Tensor,
    eps: float,
    pool: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for (x, weight, bias) of :func:`bn_relu_pool`."""
    grad, x = grad.contiguous(), x.contiguous()
    weight, bias = weight.contiguous(), bias.contiguous()
    grad_x = torch.empty_like(x)
    grad_w, grad_b = weight.new_empty(weight.shape), weight.new_empty(weight.shape)
    library().pw_bn_relu_pool_backward(
        grad.data_ptr(),
        x.data_ptr(),
        weight.data_ptr(),
        bias.data_ptr(),
        mean.data_ptr(),
        var.data_ptr(),
        eps,
        pool,
        grad_x.data_ptr(),
        grad_w.data_ptr(),
        grad_b.data_ptr(),
        *x.shape,
        torch.get_num_threads(),
    )
    return grad_x, grad_w, grad_b


@bn_relu_pool_backward.register_fake
def _(grad, x, weight, bias, mean, var, eps, pool):
    return torch.empty_like(x), weight.new_empty(weight.shape), weight.new_empty(weight.shape)


def _bn_setup_context(ctx, inputs, output) -> None:
    x, weight, bias, eps, pool = inputs
    _, mean, var = output
    ctx.save_for_backward(x, weight, bias, mean, var)
    ctx.eps, ctx.pool = eps, pool
    ctx.mark_non_differentiable(mean, var)


def _bn_backward(ctx, grad: Tensor, _grad_mean, _grad_var):
    x, weight, bias, mean, var = ctx.saved_tensors
    grads = bn_relu_pool_backward(grad, x, weight, bias, mean, var, ctx.eps, ctx.pool)
    return (*grads, None, None)


bn_relu_pool.register_autograd(_bn_backward, setup_context=_bn_setup_context)
