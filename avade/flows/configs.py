"""The attrs config classes of the built-in flows, in a module that does not import torch.

``avade recipe show``, ``recipe keys`` and ``list-components --json --schema`` resolve a recipe against
these classes only; kept apart from the components' modules (which import torch and re-export them),
they resolve without loading torch. Keep this module free of heavy imports.
"""

from __future__ import annotations

from typing import Literal

import attrs

from avade.schema import between, ge, gt


@attrs.define
class RealNVPConfig:
    """Defaults are the AV-ADE paper's f: 3 coupling layers, 1 scale, 2 residual blocks, BN + weight norm.

    ``scales``: number of scales (H and W must be divisible by ``2**(scales-1)``); ``layers``:
    checkerboard couplings per scale; ``final_layers``: those of the last scale (default ``layers``; the
    Real-NVP reference has one more there, 4); ``blocks``/``hidden``: residual blocks and channels of
    each s/t network; ``norm``: normalization of its convolutions; ``batch_norm``: batch norm inside it;
    ``hidden_growth``: 2 widens the s/t networks as the Real-NVP reference does, ``hidden * 2**k`` at
    scale ``k`` and twice that in its channel-wise couplings (1 keeps ``hidden`` everywhere);
    ``out_batch_norm``: batch normalization as a flow after every coupling (the ``batch-norm`` flow:
    exactly invertible in eval mode only), ``true`` of the whole coupling output (Dinh et al.'s text),
    ``"transformed"`` of the half the coupling changed only (the reference code's ``bn_out``);
    ``net``: the s/t network, ``resnet`` (avade's simpler residual network, every coupling starts as
    the identity) or ``reference`` (the Real-NVP reference code's network and scalar tanh bound: see
    :class:`~avade.flows.st_nets.ReferenceST`).
    """

    scales: int = attrs.field(default=1, validator=ge(1),
                              metadata={"help": "scales; H and W divisible by 2**(scales-1) (paper: 1)"})
    blocks: int = attrs.field(default=2, validator=ge(1),
                              metadata={"help": "residual blocks of each s/t network (paper: 2)"})
    layers: int = attrs.field(default=3, validator=ge(1),
                              metadata={"help": "checkerboard couplings per scale (paper: 3)"})
    final_layers: int | None = attrs.field(
        default=None, validator=ge(1),
        metadata={"help": "checkerboard couplings of the last scale; none = layers (the reference: 4)"})
    hidden: int = attrs.field(default=64, validator=ge(1),
                              metadata={"help": "channels of each s/t network (Real-NVP's CIFAR-10: 64)"})
    norm: str = attrs.field(
        default="weight-norm", metadata={"help": "registered norm of the s/t networks' convolutions (Real-NVP: "
                                                 "weight-norm)"})
    batch_norm: bool = attrs.field(default=True, metadata={"help": "batch norm inside the s/t networks (Real-NVP: "
                                                                   "with weight norm)"})
    out_batch_norm: Literal[False, True, "transformed"] = attrs.field(
        default=False, metadata={"help": "batch norm as a flow after each coupling: true = of its whole output, "
                                         "\"transformed\" = of the half it changed (the reference's bn_out)"})
    hidden_growth: Literal[1, 2] = attrs.field(
        default=1, metadata={"help": "2 = reference widths: hidden*2**scale, x2 in channel couplings"})
    checkerboard: Literal["masked", "packed"] = attrs.field(
        default="masked", metadata={"help": "masked: full-resolution s/t nets (Real-NVP reference); packed: "
                                            "each half packed to H x W/2, half the FLOPs"})
    net: Literal["resnet", "reference"] = attrs.field(
        default="resnet", metadata={"help": "s/t network: resnet (avade's, zero-init output) or reference "
                                            "(the Real-NVP reference code's: concat-ReLU, mask channel, skips)"})


@attrs.define
class GlowConfig:
    """``scales`` levels (H and W must be divisible by ``2**scales``), each with ``steps`` flow steps.

    A step is actnorm, invertible 1x1 conv (``lu``: LU-decomposed) and a channel-wise affine coupling
    whose network has ``hidden`` channels and ``norm`` on its two hidden convolutions: ``none`` (the
    default: their biases only, as normflows' Glow) or ``actnorm`` (Glow's reference code). Why not the
    reference's: inside AV-ADE, ``actnorm`` there trained the likelihood markedly slower (quickstart-sized,
    bits/dim 7.2 against 4.9 after 100 steps of L_C) and the inverse of the critic's samples went
    non-finite as soon as L_Q started, whereas ``none`` trains through both.
    ``logscale_factor``: Glow's log-scale parametrisation, 3 as in the reference: every actnorm
    learns ``log s / 3`` and the zero-initialised convolutions (the coupling networks' last layer, the
    split priors) scale their output by a learned ``exp(3 * logs)``; 0 turns both off.
    ``edge_bias``: the reference's ``add_edge_padding``: the 3x3 convolutions (coupling networks, split
    priors) see one more input channel, 1 in their zero padding, so the border is not mistaken for data
    (recipes/quickstart.toml with ``model.flow = {name = "glow"}``, 300 steps, seeds 0/1/2: test bits/dim
    4.39/4.51/4.51 with it, 4.68/4.46/4.80 without: a gain on average, within the seed-to-seed spread).
    """

    scales: int = attrs.field(default=3, validator=ge(1),
                              metadata={"help": "levels; H and W divisible by 2**scales (Glow's CIFAR-10: 3)"})
    steps: int = attrs.field(default=8, validator=ge(1),
                             metadata={"help": "steps per level: actnorm, 1x1 conv, coupling (Glow's CIFAR-10: 32)"})
    hidden: int = attrs.field(default=128, validator=ge(1),
                              metadata={"help": "channels of each coupling network (Glow's CIFAR-10: 512)"})
    lu: bool = attrs.field(default=True, metadata={"help": "LU-decomposed 1x1 convs (cheap exact log-det); false "
                                                           "= a plain matrix, log-det by slogdet"})
    norm: str = attrs.field(
        default="none", metadata={"help": "registered norm of the coupling networks' hidden convs: none (biases "
                                          "only) or actnorm (Glow's code)"})
    logscale_factor: float = attrs.field(
        default=3.0, validator=ge(0.0),
        metadata={"help": "Glow's log-scale factor for actnorms and zero convs (reference 3; 0 = off)"})
    edge_bias: bool = attrs.field(
        default=True, metadata={"help": "Glow's edge channel on the 3x3 convolutions of the coupling networks and "
                                        "split priors (marks the zero padding); false = plain zero padding"})


@attrs.define
class IdentityConfig:
    """No options."""


@attrs.define
class ActNormConfig:
    """``data_init``: set bias/scale from the first training batch; ``eps`` guards that init's std;
    ``logscale_factor``: the learned parameter is ``log s / logscale_factor`` (Glow: 3, so ``log s``
    moves 3x as fast under Adam-type optimisers; 1: ``log s`` itself)."""

    data_init: bool = attrs.field(
        default=True, metadata={"help": "set bias and scale from the first training batch; false = start as identity"})
    eps: float = attrs.field(default=1e-6, validator=gt(0.0),
                             metadata={"help": "added to the init batch's std before dividing by it"})
    logscale_factor: float = attrs.field(
        default=1.0, validator=gt(0.0),
        metadata={"help": "the parameter learned is log s / this (Glow: 3; 1 = log s itself)"})


@attrs.define
class BatchNormFlowConfig:
    """``momentum`` of the running averages (the reference's decay 0.95 = 0.05); ``eps`` floors the
    variance (the reference's 1e-4)."""

    momentum: float = attrs.field(
        default=0.05, validator=between(0.0, 1.0),
        metadata={"help": "weight of each batch in the running averages (the reference's decay 0.95 = 0.05)"})
    eps: float = attrs.field(default=1e-4, validator=gt(0.0),
                             metadata={"help": "added to the variance (the reference's 1e-4)"})


@attrs.define
class InvConvConfig:
    """``lu``: parametrize ``W = P L (U + diag(sign(s) exp(log|s|)))`` (cheap, exact log-determinant)."""

    lu: bool = attrs.field(default=True, metadata={"help": "LU-decomposed W (cheap exact log-det); false = a plain "
                                                           "matrix, log-det by slogdet"})


@attrs.define
class SqueezeConfig:
    """No options."""


@attrs.define
class AffineCouplingConfig:
    """Which half is transformed (``mask``, ``reverse``) and the s/t network that transforms it.

    ``mask``: ``checkerboard`` (pixels where ``(i + j)`` is even condition, the others are transformed;
    the network sees the masked full-resolution input, as in the Real-NVP reference),
    ``checkerboard-packed`` (the same split, but each half is packed into an ``H x W/2`` tensor so the
    network does half the work; its convolutions see a differently arranged neighbourhood) or
    ``channel`` (first half of the channels conditions the second). ``reverse`` swaps the roles.
    ``net``: ``resnet`` (Real-NVP: ``blocks`` residual blocks), ``reference`` (the Real-NVP reference
    code's network: input batch norm, concat-ReLU, the mask as an input channel in masked checkerboard
    couplings, summed 1x1 skips, weight-normed output; scalar tanh bound, see the module docstring) or
    ``conv`` (Glow: 3 convolutions).
    ``norm``: the registered normalization of the network's convolutions; ``batch_norm`` adds batch
    norm inside the network (Real-NVP uses both batch norm and weight norm).
    """

    mask: Literal["checkerboard", "checkerboard-packed", "channel"] = attrs.field(
        default="checkerboard", metadata={"help": "conditioning half: checkerboard pixels (packed: half the work) "
                                                  "or the first half of the channels"})
    reverse: bool = attrs.field(default=False, metadata={"help": "swap the conditioning and the transformed half"})
    net: Literal["resnet", "conv", "reference"] = attrs.field(
        default="resnet", metadata={"help": "s/t network: resnet (Real-NVP's), reference (Real-NVP's reference "
                                            "code) or conv (Glow's 3 convs)"})
    hidden: int = attrs.field(default=64, validator=ge(1), metadata={"help": "channels of the s/t network"})
    blocks: int = attrs.field(default=2, validator=ge(0),
                              metadata={"help": "residual blocks of the s/t network (resnet, reference; conv: unused)"})
    norm: str = attrs.field(default="weight-norm",
                            metadata={"help": "registered norm of the s/t network's convolutions"})
    batch_norm: bool = attrs.field(default=True, metadata={"help": "batch norm inside the s/t network (Real-NVP: "
                                                                   "with weight norm)"})
    logscale_factor: float = attrs.field(
        default=0.0, validator=ge(0.0),
        metadata={"help": "> 0: the network's zero conv gets Glow's output scale exp(factor * logs)"})
    edge_bias: bool = attrs.field(
        default=False, metadata={"help": "net = \"conv\": Glow's edge channel on the 3x3 convolutions (marks the "
                                         "zero padding)"})
