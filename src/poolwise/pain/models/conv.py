"""The 2D CNN's layers on poolwise's kernels: C++ kernels for the convolutions and for each
batch norm + ReLU (+ max-pool) where they are built, a max-pool with a vectorised backward, and,
under ``torch.compile`` without the C++ kernels, oneDNN convolutions in the layout that suits each
layer.

L-SFAN's convolutions have 1 to 16 channels, where oneDNN's kernels do poorly on CPU:

- its convolution backward is several times slower in NCHW than in channels-last (NHWC) for
  2 to 8 channels (measured here: 20 vs 5 ms per batch of 40 for the 2 -> 4 conv);
- inductor's fused batch-norm / ReLU / max-pool kernels are slower on channels-last maps with
  so few channels (a 16-lane vector holds 2 to 8 useful values) than on NCHW maps.

Where the C++ kernels of :mod:`poolwise.kernels.conv` are built (they need the C++ compiler
that ``torch.compile`` on CPU needs anyway), :class:`LayoutConv2d` runs on the direct
convolution, in NCHW, forward and backward, and :class:`ConvStack` runs each training-mode batch
norm, ReLU and pool as one op, eagerly and under ``torch.compile`` alike (eager training and
evaluation are about twice as fast as on ``nn.Conv2d``; ``benchmarks/bench_loso.py``).
Without them, eager calls are plain ``nn.Conv2d``; under ``torch.compile`` each convolution is
one opaque op (``poolwise::conv2d_in_layout``) that converts its input to the layout that suits
the layer, convolves with oneDNN and hands an NCHW map back, so the kernels around it stay NCHW;
the first convolution (one input channel) stays NCHW and computes its weight gradient as one
matrix product over the nine shifted views of the input. docs/pain.md has the numbers.

In traces, scripts and exports (ONNX, TorchScript, ``torch.export``) :class:`LayoutConv2d` *is*
``nn.Conv2d``, :class:`RowMaxPool2d` *is* ``nn.MaxPool2d`` and :class:`ConvStack` the plain
sequence, so graphs keep the standard operators; with the kernels switched off
(``POOLWISE_NATIVE=0``) the convolutions and batch norms are the plain layers too. The
state-dict keys and the call are those of the plain layers everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from poolwise.kernels import conv as native

__all__ = ["ConvStack", "LayoutConv2d", "RowMaxPool2d", "conv2d_in_layout"]


def _memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


@torch.library.custom_op("poolwise::conv2d_in_layout", mutates_args=())
def conv2d_in_layout(
    x: Tensor, weight: Tensor, bias: Tensor, padding: list[int], channels_last: bool
) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, no dilation, one group),
    computed in the given layout; the result is NCHW-contiguous."""
    fmt = _memory_format(channels_last)
    return F.conv2d(x.contiguous(memory_format=fmt), weight, bias, padding=padding).contiguous()


@conv2d_in_layout.register_fake
def _(x, weight, bias, padding, channels_last):
    return x.new_empty(native.conv_output_size(x, weight, padding))


def _single_channel_weight_grad(grad: Tensor, x: Tensor, kernel: tuple[int, int], padding):
    """d loss / d weight of a one-input-channel conv: (C_out, B*T*S) @ (B*T*S, kh*kw)."""
    kh, kw = kernel
    _, channels, height, width = grad.shape
    xp = F.pad(x[:, 0], (padding[1], padding[1], padding[0], padding[0]))
    shifted = torch.stack(
        [xp[:, i : i + height, j : j + width] for i in range(kh) for j in range(kw)]
    )
    g = grad.transpose(0, 1).reshape(channels, -1)
    return (g @ shifted.reshape(kh * kw, -1).T).view(channels, 1, kh, kw)


@torch.library.custom_op("poolwise::conv2d_in_layout_backward", mutates_args=())
def conv2d_in_layout_backward(
    grad: Tensor,
    x: Tensor,
    weight: Tensor,
    padding: list[int],
    channels_last: bool,
    need_input_grad: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients for (x, weight, bias) of :func:`conv2d_in_layout`; NCHW-contiguous. The x
    gradient is zeros when ``need_input_grad`` is False."""
    fmt = _memory_format(channels_last)
    grad = grad.contiguous(memory_format=fmt)
    if x.shape[1] == 1 and not channels_last and not need_input_grad:
        grad_w = _single_channel_weight_grad(grad, x, weight.shape[2:], padding)
        return x.new_zeros(x.shape), grad_w, grad.sum((0, 2, 3))
    grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
        grad,
        x.contiguous(memory_format=fmt),
        weight,
        [weight.shape[0]],
        [1, 1],
        padding,
        [1, 1],
        False,
        [0, 0],
        1,
        [need_input_grad, True, True],
    )
    if grad_x is None:
        grad_x = x.new_zeros(x.shape)
    return grad_x.contiguous(), grad_w.contiguous(), grad_b


@conv2d_in_layout_backward.register_fake
def _(grad, x, weight, padding, channels_last, need_input_grad):
    return x.new_empty(x.shape), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, _, padding, channels_last = inputs
    ctx.save_for_backward(x, weight)
    ctx.padding, ctx.channels_last = padding, channels_last


def _backward(ctx, grad: Tensor):
    x, weight = ctx.saved_tensors
    need_x = ctx.needs_input_grad[0]
    grad_x, grad_w, grad_b = conv2d_in_layout_backward(
        grad, x, weight, ctx.padding, ctx.channels_last, need_x
    )
    return (grad_x if need_x else None), grad_w, grad_b, None, None


conv2d_in_layout.register_autograd(_backward, setup_context=_setup_context)


def _compiling() -> bool:
    """Under ``torch.compile`` but not ``torch.export`` (an exported graph, ONNX included, keeps
    the standard operators)."""
    return torch.compiler.is_compiling() and not torch.compiler.is_exporting()


def _on_kernels() -> bool:
    """Eager execution or ``torch.compile``: not a trace, script or export (ONNX, TorchScript,
    ``torch.export``), whose graphs keep the standard operators."""
    return not (
        torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    )


class LayoutConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs as :func:`poolwise.kernels.conv.conv2d_direct` where that
    supports the call (eagerly and under ``torch.compile``), else, under ``torch.compile``, as
    :func:`conv2d_in_layout` (channels-last when it has more than one input channel, NCHW
    otherwise).

    Only stride 1, no dilation, one group, numeric padding and a bias take these paths; any
    other configuration is plain ``nn.Conv2d`` everywhere.
    """

    def _layout_path(self) -> bool:
        return (
            _on_kernels()
            and self.bias is not None
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._layout_path():
            return super().forward(x)
        padding = list(self.padding)
        if native.supports(x, self.weight, padding):
            return native.conv2d_direct(x, self.weight, self.bias, padding)
        if not _compiling():
            return super().forward(x)
        return conv2d_in_layout(x, self.weight, self.bias, padding, self.in_channels > 1)


class RowMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that, for a (2, 1) window with stride (2, 1) and outside traces and
    exports, is the elementwise maximum of the even and the odd rows (the same values).

    Inductor lowers max-pool's backward to a scalar scatter over the whole map, and eager
    ``max_pool2d`` on these narrow maps is slower than the maximum of two strided views, whose
    backward is vectorised too. The gradient only differs on exact ties
    between the two rows (shared equally instead of going to the first row); after the ReLU
    that precedes every pool in the CNN, ties are zeros, whose gradient the ReLU drops anyway.
    """

    def _rows_path(self) -> bool:
        return (
            _on_kernels()
            and self.kernel_size == (2, 1)
            and self.stride == (2, 1)
            and self.padding == 0
            and self.dilation == 1
            and not self.ceil_mode
            and not self.return_indices
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self._rows_path():
            return super().forward(x)
        rows = x.shape[-2] // 2 * 2
        return torch.maximum(x[..., 0:rows:2, :], x[..., 1:rows:2, :])


def _fusable_norm(norm: nn.Module, relu: nn.Module, x: Tensor) -> bool:
    return (
        type(norm) is nn.BatchNorm2d
        and type(relu) is nn.ReLU
        and norm.training
        and norm.affine
        and norm.track_running_stats
        and norm.momentum is not None
        and native.supports_bn(x)
    )


def _fused_norm_relu(norm: nn.BatchNorm2d, x: Tensor, pool: bool) -> Tensor:
    """``relu(norm(x))`` (then the row max-pool if ``pool``) as one C++ op, with the running
    statistics updated as ``nn.BatchNorm2d`` does in training (unbiased running variance)."""
    out, mean, var = native.bn_relu_pool(x, norm.weight, norm.bias, norm.eps, pool)
    count = x.numel() // x.shape[1]
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        norm.running_mean.mul_(1 - norm.momentum).add_(mean, alpha=norm.momentum)
        unbiased = var * (count / max(count - 1, 1))
        norm.running_var.mul_(1 - norm.momentum).add_(unbiased, alpha=norm.momentum)
    return out


class ConvStack(nn.Sequential):
    """``nn.Sequential`` of the CNN's layers. In training mode, eagerly or under
    ``torch.compile``, each ``BatchNorm2d, ReLU[, RowMaxPool2d]`` run is one fused C++ op
    (:func:`poolwise.kernels.conv.bn_relu_pool`) where that is built: PyTorch's kernels for it
    make several passes over the batch's maps; this one handles each channel whole, so its
    second pass reads from cache. In evaluation, traces and exports it is the plain sequence."""

    def forward(self, x: Tensor) -> Tensor:
        if not (_on_kernels() and self.training):
            return super().forward(x)
        layers, i = list(self), 0
        while i < len(layers):
            if i + 1 < len(layers) and _fusable_norm(layers[i], layers[i + 1], x):
                after = layers[i + 2] if i + 2 < len(layers) else None
                pool = isinstance(after, RowMaxPool2d) and after._rows_path()
                x = _fused_norm_relu(layers[i], x, pool)
                i += 3 if pool else 2
                continue
            x = layers[i](x)
            i += 1
        return x
