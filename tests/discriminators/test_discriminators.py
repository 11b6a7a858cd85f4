"""Every registered discriminator (plugins included) honours the discriminator contract."""

from __future__ import annotations

import pytest
import torch

import avade
from avade.errors import AvadeError, ConfigError, DataError
from avade.losses.adversarial import gradient_penalty

NAMES = [info.name for info in avade.get_registry().list(kind="discriminator")]


def build(name: str, resolution: int, num_classes: int | None = None, in_channels: int = 3, **cfg):
    torch.manual_seed(0)
    return avade.create("discriminator", name, in_shape=(in_channels, resolution, resolution),
                        num_classes=num_classes, **cfg)


def images(batch: int, resolution: int, channels: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(batch, channels, resolution, resolution, generator=gen) * 2 - 1


def test_builtins_are_registered() -> None:
    assert {"dcgan", "resnet"} <= set(NAMES)


@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("name", NAMES)
def test_scores_have_shape_batch_and_input_gradients(name: str, resolution: int) -> None:
    d = build(name, resolution)
    x = images(3, resolution).requires_grad_(True)
    out = d(x)
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_gradient_penalty_reaches_every_weight(name: str) -> None:
    # Double backward through the network: every weight matrix/kernel gets a finite gradient
    # (an output bias cannot: it does not change the input gradient).
    d = build(name, 32)
    gp = gradient_penalty(d, images(2, 32), images(2, 32) * 0.5, weight=10.0,
                          generator=torch.Generator().manual_seed(0))
    gp.backward()
    assert torch.isfinite(gp)
    weights = {n: p for n, p in d.named_parameters() if p.dim() >= 2}
    assert weights
    missing = [n for n, p in weights.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("name", NAMES)
def test_conditional_scores_depend_on_labels(name: str) -> None:
    d = build(name, 32, num_classes=10).eval()  # eval: e.g. spectral norm's power step is frozen
    x = images(4, 32)
    with torch.no_grad():
        a = d(x, torch.tensor([0, 1, 2, 3]))
        b = d(x, torch.tensor([5, 6, 7, 8]))
        unconditional = d(x)
    assert a.shape == b.shape == unconditional.shape == (4,)
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, unconditional)


@pytest.mark.parametrize("name", NAMES)
def test_unconditional_discriminator_ignores_labels(name: str) -> None:
    d = build(name, 32).eval()
    x = images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(d(x, torch.tensor([0, 1])), d(x))


@pytest.mark.parametrize("name", NAMES)
def test_grayscale_input(name: str) -> None:
    d = build(name, 32, in_channels=1)
    assert d(images(2, 32, channels=1)).shape == (2,)


@pytest.mark.parametrize("name", ["dcgan", "resnet"])
@pytest.mark.parametrize("resolution", [48, 128])
def test_builtins_handle_other_resolutions(name: str, resolution: int) -> None:
    assert build(name, resolution)(images(2, resolution)).shape == (2,)


@pytest.mark.parametrize("name", ["dcgan", "resnet"])
def test_norm_is_chosen_by_config(name: str) -> None:
    d = build(name, 32, norm="weight-norm")
    assert any("parametrizations" in n for n, _ in d.named_modules())
    assert d(images(2, 32)).shape == (2,)
    with pytest.raises(AvadeError, match="unknown norm 'wieght-norm'"):
        build(name, 32, norm="wieght-norm")


def test_dcgan_uses_leaky_relu_slope() -> None:
    d = build("dcgan", 32, slope=0.0)
    assert d.slope == 0.0
    with pytest.raises(ConfigError, match="slope"):
        build("dcgan", 32, slope=-0.1)


def test_resnet_follows_table_6a() -> None:
    d = build("resnet", 32)
    assert d.stem.layer.out_channels == 16
    assert [b.conv2.layer.out_channels for b in d.blocks] == [32, 64, 128, 256]
    assert [b.down for b in d.blocks] == [False, True, True, True]


def test_readable_errors() -> None:
    with pytest.raises(ConfigError, match="channels"):
        build("dcgan", 32, channels=[])
    with pytest.raises(ConfigError, match="too small"):
        build("dcgan", 4, channels=[8, 8, 8])
    with pytest.raises(DataError, match="built for images of shape"):
        build("dcgan", 32)(images(1, 64))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\)"):
        build("resnet", 32, num_classes=10)(images(2, 32), torch.tensor([0, 10]))


def test_labels_of_a_compiled_or_gpu_critic_are_not_read_back_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two host syncs per call on a GPU (and a graph break under torch.compile): there the range is
    # asserted on the device, the labels having been checked on the CPU when their batch was loaded.
    from avade.discriminators.shapes import check_labels

    asserted = []
    monkeypatch.setattr(torch, "_assert_async", lambda cond, msg="": asserted.append(msg))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\)"):
        check_labels(torch.tensor([0, 10]), 2, 10, "resnet")  # CPU: checked at once, with the values
    assert asserted == []

    class FakeCuda(torch.Tensor):  # a CPU tensor that claims another device, to take the GPU branch
        @property
        def device(self):  # type: ignore[override]
            return torch.device("meta")

    check_labels(torch.tensor([0, 3]).as_subclass(FakeCuda), 2, 10, "resnet")
    assert asserted and "labels must lie in [0, 10)" in asserted[0]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    check_labels(torch.tensor([0, 3]), 2, 10, "resnet")
    assert len(asserted) == 1, "nothing checked per call while compiling"
