"""The generative model assembled from components: preprocessing, flow f, VAE, discriminator."""

from avade.models.build import build_model
from avade.models.generative import GenerativeModel

__all__ = ["GenerativeModel", "build_model"]
