"""Recipe -> :class:`GenerativeModel`, every component built through the registry."""

from __future__ import annotations

from typing import Any

from avade.errors import ConfigError
from avade.models.generative import GenerativeModel
from avade.models.preprocess import Preprocess
from avade.recipe.schema import ComponentRef, Recipe
from avade.registry import get_registry


def _build(kind: str, ref: ComponentRef | None, path: str, **context: Any) -> Any:
    if ref is None:
        return None
    registry = get_registry()
    info = registry.get(kind, ref.name)
    try:
        return registry.build(info, ref.config, **context)
    except ConfigError as exc:
        raise exc.located(prefix=path if not exc.path.startswith(path) else "") from None


def build_model(recipe: Recipe, data_shape: tuple[int, int, int], num_classes: int = 0) -> GenerativeModel:
    """Assemble the model a recipe describes for images of ``data_shape`` (C, H, W)."""
    model = recipe.model
    opts = model.options
    if opts.conditional and num_classes <= 0:
        raise ConfigError(f"model.conditional = true needs a labelled dataset; '{recipe.data.options.name}' "
                          "has no labels", path="model.conditional", source=recipe.source)
    classes = num_classes if opts.conditional else 0
    cond = classes or None
    shape = tuple(int(s) for s in data_shape)
    flow = _build("flow", model.flow, "model.flow", in_shape=shape)
    out_shape = tuple(getattr(flow, "out_shape", shape)) if flow is not None else shape
    if out_shape != shape:
        raise ConfigError(f"flow '{model.flow.name}' maps {shape} to {out_shape}; the feature map f must keep the "
                          "image's shape (use a full flow such as realnvp or glow)", path="model.flow.name",
                          source=recipe.source)
    encoder = _build("encoder", model.encoder, "model.encoder", in_shape=shape, num_classes=cond)
    stage_shapes = [tuple(s) for s in encoder.stage_shapes]
    posterior = _build("posterior", model.posterior, "model.posterior", stage_shapes=stage_shapes,
                       num_classes=cond)
    decoder = _build("decoder", model.decoder, "model.decoder", stage_shapes=stage_shapes, out_shape=shape,
                     num_classes=cond)
    discriminator = _build("discriminator", model.discriminator, "model.discriminator", in_shape=shape,
                           num_classes=cond)
    return GenerativeModel(
        variant=opts.variant,
        data_shape=shape,
        preprocess=Preprocess(opts.logit_alpha, logit=flow is not None),
        flow=flow,
        encoder=encoder,
        posterior=posterior,
        decoder=decoder,
        discriminator=discriminator,
        num_classes=classes,
        likelihood=opts.likelihood,
        sigma=opts.sigma,
        sigma_init=opts.sigma_init,
        temperature=opts.temperature,
    )
