"""The attrs config classes of the built-in metrics, in a module that does not import torch.

``avade recipe show``, ``recipe keys`` and ``list-components --json --schema`` resolve a recipe against
these classes only; kept apart from the components' modules (which import torch and re-export them),
they resolve without loading torch. Keep this module free of heavy imports.

Each class also says whether its metric scores class-conditional samples (``needs_conditional``, as its factory
does): a recipe's check of an unconditional model reads it here, without importing the metric's module.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import attrs

from avade.errors import ConfigError
from avade.schema import between, ge, gt


@attrs.define
class BPDConfig:
    """``importance_samples`` > 1 adds the importance-weighted bound (tighter, k times the cost)."""

    needs_conditional: ClassVar[bool] = False  # (its factory's; read at recipe load)

    importance_samples: int = attrs.field(
        default=1, validator=ge(1),
        metadata={"help": "k > 1 also reports bpd_iw<k>, the importance-weighted bound (tighter, k times the cost)"})
    split: Literal["train", "test"] = attrs.field(
        default="test", metadata={"help": "real split scored; train: reported as bpd_train (training reports it too)"})


@attrs.define
class FIDConfig:
    """FID of ``samples`` model samples against the real ``split`` (all of it, or ``real_samples``)."""

    needs_conditional: ClassVar[bool] = False  # (its factory's; read at recipe load)

    samples: int = attrs.field(default=10000, validator=ge(2), metadata={"help": "model samples"})
    split: Literal["train", "test"] = attrs.field(default="test",
                                                  metadata={"help": "real split for the reference statistics"})
    real_samples: int | None = attrs.field(default=None, validator=ge(2),
                                           metadata={"help": "real images used; none = the whole split"})
    batch_size: int = attrs.field(default=100, validator=ge(1),
                                  metadata={"help": "images per batch (sampling, Inception features)"})
    reference: str | None = attrs.field(
        default=None, metadata={"help": "a .npz of published real statistics, `mu` [D] and `sigma` [D, D] (as "
                                        "TTUR, pytorch-fid and clean-fid write them); replaces split and "
                                        "real_samples"})


@attrs.define
class KIDConfig:
    """KID of ``samples`` model samples against the real ``split``."""

    needs_conditional: ClassVar[bool] = False  # (its factory's; read at recipe load)

    samples: int = attrs.field(default=10000, validator=ge(2), metadata={"help": "model samples"})
    split: Literal["train", "test"] = attrs.field(default="test", metadata={"help": "real split compared with"})
    real_samples: int | None = attrs.field(
        default=None, validator=ge(2),
        metadata={"help": "real images used; none = the whole split, or a fixed random subset of "
                          "subsets x subset_size of it when it has more"})
    subsets: int = attrs.field(default=100, validator=ge(1),
                               metadata={"help": "random subsets the MMD is averaged over (kid_std: its spread)"})
    subset_size: int = attrs.field(
        default=1000, validator=ge(2),
        metadata={"help": "real and model images per subset (capped at the smaller set, with a warning)"})
    degree: int = attrs.field(default=3, validator=ge(1),
                              metadata={"help": "degree of the kernel (gamma <x, y> + coef)^degree (KID: 3)"})
    gamma: float | None = attrs.field(default=None, validator=gt(0), metadata={"help": "none = 1 / dim"})
    coef: float = attrs.field(default=1.0, validator=gt(0), metadata={"help": "the kernel's constant term (KID: 1)"})
    seed: int = attrs.field(default=0, metadata={"help": "seeds the subsets' draws"})
    batch_size: int = attrs.field(default=100, validator=ge(1),
                                  metadata={"help": "images per batch (sampling, Inception features)"})


@attrs.define
class InceptionScoreConfig:
    """IS of ``samples`` model samples in ``splits`` chunks."""

    needs_conditional: ClassVar[bool] = False  # (its factory's; read at recipe load)

    samples: int = attrs.field(default=50000, validator=ge(2), metadata={"help": "model samples"})
    splits: int = attrs.field(
        default=10, validator=ge(1),
        metadata={"help": "consecutive chunks scored apart; mean and std over them (Salimans et al.: 10)"})
    batch_size: int = attrs.field(default=100, validator=ge(1),
                                  metadata={"help": "images per batch (sampling, Inception features)"})


@attrs.define
class PRDConfig:
    """PRD of model samples against the real ``split`` (the paper clusters training images with samples)."""

    needs_conditional: ClassVar[bool] = False  # (its factory's; read at recipe load)

    samples: int = attrs.field(default=10000, validator=ge(2), metadata={"help": "real images = samples"})
    split: Literal["train", "test"] = attrs.field(
        default="train", metadata={"help": "real split compared with (the paper: the training images)"})
    num_clusters: int = attrs.field(default=20, validator=ge(2),
                                    metadata={"help": "k-means clusters of real and sample features (paper: 20)"})
    num_angles: int = attrs.field(default=1001, validator=ge(3),
                                  metadata={"help": "points of the curve, slopes over (0, pi/2) (paper: 1001)"})
    num_runs: int = attrs.field(default=10, validator=ge(1),
                                metadata={"help": "clusterings whose curves are averaged (paper: 10)"})
    beta: float = attrs.field(
        default=8.0, validator=gt(0),
        metadata={"help": "reports max F_beta and F_1/beta, named after it: prd_f8, prd_f1_8 (paper: 8)"})
    # scikit-learn's random_state takes 0 .. 2**32 - 1; run i uses seed + i
    seed: int = attrs.field(default=0, validator=between(0, 2**31 - 1),
                            metadata={"help": "k-means random_state of the first run; run i uses seed + i"})
    plot: bool = attrs.field(default=True, metadata={"help": "write prd.png and prd_curve.json to out_dir"})
    label: str = attrs.field(default="model", metadata={"help": "legend label of the curve"})
    batch_size: int = attrs.field(default=100, validator=ge(1),
                                  metadata={"help": "images per batch (sampling, Inception features)"})


@attrs.define
class PRDCConfig:
    """Precision, recall, density and coverage of ``samples`` model samples against the real ``split``."""

    needs_conditional: ClassVar[bool] = False  # (its factory's; read at recipe load)

    samples: int = attrs.field(default=10000, validator=ge(2), metadata={"help": "model samples"})
    split: Literal["train", "test"] = attrs.field(default="test", metadata={"help": "real split compared with"})
    real_samples: int | None = attrs.field(
        default=None, validator=ge(2),
        metadata={"help": "real images used (a fixed random subset); none = as many as samples"})
    nearest_k: int = attrs.field(default=5, validator=ge(1), metadata={"help": "k of the nearest-neighbour balls"})
    batch_size: int = attrs.field(default=100, validator=ge(1),
                                  metadata={"help": "images per batch (sampling, Inception features)"})


@attrs.define
class GanTestConfig:
    """Classifier size and training, and which splits/how many samples to use."""

    needs_conditional: ClassVar[bool] = True  # (its factory's; read at recipe load)

    epochs: int = attrs.field(default=10, validator=ge(1), metadata={"help": "classifier training epochs"})
    classifier: Literal["small", "resnet"] = attrs.field(
        default="small", metadata={"help": "small: 3-conv CNN; resnet: He et al.'s CIFAR ResNet of `depth` layers"})
    depth: int = attrs.field(default=32, validator=ge(8), metadata={"help": "resnet: 6n+2 layers (20, 32, 56, ...)"})
    width: int | None = attrs.field(default=None, validator=ge(1),
                                    metadata={"help": "channels of the first conv; none = 32 (small), 16 (resnet)"})
    optimizer: Literal["adam", "sgd"] = attrs.field(default="adam", metadata={"help": "sgd: momentum 0.9, Nesterov"})
    lr: float = attrs.field(default=1e-3, validator=gt(0), metadata={"help": "classifier learning rate"})
    lr_schedule: Literal["constant", "cosine"] = attrs.field(
        default="constant", metadata={"help": "cosine: decays lr to 0 over the epochs"})
    weight_decay: float = attrs.field(default=0.0, validator=ge(0),
                                      metadata={"help": "classifier weight decay (the optimizer's L2 term)"})
    augment: bool = attrs.field(default=False, metadata={"help": "random crops (padding H/8: 4 px at 32x32), flips"})
    batch_size: int = attrs.field(default=64, validator=ge(2),
                                  metadata={"help": "classifier training batch (at least 2: batch norm)"})
    seed: int = attrs.field(
        default=0,
        metadata={"help": "seeds the classifier's init, batch order, augmentation and the labels drawn for samples"})
    samples: int | None = attrs.field(default=None, validator=ge(1),
                                      metadata={"help": "none = as many as the real split's images"})
    train_split: Literal["train", "test"] = attrs.field(
        default="train",
        metadata={"help": "gan-test: real images its classifier trains on; gan-train: labels the samples take"})
    test_split: Literal["train", "test"] = attrs.field(
        default="test",
        metadata={"help": "gan-train: real images scored; gan-test: labels the samples take, and gan_test_real"})
    sample_batch_size: int = attrs.field(default=100, validator=ge(1),
                                         metadata={"help": "images per batch when sampling and reading real images"})

    def __attrs_post_init__(self) -> None:
        if self.classifier == "resnet" and (self.depth - 2) % 6:
            raise ConfigError(f"a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, ...), got {self.depth}", path="depth")


@attrs.define
class GanTrainConfig(GanTestConfig):
    """Same options as GAN-test; here the classifier is trained on the samples."""
