"""The quality-driven (adversarial) criterion L_Q: loss kinds, gradient penalty, collapse watches.

Conventions: a discriminator returns raw scores ``s(x)`` of shape ``[B]`` (logits, no sigmoid).
The losses are plain functions of those scores so that the trainer stays a thin caller::

    d_loss = discriminator_loss(kind, D(x), D(x_fake.detach())) + gradient_penalty(D, x, x_fake, weight=gp)
    g_loss = generator_loss(kind, D(x_fake))

The gradient penalty is added by the caller for every kind (``gp_weight = 0`` disables it).

Reading of the paper for ``kind = "paper"``. The AV-ADE main text defines the quality-driven loss
through a discriminator ``D(x) = sigmoid(s(x))`` trained to tell real from generated images:
``L_Q(p_theta) = -E_{p_theta}[ln D(x) / (1 - D(x))] = -E_{p_theta}[s(x)]``; with the optimal
``D* = p*/(p* + p_theta)`` this is ``KL(p_theta || p*)``, the quality-driven (mode-seeking)
counterpart of the coverage-driven likelihood. (That equation is in the main text, recalled here;
the appendix in ``shared/seed`` only fixes the rest.) Appendix B.3, eq. 11-13, regularizes that
discriminator with the WGAN-GP gradient penalty ``lambda * E[(||grad D(x_hat)||_2 - 1)^2]`` on
interpolates, added "to the loss used to train the discriminator"; appendix C sets lambda = 100 and
one D step per G step. Hence ``"paper"`` = logistic (cross-entropy) discriminator loss + GP(100),
and generator loss ``-E[s(x_fake)]``. It differs from ``"wgan"`` only in the discriminator loss
(logistic instead of the linear critic loss): with the same generator loss, the score is a
log density ratio rather than a Wasserstein potential.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from avade.errors import ConfigError, DataError, did_you_mean

AdvLoss = Literal["wgan", "nonsaturating", "hinge", "paper"]
ADV_LOSSES: tuple[str, ...] = get_args(AdvLoss)
PAPER_GP_WEIGHT = 100.0
"""lambda of eq. 11 in the paper (appendix C: "gradient penalty with coefficient 100")."""

__all__ = [
    "ADV_LOSSES",
    "PAPER_GP_WEIGHT",
    "AdvLoss",
    "CollapseDetector",
    "ModeCollapseDetector",
    "collapse_detector",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "mode_statistics",
    "trivial_discriminator_loss",
]


def _check_kind(kind: str) -> str:
    if kind not in ADV_LOSSES:
        raise ConfigError(f"unknown adversarial loss {kind!r}{did_you_mean(str(kind), ADV_LOSSES)}; "
                          f"choose one of {', '.join(ADV_LOSSES)}", path="adv_loss")
    return kind


def discriminator_loss(kind: AdvLoss | str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss (to minimize) from raw scores on real and generated images.

    - ``wgan``: ``E[s(fake)] - E[s(real)]`` (critic of Arjovsky et al.; pair it with the GP).
    - ``nonsaturating`` and ``paper``: logistic loss ``E[softplus(-s(real))] + E[softplus(s(fake))]``,
      i.e. binary cross-entropy of ``sigmoid(s)`` with labels real = 1, fake = 0.
    - ``hinge``: ``E[relu(1 - s(real))] + E[relu(1 + s(fake))]``.

    Every kind decreases when real scores go up and generated scores go down.
    """
    kind = _check_kind(kind)
    if kind == "wgan":
        return d_fake.mean() - d_real.mean()
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def generator_loss(kind: AdvLoss | str, d_fake: torch.Tensor) -> torch.Tensor:
    """The generator's quality loss L_Q (to minimize) from raw scores on its samples.

    - ``wgan``, ``hinge``: ``-E[s(fake)]``.
    - ``nonsaturating``: ``E[softplus(-s(fake))] = -E[ln sigmoid(s(fake))]`` (Goodfellow et al.).
    - ``paper``: ``-E[ln D/(1 - D)] = -E[s(fake)]``, an estimate of ``KL(p_theta || p*)`` (see module doc).
    """
    kind = _check_kind(kind)
    if kind == "nonsaturating":
        return F.softplus(-d_fake).mean()
    return -d_fake.mean()


def trivial_discriminator_loss(kind: AdvLoss | str) -> float:
    """The discriminator loss of a constant, input-blind discriminator at its best constant.

    ``2 ln 2`` for the logistic kinds (score 0), ``2`` for hinge (any score in [-1, 1]), ``0`` for
    wgan. A discriminator whose loss sits there has learned nothing about real vs generated.
    """
    kind = _check_kind(kind)
    return {"wgan": 0.0, "hinge": 2.0}.get(kind, 2.0 * math.log(2.0))


def gradient_penalty(
    discriminator: Callable[..., torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    y: torch.Tensor | None = None,
    weight: float = PAPER_GP_WEIGHT,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``weight * E[(||grad_x_hat D(x_hat)||_2 - 1)^2]`` on ``x_hat = eps x + (1 - eps) x_tilde`` (eq. 11-13).

    ``eps ~ U[0, 1]`` is drawn once per sample (from ``generator`` when given, for reproducible
    penalties). ``real`` and ``fake`` are detached: the penalty trains the discriminator only, never
    the generator that produced ``fake``. The inner gradient keeps its graph (``create_graph``) so
    that backpropagating the penalty reaches the discriminator's parameters. Labels ``y`` are passed
    to a conditional discriminator as ``discriminator(x_hat, y)``.

    The per-sample gradient is read off ``grad(sum_i D(x_hat_i))``, which assumes each score depends
    on its own image only (true without batch-statistics normalization in the discriminator).
    """
    if real.shape != fake.shape:
        raise DataError(f"gradient penalty: real and generated batches differ in shape, "
                        f"{list(real.shape)} vs {list(fake.shape)}")
    batch = real.shape[0]
    device = generator.device if generator is not None else real.device
    eps = torch.rand((batch,) + (1,) * (real.dim() - 1), generator=generator, device=device,
                     dtype=real.dtype).to(real.device)
    # enable_grad: the penalty must be differentiable even if a caller evaluates it under no_grad.
    with torch.enable_grad():
        x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
        scores = discriminator(x_hat) if y is None else discriminator(x_hat, y)
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
        # The tiny constant keeps the norm differentiable where the gradient vanishes (d sqrt at 0).
        norm = grad.flatten(1).pow(2).sum(dim=1).add(1e-12).sqrt()
        return weight * (norm - 1.0).pow(2).mean()


def _scalar(value: torch.Tensor | float) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean())
    return float(value)


class CollapseDetector:
    """Watches discriminator scores and losses; returns a one-line warning when D collapses.

    Feed it once per discriminator step with :meth:`update`. Criteria, over the last ``window``
    steps (the first two need a full window):

    1. **runaway gap**: the window mean of ``mean D(real) - mean D(fake)`` exceeds ``max_gap``.
       D separates real from generated images outright, so the generator's quality signal
       saturates or explodes (the paper saw this with adversarial weights well below 10). Scores
       are logits: a gap of 50 means D is certain to about ``1e-11``; for a WGAN critic under a
       gradient penalty it means the gap outgrew the typical real-to-sample distance.
    2. **inverted**: the window mean of ``mean D(real) - mean D(fake)`` is below ``-min_gap``.
       D scores generated images above real ones for a whole window, i.e. it does worse than a
       constant D, and its gradient leads the generator away from the data (a tiny conditional
       GAN with the paper's gradient penalty of 100 sat there for hundreds of steps while its
       samples turned white: a strong penalty can hold D at the wrong sign).
    3. **stuck at the trivial optimum**: the scores (and the loss, when given) move by at most
       ``flat_tol`` across the window while the mean gap is within ``flat_tol`` of 0. D has become
       input-blind (a constant: dead units, zero learning rate); its loss then sits at
       :func:`trivial_discriminator_loss` and the generator gets no quality signal.
    4. **non-finite**: a score or the loss is NaN or infinite (reported at once).

    :meth:`update` returns the warning only when a collapse starts or changes cause (not on every
    step while it lasts), and a collapse of the cause it last warned about that ends and starts again
    within ``quiet`` steps of that warning is not warned about again (a window mean hovering at a
    threshold would otherwise warn every few dozen steps for as long as it hovers); :attr:`reason` holds
    the current message and :attr:`cause` its kind
    (``"gap"``, ``"inverted"``, ``"stuck"`` or ``"non-finite"``), both None while D looks healthy.
    The generator's side (samples that all look alike) is :class:`ModeCollapseDetector`'s.
    """

    def __init__(self, window: int = 100, max_gap: float = 50.0, flat_tol: float = 1e-3,
                 kind: AdvLoss | str | None = None, min_gap: float = 1.0, quiet: int = 1000) -> None:
        if window < 2:
            raise ConfigError(f"expected a window of at least 2 steps, got {window}", path="window")
        if quiet < 0:
            raise ConfigError(f"expected quiet >= 0 steps, got {quiet}", path="quiet")
        if max_gap <= 0 or flat_tol < 0 or min_gap <= 0:
            raise ConfigError(f"expected max_gap > 0, flat_tol >= 0 and min_gap > 0, got {max_gap}, {flat_tol} "
                              f"and {min_gap}")
        self.window = window
        self.max_gap = max_gap
        self.min_gap = min_gap
        self.flat_tol = flat_tol
        self.quiet = quiet
        self.kind = _check_kind(kind) if kind is not None else None
        self.steps = 0
        self.reason: str | None = None
        self.cause: str | None = None
        self._warned: tuple[str, int] | None = None  # the cause of the latest warning, and the step count then
        self._real: deque[float] = deque(maxlen=window)
        self._fake: deque[float] = deque(maxlen=window)
        self._loss: deque[float] = deque(maxlen=window)

    @property
    def collapsed(self) -> bool:
        """Whether the latest update found a collapse."""
        return self.reason is not None

    def update(self, d_real: torch.Tensor | float, d_fake: torch.Tensor | float,
               d_loss: torch.Tensor | float | None = None, step: int | None = None) -> str | None:
        """Record one discriminator step; a one-line warning if a collapse starts, else None."""
        self.steps += 1
        at = self.steps if step is None else step
        real, fake = _scalar(d_real), _scalar(d_fake)
        loss = None if d_loss is None else _scalar(d_loss)
        values = (real, fake) if loss is None else (real, fake, loss)
        if not all(math.isfinite(v) for v in values):
            return self._report(
                "non-finite", f"discriminator collapse at step {at}: non-finite scores or loss "
                f"(D(real) {real:.4g}, D(fake) {fake:.4g}, loss {loss}); lower the learning rate "
                "or check the inputs")
        self._real.append(real)
        self._fake.append(fake)
        if loss is not None:
            self._loss.append(loss)
        if len(self._real) < self.window:
            return self._report(None, None)
        gap = (sum(self._real) - sum(self._fake)) / self.window
        if gap > self.max_gap:
            return self._report(
                "gap", f"discriminator collapse at step {at}: mean D(real)-D(fake) = {gap:.3g} over the last "
                f"{self.window} steps exceeds {self.max_gap:g}; D wins outright - raise adv_weight "
                "(paper: 10-100) or gp_weight, or lower the discriminator's learning rate")
        if gap < -self.min_gap:
            return self._report(
                "inverted", f"discriminator collapse at step {at}: D scores generated images above real ones "
                f"(mean D(real)-D(fake) = {gap:.3g} over the last {self.window} steps, below {-self.min_gap:g}), "
                "so it leads the generator away from the data - lower gp_weight (a strong penalty can hold D "
                "at the wrong sign) or the generator's learning rate (train.lr; train.d_lr is D's), or raise d_steps")
        series = [self._real, self._fake] + ([self._loss] if len(self._loss) == self.window else [])
        if abs(gap) <= self.flat_tol and all(max(s) - min(s) <= self.flat_tol for s in series):
            trivial = ""
            if self.kind is not None and len(self._loss) == self.window:
                mean_loss = sum(self._loss) / self.window
                trivial = (f"; loss {mean_loss:.4g} vs {trivial_discriminator_loss(self.kind):.4g} "
                           "for a constant D")
            return self._report(
                "stuck", f"discriminator collapse at step {at}: D's scores have not moved for "
                f"{self.window} steps and do not separate real from generated (gap {gap:.2g}){trivial}; "
                "D is input-blind - check its learning rate, initialization and normalization")
        return self._report(None, None)

    def state_dict(self) -> dict[str, Any]:
        """The window and the current verdict, JSON-serializable (kept in checkpoints, so a resumed
        run warns exactly as the uninterrupted one would)."""
        return {"steps": self.steps, "cause": self.cause, "reason": self.reason, "real": list(self._real),
                "fake": list(self._fake), "loss": list(self._loss),
                "warned": None if self._warned is None else list(self._warned)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a longer saved window keeps its latest values)."""
        self.steps = int(state["steps"])
        self.cause, self.reason = state["cause"], state["reason"]
        warned = state.get("warned")  # (absent from checkpoints written before the quiet steps)
        self._warned = None if warned is None else (str(warned[0]), int(warned[1]))
        for name in ("real", "fake", "loss"):
            window: deque[float] = getattr(self, f"_{name}")
            window.clear()
            window.extend(float(v) for v in state[name])

    def _report(self, cause: str | None, message: str | None) -> str | None:
        # Warn on the rising edge only: a collapse lasting 10k steps should not flood the log; nor should one
        # that flaps in and out (a window mean hovering at its threshold): the same cause again within `quiet`
        # steps of its warning is not warned about again.
        fresh = cause is not None and cause != self.cause
        if fresh and self._warned is not None and self._warned[0] == cause:
            fresh = self.steps - self._warned[1] >= self.quiet
        if fresh:
            assert cause is not None
            self._warned = (cause, self.steps)
        self.cause, self.reason = cause, message
        return message if fresh else None


def collapse_detector(window: int = 100, max_gap: float = 50.0, flat_tol: float = 1e-3,
                      kind: AdvLoss | str | None = None, min_gap: float = 1.0, quiet: int = 1000) -> CollapseDetector:
    """A fresh :class:`CollapseDetector` (see there for the criteria)."""
    return CollapseDetector(window=window, max_gap=max_gap, flat_tol=flat_tol, kind=kind, min_gap=min_gap,
                            quiet=quiet)


def _within_class_terms(x: torch.Tensor, same: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each image's term of its class's sum of squared distances to the class mean ``[B]``: summed over a
    class, ``sum ||x_i||^2 - ||sum x_i||^2 / n``. From the Gram matrix, so no shape depends on the labels'
    values (no host sync on a GPU); a non-finite image leaves the other classes' terms finite."""
    flat = x.detach().float().clamp(-1.0, 1.0).flatten(1).double()
    gram = flat @ flat.T
    return flat.pow(2).sum(1) - torch.where(same, gram, torch.zeros_like(gram)).sum(1) / counts


def mode_statistics(real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per image ``[B, 4]`` (float64, on the images' device, computed without a host sync): its class (-1 when
    unconditional), its terms of the generated and of the real images' within-class sums of squares (images
    clipped to ``[-1, 1]``), and how many images of its class the batch holds. What
    :meth:`ModeCollapseDetector.record` takes (as a list of rows)."""
    if real.shape != fake.shape:
        raise DataError(f"mode-collapse watch: real and generated batches differ in shape, "
                        f"{list(real.shape)} vs {list(fake.shape)}")
    if labels is None:
        labels = torch.full((real.shape[0],), -1, dtype=torch.long, device=real.device)
    labels = labels.to(real.device)
    same = labels[:, None] == labels[None, :]
    counts = same.sum(1).double()
    return torch.stack([labels.double(), _within_class_terms(fake, same, counts),
                        _within_class_terms(real, same, counts), counts], 1)


class ModeCollapseDetector:
    """Watches the generator's samples; returns a one-line warning when they stop varying (mode collapse).

    Feed it once per discriminator step with :meth:`update`: the real batch, the generated batch
    made for the same labels (as the trainer does: a conditional generator is asked for the real
    batch's classes), and those labels (None for an unconditional model). Each image is compared
    with the others of its class *in its own batch* only, so a class-conditional generator whose
    samples of each class are all alike, but differ from class to class, is caught: over the whole
    batch its samples still look diverse. Per class, over the last ``window`` steps:

        spread = sqrt(sum ||fake_i - mean of its class's fakes||^2 / sum ||real_i - mean of its class's reals||^2)

    (the same labels give both sums the same number of terms). The window is short because the
    sums are dominated by the window's most varied steps: over 100 steps, a digits class whose last
    20 steps gave one white image still had a spread of 0.2. A class (all images, when
    unconditional) whose spread is below ``min_spread`` -- its samples vary ten times less than the
    real images of that class, at the default -- has collapsed. A class is judged only once it
    had at least ``min_count`` images in batches holding it more than once, and only where its
    real images vary at all; all classes pooled are judged too (so is a model with more classes
    than a window shows often enough). Images are compared as they are shown: clipped to
    ``[-1, 1]`` (the range real images have), so samples pushed beyond white all count as the same
    white image.
    Untrained generators start well above the threshold (a tiny GAN at initialization: spread
    about 0.35 on the digits), collapsed ones end near 0.

    The spread is in pixel space: it says nothing when the samples vary only by pixel noise (a
    likelihood model's Gaussian samples), and partial collapse onto a few modes goes unnoticed;
    it flags the near-identical samples that a grid shows at a glance. :meth:`update` warns when a
    collapse starts, and while it lasts when classes not yet reported join it, at most once per
    ``quiet`` steps (not on every step); :attr:`collapsed_classes` holds them (-1: all classes
    pooled, or an unconditional model's images) and :attr:`reason` the current message.
    """

    def __init__(self, window: int = 25, min_spread: float = 0.1, min_count: int = 16, quiet: int = 100) -> None:
        if window < 1 or quiet < 0:
            raise ConfigError(f"expected a window of at least 1 step and quiet >= 0, got {window} and {quiet}",
                              path="window")
        if not 0 < min_spread < math.inf or min_count < 2:
            raise ConfigError(f"expected 0 < min_spread < inf and min_count >= 2, got {min_spread} and {min_count}")
        self.window = window
        self.quiet = quiet
        self.min_spread = min_spread
        self.min_count = min_count
        self.steps = 0
        self.reason: str | None = None
        self.collapsed_classes: list[int] = []
        self._reported: set[int] = set()  # the classes warned about since the collapse started
        self._warned_at = 0  # this watch's step count at the latest warning (0: none yet)
        # one entry per step, a row per class seen twice or more in the batch (-1: unconditional):
        # [class, fake sum of squares, real sum of squares, images]
        self._records: deque[list[list[float]]] = deque(maxlen=window)

    @property
    def collapsed(self) -> bool:
        """Whether the latest update found a collapse."""
        return self.reason is not None

    def update(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
               step: int | None = None) -> str | None:
        """Record one step's batches (images in ``[-1, 1]``, as the discriminator sees them); a one-line
        warning when a class collapses, else None. (:func:`mode_statistics` then :meth:`record`: a trainer
        may bring the statistics to the host with its other values, in one transfer.)"""
        return self.record(mode_statistics(real, fake, labels).tolist(), step)

    def record(self, rows: list[list[float]], step: int | None = None) -> str | None:
        """:meth:`update` from the rows of :func:`mode_statistics` (on the host)."""
        self.steps += 1
        at = self.steps if step is None else step
        table: dict[int, list[float]] = {}
        for c, f_term, r_term, n in rows:
            if n > 1:  # a class seen once in the batch has no spread to compare
                entry = table.setdefault(int(c), [float(c), 0.0, 0.0, n])
                entry[1] += f_term
                entry[2] += r_term
        record = [[c, max(f_ss, 0.0), max(r_ss, 0.0), n] for c, f_ss, r_ss, n in
                  (table[k] for k in sorted(table))]
        if all(math.isfinite(v) for row in record for v in row):  # non-finite images are CollapseDetector's
            self._records.append(record)
        if len(self._records) < self.window:
            return self._report([], None)
        totals: dict[int, list[float]] = {}
        for record in self._records:
            for c, f_ss, r_ss, n in record:
                entry = totals.setdefault(int(c), [0.0, 0.0, 0.0])
                entry[0] += f_ss
                entry[1] += r_ss
                entry[2] += n
        # Pooled over every class (the only group of an unconditional model): also judges a model with
        # more classes than a window shows often enough to judge each one.
        pooled_f, pooled_r, pooled_n = (sum(t[i] for t in totals.values()) for i in range(3))
        pooled = math.sqrt(pooled_f / pooled_r) if pooled_n >= self.min_count and pooled_r > 0 else math.inf
        spreads = {c: math.sqrt(f_ss / r_ss) for c, (f_ss, r_ss, n) in totals.items()
                   if c >= 0 and n >= self.min_count and r_ss > 0}
        low = sorted(c for c, v in spreads.items() if v < self.min_spread)
        if pooled < self.min_spread:
            low.append(-1)
        if not low:
            return self._report([], None)
        if low == [-1]:
            what = ("the generated images are all alike (spread" if -1 in totals else
                    f"the generated images are alike within their classes (all {len(totals)} pooled: spread")
            what += f" {pooled:.2g}"
        else:
            shown = [c for c in low if c >= 0]
            names = ", ".join(str(c) for c in shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
            what = (f"the generated images of class{'es' if len(shown) > 1 else ''} {names} ({len(shown)} of "
                    f"{len(spreads)} judged) are alike within each class (spread at most "
                    f"{max(spreads[c] for c in shown):.2g}")
        return self._report(low, (
            f"generator collapse at step {at}: {what} of the real images' over the last {self.window} steps, "
            f"below {self.min_spread:g}); mode collapse - see the discriminator's warnings, lower the learning "
            "rates, or add the coverage-driven likelihood (model.variant = \"av-ade\")"))

    def state_dict(self) -> dict[str, Any]:
        """The window and the current verdict, JSON-serializable (kept in checkpoints)."""
        return {"steps": self.steps, "reason": self.reason, "collapsed_classes": list(self.collapsed_classes),
                "reported": sorted(self._reported), "warned_at": self._warned_at,
                "records": [list(r) for r in self._records]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a longer saved window keeps its latest steps)."""
        self.steps = int(state["steps"])
        self.reason = state["reason"]
        self.collapsed_classes = [int(c) for c in state["collapsed_classes"]]
        self._reported = {int(c) for c in state["reported"]}
        self._warned_at = int(state["warned_at"])
        self._records.clear()
        self._records.extend([[float(v) for v in row] for row in record] for record in state["records"])

    def _report(self, classes: list[int], message: str | None) -> str | None:
        # Warn when classes not reported since the collapse started join it, at most once per `quiet` steps
        # (classes often collapse one after the other, a step or two apart, and a GAN may swing in and out).
        new = set(classes) - self._reported
        fresh = bool(new) and (not self._warned_at or self.steps - self._warned_at >= self.quiet)
        if fresh:
            self._reported |= new
            self._warned_at = self.steps
        if not classes:
            self._reported = set()
        self.collapsed_classes, self.reason = classes, message
        return message if fresh else None
