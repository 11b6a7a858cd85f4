"""The networks that compute a coupling's log-scale and shift from the conditioning half.

:class:`ResNetST` and :class:`ConvST` end in a zero-initialised plain convolution so that every
coupling starts as the identity. It is deliberately not normalized: weight norm of an all-zero weight
is 0/0, and a norm after it would undo the zero init. :class:`ReferenceST`, the Real-NVP reference
code's network, ends in a weight-normed convolution instead: its couplings do not start as the identity
(their scalar tanh bound starts at 0 in checkerboard couplings, a pure shift, and at 1 in channel ones).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avade.errors import ConfigError, RegistryError
from avade.nn import Conv2d, normed
from avade.nn.memory_format import to_channels_last, to_contiguous
from avade.norms.batch_norm import BatchNormed
from avade.norms.weight_norm import WeightNorm


class ScaledZeroConv(Conv2d):
    """Glow's ``conv2d_zeros``: a zero-initialised convolution whose output is multiplied by a learned
    per-channel ``exp(logscale_factor * logs)`` (``logs`` starts at 0, so the scale starts at 1). The
    factor (3 in Glow) lets the output scale move ``logscale_factor`` times faster under Adam-type
    optimisers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, logscale_factor: float,
                 edge_bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, edge_bias=edge_bias)
        self.logscale_factor = float(logscale_factor)
        self.logs = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution times the learned per-channel scale ``exp(logscale_factor * logs)``."""
        y = super().forward(x)
        return y * torch.exp(self.logs * self.logscale_factor).to(y.dtype).view(1, -1, 1, 1)


def zero_conv(in_channels: int, out_channels: int, kernel_size: int = 3, logscale_factor: float = 0.0,
              edge_bias: bool = False) -> nn.Conv2d:
    """A convolution whose weights and bias start at exactly zero; with ``logscale_factor > 0`` it is
    Glow's :class:`ScaledZeroConv` (a learned output scale ``exp(logscale_factor * logs)``);
    ``edge_bias``: Glow's edge channel (see :class:`avade.nn.Conv2d`)."""
    conv = (ScaledZeroConv(in_channels, out_channels, kernel_size, logscale_factor, edge_bias) if logscale_factor > 0
            else Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, edge_bias=edge_bias))
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    if conv.edge_weight is not None:
        nn.init.zeros_(conv.edge_weight)
    return conv


def batch_norm(bn: nn.Module, x: torch.Tensor, update_stats: bool) -> torch.Tensor:
    """``bn(x)``; with ``update_stats=False`` a training-mode batch norm still normalizes with the
    batch's statistics but leaves its running statistics alone (the coupling's inverse in training:
    the running statistics, used in eval mode, must describe data, not the model's samples). Batch
    statistics in both directions are what the reference Real-NVP does for its s/t networks (their
    batch norms take the same ``train`` flag forward and in reverse), and they keep the training-mode
    inverse exact."""
    if update_stats or not isinstance(bn, nn.BatchNorm2d) or not bn.training:
        return bn(x)
    return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)


def layer(module: nn.Module, x: torch.Tensor, update_stats: bool) -> torch.Tensor:
    """``module(x)`` for a (normalized) convolution; a ``batch-norm``-normalized one honours
    ``update_stats`` like :func:`batch_norm`."""
    if not update_stats and isinstance(module, BatchNormed):
        return batch_norm(module.norm, module.layer(x), update_stats)
    return module(x)


def checked_norm(norm: str) -> str:
    """``norm`` if it is a registered normalization, else a ConfigError on the ``norm`` key."""
    from avade.registry import get_registry

    try:
        get_registry().get("norm", norm)
    except RegistryError as exc:
        raise ConfigError(str(exc), path="norm") from None
    return norm


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm: str, edge_bias: bool = False) -> nn.Module:
    return normed(Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, edge_bias=edge_bias),
                  norm)


class ResidualBlock(nn.Module):
    """Pre-activation residual block ``h + conv(relu(bn(conv(relu(bn(h))))))`` (Real-NVP), 3x3 convolutions.

    ``reference``: the Real-NVP reference code's ``residual_block`` (no bottleneck), whose batch norms
    shift but do not scale (``bn_in``, ``bn_0`` there: ``bn1``, ``bn2`` here) and whose first convolution
    (``h_0``: ``conv1``) has no weight-norm magnitude and, when batch norm follows it, no bias.
    """

    def __init__(self, channels: int, norm: str, batch_norm: bool, reference: bool = False) -> None:
        super().__init__()
        bn = ShiftBatchNorm if reference else nn.BatchNorm2d
        self.bn1 = bn(channels) if batch_norm else nn.Identity()
        self.conv1 = (_ref_conv(channels, channels, 3, norm, bias=not batch_norm, scale=False) if reference
                      else _conv(channels, channels, 3, norm))
        self.bn2 = bn(channels) if batch_norm else nn.Identity()
        self.conv2 = (_ref_conv(channels, channels, 3, norm, bias=True, scale=True) if reference
                      else _conv(channels, channels, 3, norm))
        self.fresh = batch_norm

    def forward(self, h: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        """``h`` plus the residual; ``update_stats=False`` (the inverse direction) keeps batch-norm statistics."""
        # ReLU in place wherever its input is a fresh tensor nobody else needs (a conv or batch-norm
        # output): one large allocation less per activation. Without batch norm, bn1(h) is h itself,
        # which the skip connection still needs.
        r = layer(self.conv1, F.relu(batch_norm(self.bn1, h, update_stats), inplace=self.fresh), update_stats)
        r = layer(self.conv2, F.relu(batch_norm(self.bn2, r, update_stats), inplace=True), update_stats)
        return h + r


class ResNetST(nn.Module):
    """Real-NVP's s/t network: conv3x3, ``blocks`` residual blocks of ``hidden`` channels, zero conv3x3.

    Simpler than the Real-NVP reference code's ``resnet`` (tensorflow/models, research/real_nvp), which
    also batch-normalizes its input and feeds ``relu([2 x, -2 x])`` plus the checkerboard mask as an
    extra channel, sums 1x1 "skip" convolutions of every block's output, and ends in a weight-normed
    1x1 convolution (not zero-initialised; its coupling's scalar tanh bound starts at 0 instead). That
    network is :class:`ReferenceST` (``net = "reference"``).
    """

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int, blocks: int, norm: str,
                 batch_norm: bool, logscale_factor: float = 0.0) -> None:
        super().__init__()
        self.inp = _conv(in_channels, hidden, 3, checked_norm(norm))
        self.blocks = nn.ModuleList(ResidualBlock(hidden, norm, batch_norm) for _ in range(blocks))
        self.out_bn = nn.BatchNorm2d(hidden) if batch_norm else nn.Identity()
        self.out = zero_conv(hidden, out_channels, logscale_factor=logscale_factor)
        self.fresh = batch_norm

    def forward(self, x: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        """``update_stats=False``: batch norms leave their running statistics alone (see :func:`batch_norm`)."""
        h = layer(self.inp, to_channels_last(x), update_stats)
        for block in self.blocks:
            h = block(h, update_stats)
        return to_contiguous(self.out(F.relu(batch_norm(self.out_bn, h, update_stats), inplace=self.fresh)))


class ConvST(nn.Module):
    """Glow's s/t network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero conv3x3, ``hidden`` channels.

    Glow's reference code normalizes the two hidden convolutions with actnorm (``norm="actnorm"``; avade's
    Glow defaults to ``none``, see :class:`~avade.flows.glow.GlowConfig`), scales the zero conv's output
    by ``exp(3 * logs)`` (``logscale_factor=3``) and gives both 3x3 convolutions its edge channel
    (``edge_bias``)."""

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int, norm: str,
                 batch_norm: bool = False, logscale_factor: float = 0.0, edge_bias: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, hidden, 3, checked_norm(norm), edge_bias)
        self.bn1 = nn.BatchNorm2d(hidden) if batch_norm else nn.Identity()
        self.conv2 = _conv(hidden, hidden, 1, norm)
        self.bn2 = nn.BatchNorm2d(hidden) if batch_norm else nn.Identity()
        self.out = zero_conv(hidden, out_channels, logscale_factor=logscale_factor, edge_bias=edge_bias)

    def forward(self, x: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        """``update_stats=False``: batch norms leave their running statistics alone (see :func:`batch_norm`)."""
        # In-place ReLUs: their inputs are fresh conv / batch-norm outputs (one allocation less each).
        h = F.relu(batch_norm(self.bn1, layer(self.conv1, to_channels_last(x), update_stats), update_stats),
                   inplace=True)
        h = F.relu(batch_norm(self.bn2, layer(self.conv2, h, update_stats), update_stats), inplace=True)
        return to_contiguous(self.out(h))


# -- the Real-NVP reference network (net = "reference") ----------------------------------------------


class ShiftBatchNorm(nn.BatchNorm2d):
    """Batch norm with a learned shift but no learned scale (the reference's ``batch_norm(...,
    scale=False)``, used for every batch norm of its s/t networks), ``eps`` 1e-4, momentum 0.1 (its
    ``decay=.1``)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-4, momentum=0.1, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))
        # A fixed unit scale (a buffer, not saved) rather than none: CUDA's batch-norm backward gives an
        # empty gradient for a bias passed without a weight (seen with torch 2.11 on an H200). Same numbers.
        del self.weight
        self.register_buffer("weight", torch.ones(channels), persistent=False)


def _ref_conv(in_channels: int, out_channels: int, kernel_size: int, norm: str, *, bias: bool,
              scale: bool) -> nn.Module:
    """The reference's ``conv_layer`` under the registered ``norm``: weights uniform in
    ``±sqrt(2 / in_channels)``, zero bias. Under ``weight-norm``, the magnitude ``g`` starts at the
    reference's ``stddev * sqrt(fan_in / 12)`` where it has one (``scale=True``) and is fixed at 1 where
    it has none (``scale=False``: the weight is the unit-norm direction ``v / ||v||``)."""
    conv = Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    stddev = (2.0 / in_channels) ** 0.5
    with torch.no_grad():
        nn.init.uniform_(conv.weight, -stddev, stddev)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    module = normed(conv, norm)
    if isinstance(module, WeightNorm):
        g = module.layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(stddev * (in_channels * kernel_size**2 / 12.0) ** 0.5 if scale else 1.0)
        g.requires_grad_(scale)
    return module


class ReferenceST(nn.Module):
    """The s/t network of the Real-NVP reference code (tensorflow/models, research/real_nvp:
    ``masked_conv_aff_coupling`` / ``conv_ch_aff_coupling`` around ``resnet`` with ``skip=True``):

    - ``bn_in``: batch norm of the (masked) conditioning input, shift but no scale; in checkerboard
      couplings its output is doubled (``res *= 2.``; the channel couplings do not double);
    - concat-ReLU: ``relu([h, -h])``, plus the checkerboard mask as one more input channel in masked
      checkerboard couplings (``mask``; ``2 C + 1`` input channels, else ``2 C``);
    - ``h_in``: conv3x3 to ``hidden`` channels (bias, weight-norm direction only), then ``blocks``
      :class:`ResidualBlock` with ``reference``;
    - skip connections: 1x1 convolutions of ``h_in``'s output and of every block's output, summed;
    - ``bn_pre_out`` -> ReLU -> a weight-normed 1x1 output convolution, *not* zero-initialised.

    So unlike :class:`ResNetST` a fresh network's output is not zero, and its coupling does not start at
    the identity: with the reference's scalar tanh bound (0 at init in checkerboard couplings, 1 in
    channel couplings) a checkerboard coupling starts as the volume-preserving shift ``y = x + t(x_a)``
    (see :mod:`avade.flows.coupling`). Without ``batch_norm`` there is no ``bn_in``, no doubling and the
    blocks' first convolution (the reference's ``h_0``) gets a bias, as in the reference.
    Differences: PyTorch's running variance is unbiased (the reference's is biased; eval
    mode only, a factor n / (n - 1) with n = batch x pixels), ``blocks = 0`` (the reference's plain
    two-convolution network) is not offered, and without ``batch_norm`` the coupling does not add the
    reference's learned scalar ``scale_shift`` to its log-scales.
    """

    mask: torch.Tensor | None  # a buffer when given

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int, blocks: int, norm: str,
                 batch_norm: bool, mask: torch.Tensor | None = None, input_scale: float = 1.0) -> None:
        super().__init__()
        if blocks < 1:
            raise ConfigError("net = \"reference\" needs blocks >= 1 (the reference's resnet)", path="blocks")
        checked_norm(norm)
        self.bn_in = ShiftBatchNorm(in_channels) if batch_norm else nn.Identity()
        self.input_scale = float(input_scale) if batch_norm else 1.0
        if mask is not None:
            self.register_buffer("mask", mask, persistent=False)
        else:
            self.mask = None
        net_in = 2 * in_channels + (mask is not None)
        self.h_in = _ref_conv(net_in, hidden, 3, norm, bias=True, scale=False)
        self.skip_in = _ref_conv(hidden, hidden, 1, norm, bias=True, scale=True)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, norm, batch_norm, reference=True) for _ in range(blocks))
        self.skips = nn.ModuleList(_ref_conv(hidden, hidden, 1, norm, bias=True, scale=True)
                                   for _ in range(blocks))
        self.bn_pre_out = ShiftBatchNorm(hidden) if batch_norm else nn.Identity()
        self.out = _ref_conv(hidden, out_channels, 1, norm, bias=True, scale=True)

    def forward(self, x: torch.Tensor, update_stats: bool = True) -> torch.Tensor:
        """``update_stats=False``: batch norms leave their running statistics alone (see :func:`batch_norm`)."""
        h = batch_norm(self.bn_in, x, update_stats)
        if self.input_scale != 1.0:
            h = h * self.input_scale
        parts = [F.relu(h), F.relu(-h)]
        if self.mask is not None:
            parts.append(self.mask.to(h.dtype).expand(h.shape[0], 1, *h.shape[2:]))
        h = layer(self.h_in, to_channels_last(torch.cat(parts, dim=1)), update_stats)
        out = layer(self.skip_in, h, update_stats)
        for block, skip in zip(self.blocks, self.skips, strict=True):
            h = block(h, update_stats)
            out = out + layer(skip, h, update_stats)
        out = F.relu(batch_norm(self.bn_pre_out, out, update_stats), inplace=not isinstance(
            self.bn_pre_out, nn.Identity))
        return to_contiguous(layer(self.out, out, update_stats))
