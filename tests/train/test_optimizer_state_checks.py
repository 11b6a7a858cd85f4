"""optimizer_from_tensors: what a checkpoint's optimizer file must hold to load (each parameter's state, by
index, with the fields of its kind and the parameter's shape), checked on a bare optimizer in milliseconds."""

from __future__ import annotations

import pytest
import torch

from avade.train.checkpoint import optimizer_from_tensors, optimizer_to_tensors


def _stepped(kind: type[torch.optim.Optimizer], **options: object) -> tuple[list[torch.nn.Parameter],
                                                                            torch.optim.Optimizer]:
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    opt = kind(params, lr=0.01, **options)
    sum(p.square().sum() for p in params).backward()
    opt.step()
    return params, opt


@pytest.mark.parametrize("kind, options", [(torch.optim.Adam, {}), (torch.optim.Adam, {"amsgrad": True}),
                                           (torch.optim.Adamax, {})], ids=["adam", "amsgrad", "adamax"])
def test_a_saved_state_loads_back(kind: type[torch.optim.Optimizer], options: dict[str, object]) -> None:
    _, opt = _stepped(kind, **options)
    tensors, meta = optimizer_to_tensors("g", opt)
    params = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))]
    other = kind(params, lr=0.5)
    optimizer_from_tensors("g", other, tensors, meta)
    for i in range(2):
        for field, value in opt.state_dict()["state"][i].items():
            assert torch.equal(other.state_dict()["state"][i][field], value), field


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.Adamax])
def test_a_state_missing_a_field_is_refused(kind: type[torch.optim.Optimizer]) -> None:
    _, opt = _stepped(kind)
    tensors, meta = optimizer_to_tensors("g", opt)
    del tensors["g.1.exp_avg"]
    with pytest.raises(ValueError, match=r"its state of parameter 1 has the fields \['exp_\w+', 'step'\].*"
                                         r"\(e.g. 'exp_avg' differs\)"):
        optimizer_from_tensors("g", _stepped(kind)[1], tensors, meta)


def test_state_for_a_parameter_past_the_last_is_refused() -> None:
    _, opt = _stepped(torch.optim.Adam)
    tensors, meta = optimizer_to_tensors("g", opt)
    tensors.update({f"g.2.{field}": tensors[f"g.1.{field}"] for field in ("step", "exp_avg", "exp_avg_sq")})
    with pytest.raises(ValueError, match="it has state for parameter 2, the optimizer 2 parameters"):
        optimizer_from_tensors("g", _stepped(torch.optim.Adam)[1], tensors, meta)


def test_a_vector_parameter_s_state_of_another_length_is_refused() -> None:
    _, opt = _stepped(torch.optim.Adam)
    tensors, meta = optimizer_to_tensors("g", opt)
    tensors["g.1.exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"its exp_avg of parameter 1 has shape \(5,\), the parameter \(4,\)"):
        optimizer_from_tensors("g", _stepped(torch.optim.Adam)[1], tensors, meta)
