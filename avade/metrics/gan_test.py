"""GAN-test and GAN-train (Shmelkov et al. 2018; AV-ADE appendix E.1, Table 8), in percent.

- GAN-test: a classifier trained on real labeled images, evaluated on class-conditional samples (the
  label asked for is the target). Sensitive to sample quality. Also reported: that classifier's
  accuracy on the real test split (``gan_test_real``), the reference point.
- GAN-train: a classifier trained on class-conditional samples, evaluated on the real test split.
  Sensitive to coverage/diversity as well.

The classifier is by default a small CNN (three 3x3 conv layers with batch norm, global average pooling,
linear) trained with Adam: quick, and enough to rank models. ``classifier = "resnet"`` is He et al.'s
CIFAR ResNet (depth 6n+2, e.g. 32) as such classifiers are usually trained (``optimizer = "sgd"``,
``lr_schedule = "cosine"``, ``augment``: random crops and flips), closer to the classifier Shmelkov et
al. used; the absolute percentages depend on the classifier, so compare models evaluated with the same
one. Everything is seeded so a run on the CPU is reproducible. By default samples are
asked for with the labels of the real split they stand in for (GAN-test: the test labels; GAN-train:
the training labels), so the class balance matches the data; ``samples = N`` instead draws N labels
from that split's labels.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avade.errors import AvadeError, ConfigError
from avade.metrics.configs import GanTestConfig, GanTrainConfig
from avade.metrics.context import EvalContext

__all__ = ["CifarResNet", "GanTest", "GanTestConfig", "GanTrain", "GanTrainConfig", "SmallClassifier", "accuracy",
           "train_classifier"]


class SmallClassifier(nn.Module):
    """conv(w) -> conv(2w, stride 2) -> conv(4w, stride 2), each with batch norm and ReLU; pool; linear."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of uint8 images ``[B, C, H, W]`` (scaled to [-1, 1] here)."""
        return self.head(self.features(x.float() / 127.5 - 1.0))


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; a 1x1 projection shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. (2016, section 4.2): a 3x3 conv, then three stages of n basic blocks (``width``,
    ``2 width``, ``4 width`` channels; the last two halve the resolution), pool, linear: 6n+2 layers."""

    def __init__(self, in_channels: int, num_classes: int, depth: int = 32, width: int = 16) -> None:
        super().__init__()
        n = (depth - 2) // 6
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU()]
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for block in range(n):
                layers.append(_BasicBlock(cin, cout, 2 if stage > 0 and block == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of uint8 images ``[B, C, H, W]`` (scaled to [-1, 1] here)."""
        return self.head(self.features(x.float() / 127.5 - 1.0))


def _classifier(cfg: GanTestConfig, in_channels: int, num_classes: int) -> nn.Module:
    if cfg.classifier == "resnet":
        return CifarResNet(in_channels, num_classes, cfg.depth, cfg.width or 16)
    return SmallClassifier(in_channels, num_classes, cfg.width or 32)


def _augmented(x: Tensor, gen: torch.Generator, pad: int | None = None) -> Tensor:
    """Each uint8 image cropped at a random offset from its copy zero-padded by ``pad`` pixels (default
    1/8 of the height: 4 at 32x32) and flipped with probability 1/2 (the standard CIFAR augmentation)."""
    b, _, h, w = x.shape
    pad = max(1, h // 8) if pad is None else pad
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(2 * pad + 1, (b, 1), generator=gen)
    dx = torch.randint(2 * pad + 1, (b, 1), generator=gen)
    rows = (dy + torch.arange(h)).view(b, 1, h, 1)
    cols = (dx + torch.arange(w)).view(b, 1, 1, w)
    out = padded[torch.arange(b).view(b, 1, 1, 1), torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


def train_classifier(images: Tensor, labels: Tensor, num_classes: int, cfg: GanTestConfig,
                     device: torch.device | str = "cpu") -> nn.Module:
    """Train the configured classifier (:class:`SmallClassifier` or :class:`CifarResNet`) on uint8
    ``images`` and int64 ``labels``; returns it in eval mode."""
    with torch.random.fork_rng(devices=[]):
        # Seed the init (drawn on the CPU) without touching the caller's global RNG state: the CPU
        # generator alone, as fork_rng(devices=[]) restores only that one (torch.manual_seed would also
        # reseed every CUDA device, and the training process's CUDA noise would restart after each eval).
        torch.default_generator.manual_seed(cfg.seed)
        model = _classifier(cfg, images.shape[1], num_classes)
    model.to(device).train()
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                                                     weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(images)
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    step = trained = 0
    with torch.enable_grad():
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                step += 1
                if len(idx) < 2:  # batch norm needs two examples
                    continue
                trained += 1
                if cfg.lr_schedule == "cosine":
                    for group in opt.param_groups:
                        group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - 1) / steps))
                x = _augmented(images[idx], gen) if cfg.augment else images[idx]
                loss = F.cross_entropy(model(x.to(device)), labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    if trained == 0:  # an untrained classifier's accuracy would be reported as the metric
        name = "gan-train" if isinstance(cfg, GanTrainConfig) else "gan-test"
        raise AvadeError(f"{name}: its classifier got no training step from {n} image(s) (batch norm needs at least "
                         "two per batch); give it more (for gan-train: samples = N >= 2)")
    return model.eval()


@torch.inference_mode()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, device: torch.device | str = "cpu",
             batch_size: int = 500) -> float:
    """Fraction of ``images`` that ``model`` classifies as ``labels``."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start:start + batch_size].to(device))
        correct += int((logits.argmax(dim=1).cpu() == labels[start:start + batch_size]).sum())
    return correct / max(len(images), 1)


def _need_labels(ctx: EvalContext, metric: str) -> int:
    if ctx.num_classes <= 0:
        raise AvadeError(f"{metric} needs labeled data and a class-conditional model, but dataset "
                         f"{ctx.dataset_key!r} has no classes; remove {metric!r} from eval.metrics")
    return ctx.num_classes


def _real(ctx: EvalContext, split: str, batch_size: int) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for x, y in ctx.real_batches(split, batch_size=batch_size):
        xs.append(x.cpu())
        ys.append(y.cpu().long())
    if not xs:
        raise AvadeError(f"{ctx.dataset_key}: split {split!r} is empty")
    return torch.cat(xs), _checked(ctx, split, torch.cat(ys))


def _checked(ctx: EvalContext, split: str, labels: Tensor) -> Tensor:
    """``labels`` of split ``split``, refused unless they lie in ``[0, num_classes)``."""
    if int(labels.min()) < 0 or int(labels.max()) >= ctx.num_classes:
        raise AvadeError(f"{ctx.dataset_key}: labels of split {split!r} are outside [0, {ctx.num_classes})")
    return labels


def _labels(ctx: EvalContext, split: str, batch_size: int) -> Tensor:
    """The labels of split ``split`` in order: from the context's optional ``labels(split)`` (the dataset's
    label list, no image decoded), else read along with the images."""
    direct = getattr(ctx, "labels", None)
    labels = direct(split) if callable(direct) else None
    if labels is None:
        return _real(ctx, split, batch_size)[1]
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if not len(labels):
        raise AvadeError(f"{ctx.dataset_key}: split {split!r} is empty")
    return _checked(ctx, split, labels)


def _sample_labels(real_labels: Tensor, n: int | None, seed: int) -> Tensor:
    if n is None:
        return real_labels.clone()
    gen = torch.Generator().manual_seed(seed)
    return real_labels[torch.randint(len(real_labels), (n,), generator=gen)]


def _samples(ctx: EvalContext, labels: Tensor, batch_size: int, like: Tensor) -> Tensor:
    xs = [x.cpu() for x in ctx.sample_batches(len(labels), batch_size=batch_size, labels=labels)]
    images = torch.cat(xs) if xs else torch.empty(0, dtype=torch.uint8)
    if len(images) != len(labels) or images.shape[1:] != like.shape[1:]:
        raise AvadeError(f"the model gave samples of shape {tuple(images.shape)} for {len(labels)} labels; "
                         f"expected [{len(labels)}, {', '.join(map(str, like.shape[1:]))}]")
    return images


class GanTest:
    """Metric ``gan-test``: ``{"gan_test": %, "gan_test_real": %}``."""

    name = "gan-test"
    needs_conditional = True  # checked before any metric runs (recipe load, run_metrics)

    def __init__(self, cfg: GanTestConfig) -> None:
        # Shmelkov et al.: the classifier never sees the images it is scored on; trained and scored on one
        # split, gan_test_real would be its training accuracy and no reference point.
        if cfg.train_split == cfg.test_split:
            raise ConfigError(f"gan-test trains its classifier on train_split and reports its accuracy on test_split "
                              f"(gan_test_real), so they must differ, but both are {cfg.train_split!r}; set "
                              'train_split = "train" and test_split = "test"', path="eval.gan-test.test_split")
        self.cfg = cfg

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """``gan_test``: accuracy (%) on model samples of a classifier trained on real images (``gan_test_real``:
        on real test images)."""
        cfg = self.cfg
        num_classes = _need_labels(ctx, self.name)
        train_x, train_y = _real(ctx, cfg.train_split, cfg.sample_batch_size)
        test_x, test_y = _real(ctx, cfg.test_split, cfg.sample_batch_size)
        model = train_classifier(train_x, train_y, num_classes, cfg, ctx.device)
        labels = _sample_labels(test_y, cfg.samples, cfg.seed)
        samples = _samples(ctx, labels, cfg.sample_batch_size, like=test_x)
        return {"gan_test": 100.0 * accuracy(model, samples, labels, ctx.device),
                "gan_test_real": 100.0 * accuracy(model, test_x, test_y, ctx.device)}


class GanTrain:
    """Metric ``gan-train``: ``{"gan_train": %}``."""

    name = "gan-train"
    needs_conditional = True  # checked before any metric runs (recipe load, run_metrics)

    def __init__(self, cfg: GanTrainConfig) -> None:
        # Checked when the metric is built (before training starts): one sample gives the classifier no
        # training step (batch norm needs two), which train_classifier would refuse only after sampling.
        if cfg.samples is not None and cfg.samples < 2:
            raise ConfigError(f"gan-train trains its classifier on the samples, and {cfg.samples} gives it no "
                              "training step (batch norm needs two a batch); set samples >= 2, or leave it out "
                              "for as many as the training split's images", path="eval.gan-train.samples")
        self.cfg = cfg

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """``{"gan_train": ...}``: accuracy (%) on real test images of a classifier trained on model samples."""
        cfg = self.cfg
        num_classes = _need_labels(ctx, self.name)
        train_y = _labels(ctx, cfg.train_split, cfg.sample_batch_size)  # only its labels: no image decoded
        test_x, test_y = _real(ctx, cfg.test_split, cfg.sample_batch_size)
        labels = _sample_labels(train_y, cfg.samples, cfg.seed)
        missing = sorted(set(test_y.tolist()) - set(labels.tolist()))
        if missing:  # the classifier can never predict them: a ceiling on GAN-train, not a property of the model
            share = 100.0 * float(torch.isin(test_y, torch.tensor(missing)).float().mean())
            warnings.warn(f"gan-train: the {len(labels)} samples' labels leave out {len(missing)} of the test split's "
                          f"classes ({', '.join(map(str, missing[:5]))}{', ...' if len(missing) > 5 else ''}), so its "
                          f"classifier misses their {share:.1f}% of the test images; raise eval.gan-train.samples "
                          "(avade eval: --samples; none: as many as the training split's images)", UserWarning,
                          stacklevel=2)
        samples = _samples(ctx, labels, cfg.sample_batch_size, like=test_x)
        model = train_classifier(samples, labels, num_classes, cfg, ctx.device)
        return {"gan_train": 100.0 * accuracy(model, test_x, test_y, ctx.device)}
