"""The resume tests' report of where two runs part: each differing checkpoint tensor named with its layer's class
and kind (conv: cuDNN, linear: cuBLAS), which `bash scripts/gpu_check.sh --only=determinism` reads back."""

from __future__ import annotations

from tiny_recipes import checkpoint_key_layer, parting_report, tiny_recipe

from avade.train import checkpoint as ckpt
from avade.train.trainer import Trainer


def test_every_checkpoint_tensor_of_the_tiny_recipe_is_named_with_its_layer(tmp_path) -> None:
    trainer = Trainer(tiny_recipe("train.steps=2", "train.warmup_steps=0"), tmp_path, device="cpu", progress=False)
    trainer.fit()
    saved = ckpt.read_checkpoint(tmp_path / "checkpoints" / "step_00000002")
    keys = [f"{part}/{key}" for part in ("model", "optimizer") for key in saved[part]]
    layers = {key: checkpoint_key_layer(trainer.model, trainer.optimizers, key) for key in keys}
    assert not [key for key, layer in layers.items() if layer == ("?", "?")], layers
    critic = [p for group in trainer.optimizers["discriminator"].param_groups for p in group["params"]]
    head = next(i for i, p in enumerate(critic) if p is trainer.model.discriminator.head.linear.weight)
    assert layers["model/discriminator.convs.0.weight"] == layers["model/discriminator.convs.1.layer.bias"] == (
        "Conv2d", "conv")  # (the second conv lies in its norm's wrapper)
    assert layers["model/discriminator.head.linear.bias"] == ("Linear", "linear")
    assert layers["optimizer/discriminator.0.exp_avg"] == ("Conv2d", "conv")
    assert layers[f"optimizer/discriminator.{head}.exp_avg"] == ("Linear", "linear")
    for unknown in ("optimizer/critic.0.exp_avg", "optimizer/discriminator.999.exp_avg", "model/nowhere.weight"):
        assert checkpoint_key_layer(trainer.model, trainer.optimizers, unknown)[1] in ("?", "other"), unknown

    report = parting_report(2, ["model/discriminator.convs.1.layer.weight", f"optimizer/discriminator.{head}.exp_avg"],
                            trainer.model, trainer.optimizers)
    assert report == (f"first at step 2 in [model/discriminator.convs.1.layer.weight (Conv2d), "
                      f"optimizer/discriminator.{head}.exp_avg (Linear)]; layers: conv+linear")
    assert parting_report(None, [], trainer.model, trainer.optimizers) == "first at step None in []; layers: none"


def test_a_weight_normed_convolutions_tensors_are_named_with_the_convolution() -> None:
    from torch import nn
    from torch.nn.utils.parametrizations import weight_norm

    model = nn.Module()
    model.body = nn.ModuleList([weight_norm(nn.Conv2d(2, 3, 3))])
    keys = [f"model/{key}" for key in model.state_dict()]
    assert "model/body.0.parametrizations.weight.original0" in keys, keys
    assert {checkpoint_key_layer(model, {}, key) for key in keys} == {("ParametrizedConv2d", "conv")}
