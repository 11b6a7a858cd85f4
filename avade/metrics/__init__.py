"""Evaluation metrics (kind ``metric``): BPD, FID, KID, IS, PRD, PRDC, GAN-test and GAN-train.

A metric factory is ``Class(cfg)``; the object has ``name`` and ``compute(ctx) -> dict[str, float]``
where ``ctx`` follows :class:`avade.metrics.context.EvalContext`. Inception-based metrics load their
weights offline only (see :mod:`avade.metrics.features`). Nothing here imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from avade.registry import Registry


def register(registry: Registry) -> None:
    """Register the built-in metrics."""
    r = registry.register
    m = "avade.metrics"
    r("metric", "bpd", factory=f"{m}.bpd:BPD", config=f"{m}.configs:BPDConfig",
      summary="Bits per dimension of the real test data under the model (optionally importance-weighted).")
    r("metric", "fid", factory=f"{m}.fid:FID", config=f"{m}.configs:FIDConfig",
      summary="Fréchet Inception Distance of samples to real data (offline Inception weights, cached stats).")
    r("metric", "kid", factory=f"{m}.kid:KID", config=f"{m}.configs:KIDConfig",
      summary="Kernel Inception Distance: polynomial-kernel MMD² over random subsets (mean and std).")
    r("metric", "is", factory=f"{m}.inception_score:InceptionScore",
      config=f"{m}.configs:InceptionScoreConfig",
      summary="Inception Score of samples (needs Inception weights with the classifier head).")
    r("metric", "prd", factory=f"{m}.prd:PRD", config=f"{m}.configs:PRDConfig",
      summary="Precision/recall for distributions (Sajjadi et al. 2018): F_8, F_1/8, AUC and a PRD plot.")
    r("metric", "prdc", factory=f"{m}.prdc:PRDC", config=f"{m}.configs:PRDCConfig",
      summary="k-NN precision, recall, density and coverage (Kynkäänniemi et al. 2019, Naeem et al. 2020).")
    r("metric", "gan-test", factory=f"{m}.gan_test:GanTest", config=f"{m}.configs:GanTestConfig",
      summary="GAN-test (%): classifier trained on real data, accuracy on class-conditional samples.")
    r("metric", "gan-train", factory=f"{m}.gan_test:GanTrain", config=f"{m}.configs:GanTrainConfig",
      summary="GAN-train (%): classifier trained on class-conditional samples, accuracy on real test data.")
