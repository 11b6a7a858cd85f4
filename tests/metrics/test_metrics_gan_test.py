"""GAN-test / GAN-train on scikit-learn digits, with real images standing in for class-conditional samples."""

from __future__ import annotations

import pytest
import torch
from metric_helpers import FakeContext, pool_sampler
from torch import Tensor

from avade.errors import AvadeError, ConfigError
from avade.metrics.gan_test import GanTest, GanTestConfig, GanTrain, GanTrainConfig, accuracy, train_classifier

FAST = {"epochs": 4, "width": 16}


def test_gan_test_with_real_samples_is_the_real_accuracy(tmp_path, digits) -> None:
    # "Samples" = the real test images for the requested labels, so GAN-test must equal the accuracy of
    # the same classifier on the real test split.
    ctx = FakeContext(tmp_path, digits, sampler=pool_sampler(*digits["test"]), num_classes=10)
    out = GanTest(GanTestConfig(**FAST)).compute(ctx)
    assert out["gan_test"] == out["gan_test_real"]
    assert out["gan_test_real"] > 85.0
    model = train_classifier(*digits["train"], 10, GanTestConfig(**FAST))
    # Seeded: training again outside the metric gives exactly the same classifier accuracy.
    assert out["gan_test_real"] == pytest.approx(100 * accuracy(model, *digits["test"]))


def test_gan_train_with_real_samples_matches_a_real_classifier(tmp_path, digits) -> None:
    ctx = FakeContext(tmp_path, digits, sampler=pool_sampler(*digits["train"]), num_classes=10)
    out = GanTrain(GanTrainConfig(**FAST)).compute(ctx)
    real = 100 * accuracy(train_classifier(*digits["train"], 10, GanTestConfig(**FAST)), *digits["test"])
    assert out["gan_train"] > 85.0
    assert out["gan_train"] == pytest.approx(real, abs=3.0)


def test_gan_train_on_bad_samples_is_near_chance(tmp_path, digits) -> None:
    blank = lambda n, labels: torch.zeros(n, 1, 8, 8, dtype=torch.uint8)  # noqa: E731
    ctx = FakeContext(tmp_path, digits, sampler=blank, num_classes=10)
    out = GanTrain(GanTrainConfig(samples=300, **FAST)).compute(ctx)
    assert out["gan_train"] < 25.0


def test_needs_labels_and_matching_samples(tmp_path, digits) -> None:
    ctx = FakeContext(tmp_path, digits, sampler=pool_sampler(*digits["test"]), num_classes=0,
                      dataset_key="natural-patches/test/32")
    for metric in (GanTest(GanTestConfig(**FAST)), GanTrain(GanTrainConfig(**FAST))):
        with pytest.raises(AvadeError, match="needs labeled data") as info:
            metric.compute(ctx)
        assert "\n" not in str(info.value)
    rgb = lambda n, labels: torch.zeros(n, 3, 8, 8, dtype=torch.uint8)  # noqa: E731
    ctx = FakeContext(tmp_path, digits, sampler=rgb, num_classes=10)
    with pytest.raises(AvadeError, match="samples of shape"):
        GanTest(GanTestConfig(**FAST)).compute(ctx)


def test_classifier_training_leaves_every_global_generator_alone(digits, monkeypatch) -> None:
    # Runs inside training (rank 0's evaluation): reseeding the CUDA generators there would restart the
    # training noise after every evaluation. On a CPU machine torch.manual_seed only queues the CUDA
    # reseed, so the call itself is what is checked.
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    before = torch.get_rng_state()
    x, y = digits["train"]
    first = train_classifier(x[:64], y[:64], 10, GanTestConfig(epochs=1, width=4))
    again = train_classifier(x[:64], y[:64], 10, GanTestConfig(epochs=1, width=4))
    assert reseeded == []
    assert torch.equal(torch.get_rng_state(), before)
    for a, b in zip(first.parameters(), again.parameters(), strict=True):  # still seeded
        assert torch.equal(a, b)


def test_which_data_each_classifier_sees(tmp_path, digits, monkeypatch) -> None:
    # Shmelkov et al. 2018: GAN-test = accuracy on samples of a classifier trained on the real training
    # set; GAN-train = accuracy on the real test set of a classifier trained on samples.
    import avade.metrics.gan_test as gan_test

    calls: list[tuple[str, Tensor, Tensor]] = []
    real_train = gan_test.train_classifier
    real_accuracy = gan_test.accuracy

    def spy_train(images: Tensor, labels: Tensor, *args, **kwargs):
        calls.append(("train", images, labels))
        return real_train(images, labels, *args, **kwargs)

    def spy_accuracy(model, images: Tensor, labels: Tensor, *args, **kwargs) -> float:
        calls.append(("eval", images, labels))
        return real_accuracy(model, images, labels, *args, **kwargs)

    monkeypatch.setattr(gan_test, "train_classifier", spy_train)
    monkeypatch.setattr(gan_test, "accuracy", spy_accuracy)
    (train_x, train_y), (test_x, test_y) = digits["train"], digits["test"]
    asked: list[Tensor] = []

    def sampler(n: int, labels: Tensor | None) -> Tensor:
        assert labels is not None  # class-conditional
        asked.append(labels.clone())
        return 255 - pool_sampler(*digits["test"])(n, labels)  # recognisably not real images

    ctx = FakeContext(tmp_path, digits, sampler=sampler, num_classes=10)
    GanTest(GanTestConfig(epochs=1, width=4)).compute(ctx)
    (kind, x, y), (kind2, sx, sy), (kind3, rx, ry) = calls
    assert kind == "train" and torch.equal(x, train_x) and torch.equal(y, train_y)
    assert kind2 == "eval" and torch.equal(sy, asked[0]) and torch.equal(sy, test_y)  # test labels asked
    assert torch.equal(sx, 255 - pool_sampler(*digits["test"])(len(sy), sy))
    assert kind3 == "eval" and torch.equal(rx, test_x) and torch.equal(ry, test_y)

    calls.clear()
    GanTrain(GanTrainConfig(epochs=1, width=4)).compute(ctx)
    (kind, sx, sy), (kind2, x, y) = calls
    assert kind == "train" and torch.equal(sy, asked[1]) and torch.equal(sy, train_y)  # train labels asked
    assert torch.equal(sx, 255 - pool_sampler(*digits["test"])(len(sy), sy))
    assert kind2 == "eval" and torch.equal(x, test_x) and torch.equal(y, test_y)


def test_mode_collapse_keeps_gan_test_and_lowers_gan_train(tmp_path, digits) -> None:
    # One real image per class for every request: perfect quality (GAN-test high) and no diversity
    # (GAN-train well below the real classifier). Samples of the wrong class: GAN-test near 0.
    train_x, train_y = digits["train"]
    first = torch.stack([(train_y == c).nonzero()[0, 0] for c in range(10)])

    def collapsed(n: int, labels: Tensor | None) -> Tensor:
        assert labels is not None
        return train_x[first[labels]]

    ctx = FakeContext(tmp_path, digits, sampler=collapsed, num_classes=10)
    gt = GanTest(GanTestConfig(**FAST)).compute(ctx)
    gtr = GanTrain(GanTrainConfig(**FAST)).compute(ctx)
    assert gt["gan_test"] > 95.0 and gt["gan_test_real"] > 85.0
    assert gtr["gan_train"] < gt["gan_test_real"] - 15.0

    shifted = FakeContext(tmp_path, digits, sampler=lambda n, labels: collapsed(n, (labels + 1) % 10),
                          num_classes=10)
    assert GanTest(GanTestConfig(**FAST)).compute(shifted)["gan_test"] < 10.0


class _LabelListContext(FakeContext):
    """A context that also offers the optional ``labels(split)`` (no image decoded), recording its calls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.label_calls: list[str] = []
        self.read_splits: list[str] = []

    def labels(self, split: str) -> Tensor:
        self.label_calls.append(split)
        return self.real[split][1]

    def real_batches(self, split, n=None, batch_size=100):
        self.read_splits.append(split)
        return super().real_batches(split, n, batch_size)


def test_gan_train_takes_the_training_labels_without_reading_the_images(tmp_path, digits) -> None:
    plain = FakeContext(tmp_path / "a", digits, sampler=pool_sampler(*digits["train"]), num_classes=10)
    listing = _LabelListContext(tmp_path / "b", digits, sampler=pool_sampler(*digits["train"]), num_classes=10)
    expected = GanTrain(GanTrainConfig(**FAST)).compute(plain)
    assert GanTrain(GanTrainConfig(**FAST)).compute(listing) == expected
    assert listing.label_calls == ["train"] and listing.read_splits == ["test"]
    bad = {**digits, "train": (digits["train"][0], digits["train"][1] + 10)}
    with pytest.raises(AvadeError, match="outside"):
        GanTrain(GanTrainConfig(**FAST)).compute(_LabelListContext(tmp_path / "c", bad, num_classes=10,
                                                                   sampler=pool_sampler(*digits["train"])))


def test_the_resnet_classifier_is_he_et_al_s_cifar_resnet() -> None:
    from avade.metrics.gan_test import CifarResNet

    for depth in (20, 32):
        net = CifarResNet(3, 10, depth=depth)
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) + 1 == depth  # 6n+2: the 3x3 convolutions and the linear layer
        assert net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 10)
    assert [m.out_channels for m in CifarResNet(3, 10, depth=20).modules() if isinstance(m, torch.nn.Conv2d)
            and m.kernel_size == (3, 3)][::6] == [16, 16, 32, 64]
    params = sum(p.numel() for p in CifarResNet(3, 10, depth=32).parameters())
    assert 0.45e6 < params < 0.5e6  # ResNet-32: 0.46M parameters (He et al., Table 6)
    with pytest.raises(ConfigError, match="6n\\+2"):
        GanTestConfig(classifier="resnet", depth=30)


def test_augmentation_crops_within_the_padding_and_flips() -> None:
    from avade.metrics.gan_test import _augmented

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).view(2, 3, 8, 8).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = _augmented(x, gen, pad=0)  # no room to move: the image or its mirror image
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    seen = set()
    for seed in range(20):
        out = _augmented(x, torch.Generator().manual_seed(seed), pad=4)
        assert out.shape == x.shape and out.dtype == torch.uint8
        for i in range(2):
            padded = torch.nn.functional.pad(x[i], (4, 4, 4, 4))
            found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                     if torch.equal(out[i], (lambda c: c.flip(2) if f else c)(padded[:, dy:dy + 8, dx:dx + 8]))]
            assert found, "every output is a crop of the padded image, maybe mirrored"
            seen.add(found[0])
    assert len(seen) > 10, "offsets and flips vary"


def test_a_resnet_trained_with_sgd_cosine_and_augmentation_learns_the_digits(digits) -> None:
    cfg = GanTestConfig(classifier="resnet", depth=8, width=8, optimizer="sgd", lr=0.05, lr_schedule="cosine",
                        weight_decay=5e-4, augment=True, epochs=6)
    model = train_classifier(*digits["train"], 10, cfg)
    assert 100 * accuracy(model, *digits["test"]) > 70.0


def test_a_classifier_that_gets_no_training_step_is_refused_not_scored(tmp_path, digits) -> None:
    # Batches of one are skipped (batch norm needs two): a single sample (or batch_size = 1) left the
    # classifier untrained, and its chance-level accuracy was reported as GAN-train / GAN-test.
    ctx = FakeContext(tmp_path, digits, sampler=pool_sampler(*digits["train"]), num_classes=10)
    one = FakeContext(tmp_path, {"train": tuple(t[:1] for t in digits["train"]), "test": digits["test"]},
                      sampler=pool_sampler(*digits["train"]), num_classes=10)
    with pytest.raises(AvadeError, match="gan-test: its classifier got no training step from 1 image") as info:
        GanTest(GanTestConfig(**FAST)).compute(one)  # a training split of one image
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="batch_size"):
        GanTestConfig(batch_size=1)
    assert GanTrain(GanTrainConfig(samples=2, epochs=1)).compute(ctx)["gan_train"] >= 0.0  # two: one step


def test_gan_train_of_one_sample_is_refused_when_built(tmp_path, digits) -> None:
    # [eval.gan-train] samples = 1 can never train the classifier: refused when the metric is built (before
    # a training run starts), not after the run, at its final evaluation
    with pytest.raises(ConfigError, match=r"eval.gan-train.samples: gan-train .* 1 gives it no training step") as info:
        GanTrain(GanTrainConfig(samples=1, **FAST))
    assert "\n" not in str(info.value)
    GanTrain(GanTrainConfig(samples=2, **FAST))
    GanTest(GanTestConfig(samples=1, **FAST))  # GAN-test scores samples: one is enough


def test_gan_test_refuses_to_score_its_classifier_on_its_training_split() -> None:
    # Shmelkov et al.: no test image in the classifier's training. With train_split = test_split,
    # gan_test_real was the classifier's training accuracy, reported as the real-data reference point.
    for split in ("train", "test"):
        with pytest.raises(ConfigError, match=r"eval\.gan-test\.test_split: .*must differ") as info:
            GanTest(GanTestConfig(train_split=split, test_split=split))
        assert "\n" not in str(info.value)
    GanTrain(GanTrainConfig(train_split="test", test_split="test"))  # its classifier trains on samples only


def test_gan_train_says_when_its_samples_leave_out_classes(tmp_path, digits) -> None:
    # samples = N small enough that some class is never asked for: the classifier can never predict it,
    # which caps GAN-train; said in one line rather than reported as the model's coverage.
    ctx = FakeContext(tmp_path, digits, sampler=pool_sampler(*digits["train"]), num_classes=10)
    with pytest.warns(UserWarning, match=r"gan-train: the 4 samples' labels leave out \d of the test split") as rec:
        GanTrain(GanTrainConfig(samples=4, epochs=1, width=4)).compute(ctx)
    assert all("\n" not in str(w.message) for w in rec)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GanTrain(GanTrainConfig(samples=400, epochs=1, width=4)).compute(ctx)  # every class drawn: no warning
