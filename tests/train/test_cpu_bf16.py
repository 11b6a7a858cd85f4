"""train.precision = "bf16" on CPU: the networks run under bfloat16 autocast, the flows stay float32, the
step stays finite; a CPU without native bf16 is warned about."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console
from tiny_recipes import tiny_recipe

from avade.flows.base import Flow
from avade.train import device as device_module
from avade.train import trainer as trainer_module
from avade.train.trainer import Trainer


def _trainer(tmp_path, *overrides: str, console: Console | None = None) -> Trainer:
    return Trainer(tiny_recipe(*overrides), tmp_path / "run", progress=False, device="cpu",
                   console=console or Console(file=io.StringIO()))


def test_bf16_autocasts_the_networks_but_not_the_flows(tmp_path) -> None:
    trainer = _trainer(tmp_path, 'train.precision="bf16"')
    dtypes: dict[str, set[torch.dtype]] = {"encoder": set(), "flow": set(), "discriminator": set()}
    convs = {"encoder": trainer.model.encoder, "discriminator": trainer.model.discriminator}
    for part, module in convs.items():
        conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda _m, _i, out, part=part: dtypes[part].add(out.dtype))
    flows = [m for m in trainer.model.flow.modules() if isinstance(m, Flow)]
    flows[0].register_forward_hook(lambda _m, _i, out: dtypes["flow"].add(out[0].dtype))
    x, y = next(trainer.stream.batches(0))
    logs = trainer.train_step(x, y)
    assert logs["finite"] == 1.0
    assert dtypes["encoder"] == {torch.bfloat16}
    # the critic's losses in bf16; its gradient penalty (a double backward) in fp32, as on CUDA
    assert dtypes["discriminator"] == {torch.bfloat16, torch.float32}
    assert dtypes["flow"] == {torch.float32}


def test_fp32_stays_fp32(tmp_path) -> None:
    trainer = _trainer(tmp_path)
    seen: set[torch.dtype] = set()
    conv = next(m for m in trainer.model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    trainer.train_step(*next(trainer.stream.batches(0)))
    assert seen == {torch.float32}


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_without_native_bf16_is_warned_about(tmp_path, monkeypatch, native: bool) -> None:
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    out = io.StringIO()
    _trainer(tmp_path, 'train.precision="bf16"', console=Console(file=out, width=400))
    assert ("no native bfloat16" in out.getvalue()) == (not native), out.getvalue()


@pytest.mark.parametrize(("flags", "native"), [({}, False), ({"avx512_bf16": True}, True),
                                               ({"amx_bf16": True}, True)])
def test_native_bf16_means_the_bf16_instructions_not_just_avx512(monkeypatch, flags, native: bool) -> None:
    """oneDNN's bf16 check only asks for AVX-512 (BW, VL, DQ): a Skylake/Cascade Lake/Ice Lake server passes
    it yet emulates bf16; native bf16 is AVX512-BF16 or AMX-BF16."""
    caps = {"architecture": "x86_64", "avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True,
            "avx512_bf16": False, "amx_bf16": False, **flags}
    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: caps)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert device_module.cpu_has_native_bf16() is native


def test_densities_are_float32_under_bf16_autocast(tmp_path) -> None:
    """CPU autocast has no float32 list for exp/log/softplus (CUDA's has): the latent and decoder
    densities lift their bf16 parameters to float32 themselves, so the bound is not computed in bf16."""
    from avade.models.likelihood import discretized_logistic_log_prob, gaussian_log_prob
    from avade.posteriors.group import LatentGroup

    trainer = _trainer(tmp_path, 'train.precision="bf16"', "model.posterior.iaf_steps=1")
    group = next(m for m in trainer.model.modules() if isinstance(m, LatentGroup))
    d = torch.randn(2, group.merge.layer.out_channels, 2, 2)
    with trainer.autocast:
        params = [*group.prior_params(d), *group.posterior_params(d, torch.randn_like(d))[:2]]
        z, log_det = group.flow(params[2], group.posterior_params(d, d)[2])
        out = trainer.model.log_likelihood(*next(trainer.stream.batches(0))[:1], None, torch.Generator())
    assert {t.dtype for t in [*params, z, log_det, out["log_px"]]} == {torch.float32}
    mean = torch.randn(2, 3, 4, 4).bfloat16()
    log_sigma = (torch.randn(1, 3, 1, 1) * 0.1).bfloat16()
    target = torch.randn(2, 3, 4, 4)
    exact = gaussian_log_prob(target.double(), mean.double(), log_sigma.double())
    torch.testing.assert_close(gaussian_log_prob(target, mean, log_sigma).double(), exact, rtol=1e-6, atol=1e-4)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert discretized_logistic_log_prob(images, mean, log_sigma).dtype == torch.float32


@pytest.mark.parametrize(("capability", "native"), [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_gpus_before_ampere_have_no_native_bf16(monkeypatch, capability, native: bool) -> None:
    # V100 (7.0) and T4 (7.5) emulate bf16 autocast, slower than fp32; A100 (8.0) and H100/H200 (9.0) do not.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert device_module.cuda_has_native_bf16(torch.device("cuda", 0)) is native
