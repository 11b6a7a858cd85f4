"""Adversarial losses: gradient penalty values and gradient routing, loss signs, collapse detection
(the discriminator's, and the generator's: samples all alike, per class for a conditional model)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from avade.errors import ConfigError, DataError
from avade.losses.adversarial import (
    ADV_LOSSES,
    CollapseDetector,
    ModeCollapseDetector,
    collapse_detector,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mode_statistics,
    trivial_discriminator_loss,
)


class LinearD(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere, so GP = weight * (||w|| - 1)^2."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1) + self.b


def test_gradient_penalty_matches_hand_value_and_trains_only_d() -> None:
    torch.manual_seed(0)
    shape = (2, 3, 3)
    d = LinearD(shape)
    g = nn.Linear(4, 18, dtype=torch.float64)  # a stand-in generator
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    fake = g(z).view(5, *shape)
    real = torch.randn(5, *shape, dtype=torch.float64)

    gp = gradient_penalty(d, real, fake, weight=100.0)
    w_norm = d.w.detach().norm()
    assert gp.item() == pytest.approx(100.0 * (w_norm.item() - 1.0) ** 2, rel=1e-9)

    gp.backward()
    # d/dw [lambda (||w|| - 1)^2] = 2 lambda (||w|| - 1) w / ||w||; b does not enter the gradient.
    expected = 2 * 100.0 * (w_norm - 1.0) * d.w.detach() / w_norm
    torch.testing.assert_close(d.w.grad, expected)
    assert d.b.grad is None or d.b.grad.abs().item() == 0.0
    assert z.grad is None
    assert all(p.grad is None for p in g.parameters())



def test_gradient_penalty_never_reaches_the_generator_through_a_curved_discriminator() -> None:
    # With D(x) = a ||x||^2 / 2 the input gradient a x_hat depends on x_hat, so a penalty built on an
    # undetached fake would send gradients into the generator (a linear D cannot show that).
    a = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
    g = nn.Linear(4, 8, dtype=torch.float64)
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    fake = g(z).view(3, 2, 2, 2)
    real = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(lambda x: 0.5 * a * x.flatten(1).pow(2).sum(1), real, fake, weight=10.0)
    gp.backward()
    assert a.grad is not None and a.grad.abs() > 0
    assert z.grad is None
    assert all(p.grad is None for p in g.parameters())

def test_gradient_penalty_interpolates_per_sample_with_the_given_generator() -> None:
    # D(x) = ||x||^2 / 2 has gradient x_hat, so GP = mean((||x_hat|| - 1)^2) exposes eps.
    def d(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).pow(2).sum(1)

    torch.manual_seed(1)
    real = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    fake = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(d, real, fake, weight=3.0, generator=torch.Generator().manual_seed(7))
    eps = torch.rand(4, generator=torch.Generator().manual_seed(7), dtype=torch.float64).view(4, 1, 1, 1)
    x_hat = eps * real + (1 - eps) * fake
    expected = 3.0 * (x_hat.flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert gp.item() == pytest.approx(expected.item(), rel=1e-9)
    again = gradient_penalty(d, real, fake, weight=3.0, generator=torch.Generator().manual_seed(7))
    assert again.item() == gp.item()
    # Distinct per-sample eps: a single shared eps would give a different value.
    shared = eps[:1].expand_as(eps)
    x_shared = shared * real + (1 - shared) * fake
    assert 3.0 * (x_shared.flatten(1).norm(dim=1) - 1).pow(2).mean().item() != pytest.approx(gp.item())


def test_gradient_penalty_passes_labels_and_works_under_no_grad() -> None:
    seen = {}

    def d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen["y"] = y
        return x.flatten(1).sum(1) * (1 + y.double())

    real, fake = torch.zeros(2, 1, 1, 1, dtype=torch.float64), torch.ones(2, 1, 1, 1, dtype=torch.float64)
    y = torch.tensor([0, 2])
    with torch.no_grad():
        gp = gradient_penalty(d, real, fake, y=y, weight=1.0)
    assert seen["y"] is y
    # gradients 1 and 3 -> ((1-1)^2 + (3-1)^2) / 2 = 2
    assert gp.item() == pytest.approx(2.0)


@pytest.mark.parametrize("kind", ADV_LOSSES)
def test_loss_signs(kind: str) -> None:
    # Scores inside the hinge margin so that every kind has a non-zero slope.
    d_real = torch.tensor([0.3, -0.2], requires_grad=True)
    d_fake = torch.tensor([-0.1, 0.4], requires_grad=True)
    discriminator_loss(kind, d_real, d_fake).backward()
    assert (d_real.grad < 0).all(), "D loss must decrease when real scores go up"
    assert (d_fake.grad > 0).all(), "D loss must increase when generated scores go up"

    d_fake2 = d_fake.detach().clone().requires_grad_(True)
    generator_loss(kind, d_fake2).backward()
    assert (d_fake2.grad < 0).all(), "G loss must decrease when its samples score higher"


def test_loss_values() -> None:
    r, f = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 3.0])
    assert discriminator_loss("wgan", r, f).item() == pytest.approx(1.0 - 1.0)
    assert discriminator_loss("hinge", r, f).item() == pytest.approx((0 + 1) / 2 + (0 + 4) / 2)
    bce = nn.functional.binary_cross_entropy_with_logits
    expected = bce(r, torch.ones(2)) + bce(f, torch.zeros(2))
    for kind in ("nonsaturating", "paper"):
        assert discriminator_loss(kind, r, f).item() == pytest.approx(expected.item())
    # paper: L_Q = -E[ln D/(1-D)] = -E[logit]
    assert generator_loss("paper", f).item() == pytest.approx(-1.0)
    assert generator_loss("nonsaturating", f).item() == pytest.approx(bce(f, torch.ones(2)).item())
    zero = torch.zeros(3)
    for kind in ADV_LOSSES:
        assert discriminator_loss(kind, zero, zero).item() == pytest.approx(trivial_discriminator_loss(kind))
    assert trivial_discriminator_loss("paper") == pytest.approx(2 * math.log(2))


def test_unknown_loss_kind_is_a_readable_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'hinge'"):
        discriminator_loss("hinje", torch.zeros(1), torch.zeros(1))


def test_collapse_detector_flags_runaway_gap_once() -> None:
    det = collapse_detector(window=5, max_gap=10.0)
    messages = [det.update(torch.tensor([1.0, 1.2]), torch.tensor([-1.0]), 0.5) for _ in range(10)]
    assert messages == [None] * 10 and not det.collapsed
    messages = [det.update(30.0, -30.0, 0.0) for _ in range(10)]
    fired = [m for m in messages if m is not None]
    assert len(fired) == 1 and "\n" not in fired[0] and "exceeds 10" in fired[0]
    assert det.collapsed and det.cause == "gap"
    for _ in range(5):
        det.update(1.0, -1.0, 0.5)
    assert not det.collapsed


def test_collapse_detector_flags_constant_discriminator() -> None:
    det = CollapseDetector(window=4, kind="paper")
    torch.manual_seed(0)
    for _ in range(8):  # a healthy, moving D
        assert det.update(torch.randn(3) + 1, torch.randn(3) - 1, torch.rand(())) is None
    out = [det.update(0.0, 0.0, 2 * math.log(2)) for _ in range(4)]
    assert out[:3] == [None] * 3 and out[3] is not None
    assert det.cause == "stuck" and "1.386" in out[3]


def test_collapse_detector_flags_non_finite_at_once() -> None:
    det = CollapseDetector(window=50)
    assert det.update(float("nan"), 0.0) is not None
    assert det.cause == "non-finite"


def test_collapse_detector_state_round_trip_continues_identically() -> None:
    import json

    feed = [(1.0 + 0.01 * i, -1.0 - 0.01 * i, 0.5) for i in range(7)] + [(80.0, -80.0, 0.1)] * 6
    whole = CollapseDetector(window=4, kind="paper")
    first = CollapseDetector(window=4, kind="paper")
    for r, f, loss in feed[:5]:
        whole.update(r, f, loss)
        first.update(r, f, loss)
    resumed = CollapseDetector(window=4, kind="paper")
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as it travels in state.json
    outputs = [(whole.update(r, f, loss), resumed.update(r, f, loss)) for r, f, loss in feed[5:]]
    assert any(a is not None for a, _ in outputs), "the feed must trigger a collapse warning"
    assert all(a == b for a, b in outputs)
    assert whole.state_dict() == resumed.state_dict()


def test_collapse_detector_does_not_warn_again_while_a_collapse_flaps_in_and_out() -> None:
    """A window mean hovering at its threshold (D's gap near max_gap for thousands of steps) flips the verdict
    every few dozen steps: one warning per `quiet` steps, not one per flip; another cause still warns at once."""
    import itertools
    import random

    rng = random.Random(0)
    det = CollapseDetector(window=100, max_gap=50.0)
    fired = [s for s in range(5000) if det.update(50.0 + rng.gauss(0.0, 10.0), 0.0, 1.0, step=s) is not None]
    assert 1 <= len(fired) <= 5 and all(b - a >= det.quiet for a, b in itertools.pairwise(fired))
    assert det.update(float("nan"), 0.0, 1.0) is not None  # a new cause is news
    flapping = CollapseDetector(window=2, max_gap=40.0, quiet=4)
    out = [flapping.update(*((30.0, -30.0) if i % 3 < 2 else (0.0, 0.0))) for i in range(12)]
    assert [i for i, m in enumerate(out) if m is not None] == [1, 7]  # held 4 steps, then news again
    resumed = CollapseDetector(window=2, max_gap=40.0, quiet=4)
    resumed.load_state_dict(flapping.state_dict())
    assert resumed.state_dict() == flapping.state_dict()


def test_collapse_detector_flags_discriminator_scoring_fakes_above_reals() -> None:
    """D worse than a constant for a whole window: what a tiny conditional GAN on the digits did (gradient
    penalty 100: mean D(real)-D(fake) about -8 for hundreds of steps while its samples turned white)."""
    det = CollapseDetector(window=5, kind="paper")
    for _ in range(10):  # healthy, D slightly ahead; and a short dip below 0 is no collapse
        assert det.update(0.5, -0.5, 1.0) is None
    assert [det.update(-1.0, 3.0, 4.0) for _ in range(2)] == [None, None] and not det.collapsed
    out = [det.update(-1.0, 8.0, 9.0, step=20 + i) for i in range(8)]
    fired = [m for m in out if m is not None]
    assert len(fired) == 1 and det.cause == "inverted" and "\n" not in fired[0]
    assert "above real ones" in fired[0] and "gp_weight" in fired[0]
    for _ in range(5):
        det.update(0.5, -0.5, 1.0)
    assert not det.collapsed
    with pytest.raises(ConfigError, match="min_gap > 0"):
        CollapseDetector(min_gap=0.0)


# -- the generator's side: mode collapse -----------------------------------------------------------------


def _batch(seed: int, n: int = 40, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real images in [-1, 1] whose class is their mean (plus wide per-image variation), and labels."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.rand(classes, 1, 6, 6, generator=torch.Generator().manual_seed(99)) * 1.2 - 0.6
    y = torch.arange(n) % classes
    real = (means[y] + 0.3 * torch.randn(n, 1, 6, 6, generator=gen)).clamp(-1, 1)
    return real, y, means


def test_mode_collapse_detector_sees_per_class_collapse_that_the_whole_batch_hides() -> None:
    """A conditional generator giving one image per class: diverse across the batch, collapsed per class."""
    det, blind = ModeCollapseDetector(window=5), ModeCollapseDetector(window=5)
    out = []
    for i in range(8):
        real, y, means = _batch(i)
        fake = means[y] + 1e-3 * torch.randn_like(real)  # each class: one image
        out.append(det.update(real, fake, y, step=i))
        assert blind.update(real, fake, None) is None  # labels ignored: the batch still looks varied
    assert out[:4] == [None] * 4 and out[4] is not None and out[5:] == [None] * 3  # once, on the rising edge
    assert out[4].startswith("generator collapse at step 4: the generated images of classes 0, 1, 2")
    assert "(10 of 10 judged)" in out[4] and "\n" not in out[4] and "below 0.1" in out[4]
    assert det.collapsed and det.collapsed_classes == [*range(10), -1]
    assert not blind.collapsed


def test_mode_collapse_detector_names_only_the_collapsed_classes_and_spares_a_healthy_generator() -> None:
    healthy, partial = ModeCollapseDetector(window=4), ModeCollapseDetector(window=4)
    for i in range(6):
        real, y, means = _batch(i)
        fake, _, _ = _batch(100 + i)  # as varied as the data
        assert healthy.update(real, fake, y) is None
        fake[y == 3] = means[3]  # class 3 collapses onto one image
        fake[y == 7] = 1.0 + torch.rand_like(fake[y == 7])  # class 7 is pushed beyond white: shown all white
        message = partial.update(real, fake, y, step=i)
    assert not healthy.collapsed
    assert partial.collapsed_classes == [3, 7]
    assert partial.reason is not None and "classes 3, 7 (2 of 10 judged)" in partial.reason
    assert message is None  # reported when they collapsed, not again


def test_mode_collapse_detector_unconditional_and_pooled_over_many_classes() -> None:
    det = ModeCollapseDetector(window=3)
    for i in range(3):
        real, _, _ = _batch(i)
        message = det.update(real, torch.zeros_like(real) + 0.2, None)
    assert message is not None and "the generated images are all alike" in message and det.collapsed_classes == [-1]
    # 1000 classes, two images of each class per batch at most: no class is judged alone, the pool is.
    many = ModeCollapseDetector(window=3)
    for i in range(3):
        gen = torch.Generator().manual_seed(i)
        y = torch.randint(0, 1000, (16,), generator=gen).repeat(2)
        real = torch.rand(32, 1, 6, 6, generator=gen) * 2 - 1
        fake = (y.float() / 1000).view(-1, 1, 1, 1).expand_as(real)  # one image per class
        message = many.update(real, fake, y)
    assert message is not None and "alike within their classes (all " in message
    assert many.collapsed_classes == [-1]
    with pytest.raises(DataError, match="differ in shape"):
        many.update(real, fake[:4], y)


def test_mode_collapse_detector_skips_what_it_cannot_judge() -> None:
    det = ModeCollapseDetector(window=2, min_count=16)
    real, y, means = _batch(0, n=20)  # each class twice per batch: 4 images of a class over the window
    assert det.update(real, means[y], y) is None
    message = det.update(real, means[y], y)  # too few to judge a class alone; the pool (40 images) is judged
    assert message is not None and "within their classes (all 10 pooled: spread 0 of" in message
    assert det.collapsed_classes == [-1]
    flat = ModeCollapseDetector(window=2)
    for _ in range(2):  # constant real images: no spread to compare with
        assert flat.update(torch.zeros(8, 1, 2, 2), torch.zeros(8, 1, 2, 2), None) is None
    assert not flat.collapsed


def test_mode_collapse_detector_state_round_trip_continues_identically() -> None:
    import json

    feeds = []
    for i in range(9):
        real, y, means = _batch(i)
        fake = _batch(50 + i)[0] if i < 4 else means[y]
        feeds.append((real, fake, y))
    whole, first = ModeCollapseDetector(window=3), ModeCollapseDetector(window=3)
    for real, fake, y in feeds[:5]:
        whole.update(real, fake, y)
        first.update(real, fake, y)
    resumed = ModeCollapseDetector(window=3)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as it travels in state.json
    outputs = [(whole.update(*f), resumed.update(*f)) for f in feeds[5:]]
    assert any(a is not None for a, _ in outputs), "the feed must trigger a collapse warning"
    assert all(a == b for a, b in outputs)
    assert whole.state_dict() == resumed.state_dict()


def test_mode_collapse_detector_warns_once_a_window_as_classes_collapse_one_after_another() -> None:
    """A tiny conditional GAN on the digits lost six classes within eight steps: one line for them, not six;
    a collapse that ends and starts again is new (once `quiet` steps passed)."""
    det = ModeCollapseDetector(window=3, min_count=4, quiet=3)
    warnings = {}
    for i in range(20):
        real, y, means = _batch(i)
        fake, _, _ = _batch(100 + i)
        collapsed = [c for c in range(3) if 3 + c <= i < 12] + ([5] if i >= 15 else [])
        for c in collapsed:  # classes 0, 1, 2 from steps 3, 4, 5 to 11; class 5 from step 15
            fake[y == c] = means[c]
        warnings[i] = det.update(real, fake, y, step=i)
    fired = {i: m for i, m in warnings.items() if m is not None}
    assert sorted(fired) == [5, 8, 17]  # class 0's window is full at 5; 1 and 2 at 6, 7: held `quiet` steps
    assert "class 0 (1 of 10" in fired[5] and "classes 0, 1, 2 (3 of 10" in fired[8] and "class 5 (1 of" in fired[17]


def test_mode_statistics_need_no_values_so_no_host_sync() -> None:
    """The watch's per-step statistics have no shape that depends on the labels' or images' values (torch.unique,
    bincount or a boolean mask would each be a host sync on a GPU, in every training step): they compute on
    the meta device, which holds no values at all; the trainer brings them to the host with its logged values."""
    real, y, _ = _batch(0)
    stats = mode_statistics(real.to("meta"), real.to("meta"), y.to("meta"))
    assert stats.shape == (real.shape[0], 4) and stats.device.type == "meta"
    assert mode_statistics(real.to("meta"), real.to("meta")).shape == (real.shape[0], 4)
    # a NaN image spoils only the step's record (CollapseDetector reports it), as before
    det = ModeCollapseDetector(window=1)
    fake = real.clone()
    fake[0] = float("nan")
    assert det.update(real, fake, y) is None and len(det.state_dict()["records"]) == 0
