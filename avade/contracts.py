"""The module contracts of the model's component kinds, as typing Protocols.

The model, the trainer and the evaluation call a component only through these members (CONTRIBUTING.md,
"How components plug in", says what each must do). Components satisfy them structurally: a plugin's
encoder need not subclass :class:`avade.nets.base.Encoder`, only be an ``nn.Module`` with these members.
Type checkers read the Protocols (avade ships ``py.typed``); at run time, :func:`contract_problem` checks
every component a registry builds for the members, so a missing one is named when the model is built, not
as an ``AttributeError`` in the middle of a training step.

Nothing here imports torch at run time: the registry (``avade list-components``) imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import nn

    Shape = tuple[int, int, int]


@runtime_checkable
class ModuleLike(Protocol):
    """The ``nn.Module`` members avade uses on every component (parameters, modes, state)."""

    training: bool

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The trainable tensors, as ``nn.Module.parameters``."""

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` pairs, as ``nn.Module.named_parameters``."""

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]:
        """The non-trainable state tensors (e.g. running statistics), as ``nn.Module.buffers``."""

    def train(self, mode: bool = True) -> Any:
        """Switch training mode on (or off with ``mode=False``), as ``nn.Module.train``."""

    def eval(self) -> Any:
        """Switch to evaluation mode, as ``nn.Module.eval``."""

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The parameters and buffers by name, as ``nn.Module.state_dict`` (what checkpoints save)."""

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile ``forward`` in place with ``torch.compile``, as ``nn.Module.compile``."""


@runtime_checkable
class FlowModule(ModuleLike, Protocol):
    """An invertible map (kind ``flow``): ``(y, logdet[B]) = flow(x)``, ``x = flow.inverse(y)``.

    (A building block that reshapes, such as ``squeeze``, also says ``out_shape``; ``model.flow`` keeps x's.)
    """

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The ``x`` whose forward map is ``y``."""


@runtime_checkable
class EncoderModule(ModuleLike, Protocol):
    """The bottom-up pass (kind ``encoder``): ``encoder(x, y)`` gives one feature map per stage."""

    @property
    def stage_shapes(self) -> Sequence[Shape]:
        """The ``(C, H, W)`` of each stage's feature map, stage 0 (the finest) first."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]: ...


@runtime_checkable
class DecoderModule(ModuleLike, Protocol):
    """The top-down pass (kind ``decoder``): a top state, one block per stage, then the head (the mean)."""

    def initial_state(self, batch: int) -> torch.Tensor:
        """The top state, ``[batch, *stage_shapes[top]]``."""

    def forward_stage(self, i: int, d: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Stage ``i``'s block: a state of ``stage_shapes[i]`` to one of ``stage_shapes[i - 1]`` (same shape at 0)."""

    def head(self, d: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean image ``[B, *out_shape]`` from the stage-0 state ``d``."""


@runtime_checkable
class PosteriorModule(ModuleLike, Protocol):
    """The latent groups (kind ``posterior``) at the decoder stages ``stage_ids``.

    ``forward_stage(i, d, h, temperature, y=y)`` returns ``(d_new, log_q[B], log_p[B])``; one written
    without the ``y`` parameter is called without it (the model checks its signature).
    """

    @property
    def stage_ids(self) -> Sequence[int]:
        """The decoder stages that have latents."""

    def forward_stage(self, i: int, d: torch.Tensor, h: torch.Tensor | None, temperature: float = 1.0,
                      *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(d updated by a latent z, log q(z)[B], log p(z)[B])`` at stage ``i``; ``h=None`` draws z from the
        prior at ``temperature`` (with ``log_q = 0``)."""


@runtime_checkable
class CodedPosterior(Protocol):
    """A posterior's optional latent codes (what ``GenerativeModel.encode`` / ``decode`` / ``interpolate`` need).

    ``encode_stage(i, d, h, y=None, sample=False)`` returns ``(d_new, code)``: ``d`` updated as ``forward_stage``
    updates it, by z from q (deterministic unless ``sample``), and z in the prior's standard coordinates
    (``(z - mu_p) / sigma_p`` for a Gaussian prior: standard normal under it). ``decode_stage(i, d, code, y=None)``
    returns ``d`` updated by the z of those coordinates, so code 0 is the prior's mode.
    """

    def encode_stage(self, i: int, d: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None = None,
                     sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d updated by z ~ q(z|h, d, y), z's code under the prior)`` at stage ``i``."""

    def decode_stage(self, i: int, d: torch.Tensor, code: torch.Tensor,
                     y: torch.Tensor | None = None) -> torch.Tensor:
        """``d`` updated by the z whose prior coordinates are ``code`` at stage ``i``."""


@runtime_checkable
class DiscriminatorModule(ModuleLike, Protocol):
    """The critic (kind ``discriminator``): ``critic(x in [-1, 1], y)`` gives one score per image, ``[B]``."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...


#: kind -> (its Protocol, the members it must have, and what they are, for messages); ``forward`` is
#: listed for the kinds the model calls as modules (decoders and posteriors are driven by stage methods)
CONTRACTS: dict[str, tuple[type, tuple[str, ...], str]] = {
    "flow": (FlowModule, ("forward", "inverse"), "forward(x) -> (y, logdet[B]) and inverse(y) -> x"),
    "encoder": (EncoderModule, ("forward", "stage_shapes"), "stage_shapes and forward(x, y=None) -> one map per stage"),
    "decoder": (DecoderModule, ("initial_state", "forward_stage", "head"),
                "initial_state(B), forward_stage(i, d, y) and head(d, y)"),
    "posterior": (PosteriorModule, ("stage_ids", "forward_stage"),
                  "stage_ids and forward_stage(i, d, h, T, y=None) -> (d, log_q, log_p)"),
    "discriminator": (DiscriminatorModule, ("forward",), "forward(x, y=None) -> scores[B]"),
}
_DATA_MEMBERS = frozenset({"stage_shapes", "stage_ids"})


def _has(component: Any, member: str) -> bool:
    """A data member need only exist; a method must be callable, and ``forward`` not torch's placeholder
    (``nn.Module.forward`` raises when called)."""
    from torch import nn

    if member == "forward":
        forward = getattr(component, "forward", None)
        return callable(forward) and getattr(forward, "__func__", forward) is not nn.Module.forward
    return hasattr(component, member) if member in _DATA_MEMBERS else callable(getattr(component, member, None))


def contract_problem(kind: str, component: Any) -> str | None:
    """What ``component`` (just built as a ``kind``) lacks of its contract, e.g. ``"MyEncoder, which has no
    stage_shapes (encoder components are ...)"``; None when nothing is missing.

    Kinds without a module contract here (norm, dataset, metric) are checked where they are used.
    """
    if kind not in CONTRACTS:
        return None
    from torch import nn

    _, members, summary = CONTRACTS[kind]
    provides = f"{kind} components are torch modules with {summary}"
    if not isinstance(component, nn.Module):
        return f"{type(component).__name__}, which is not a torch.nn.Module ({provides})"
    missing = [m for m in members if not _has(component, m)]
    if missing:
        return f"{type(component).__name__}, which has no {' and no '.join(missing)} ({provides})"
    return None
