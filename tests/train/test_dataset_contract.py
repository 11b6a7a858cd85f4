"""A dataset that breaks the contract (float images, labels out of range) stops the run with one line
naming the dataset, at load or at the batch that shows it, instead of training on garbage or failing
with an IndexError inside an embedding."""

from __future__ import annotations

import attrs
import pytest
import torch
from tiny_recipes import tiny_dict

from avade.errors import DataError
from avade.recipe.load import recipe_from_dict
from avade.registry import get_registry
from avade.train.run import run_recipe


@attrs.define
class BadConfig:
    defect: str = "none"
    in_memory: bool = True


class BadData:
    def __init__(self, cfg: BadConfig, *, split: str) -> None:
        self.cfg = cfg
        self.shape, self.num_classes = (3, 8, 8), 2
        gen = torch.Generator().manual_seed(0)
        n = 0 if (cfg.defect == "empty-test" and split == "test") else 16
        self.images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen)
        self.labels = torch.arange(n) % 2
        if cfg.defect == "hidden-label":  # not among the items probed at load (first, middle, last)
            self.labels[3] = 7

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        return (x.float() / 255 if self.cfg.defect == "float" else x), int(self.labels[i])

    def as_tensors(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.images, self.labels) if self.cfg.in_memory else None


def recipe(**data: object):
    raw = tiny_dict("train.steps=8")
    raw["data"] = {"name": "bad-data", "batch_size": 4, "eval_batch_size": 8, **data}
    raw["model"]["conditional"] = True
    return recipe_from_dict(raw)


@pytest.mark.parametrize("in_memory", [True, False])
def test_float_images_are_refused_before_training(fresh_registry, tmp_path, in_memory):
    get_registry().register("dataset", "bad-data", factory=BadData, config=BadConfig)
    with pytest.raises(DataError, match=r"dataset 'bad-data'.*, train split: item 0 is torch.float32") as info:
        run_recipe(recipe(defect="float", in_memory=in_memory), tmp_path / "run", progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_label_out_of_range_is_named_at_load_or_at_its_batch(fresh_registry, tmp_path):
    get_registry().register("dataset", "bad-data", factory=BadData, config=BadConfig)
    with pytest.raises(DataError, match=r"train split: labels must be in 0..1 .*got values in \[0, 7\]"):
        run_recipe(recipe(defect="hidden-label"), tmp_path / "a", progress=False)
    # read item by item, only 3 items are probed at load: the batch holding label 7 stops the run
    with pytest.raises(DataError, match=r"an? (training|evaluation) batch of the dataset: labels must be in 0..1 "
                                        r"\(or -1 for an unlabeled image\), got values in \[\d, 7\]"):
        run_recipe(recipe(defect="hidden-label", in_memory=False), tmp_path / "b", progress=False)
    run_recipe(recipe(in_memory=False), tmp_path / "c", progress=False)  # the sound dataset trains


def test_an_empty_test_split_is_refused_before_training(fresh_registry, tmp_path):
    # (it used to surface only at the end of training, as an internal StopIteration in the sample grids)
    get_registry().register("dataset", "bad-data", factory=BadData, config=BadConfig)
    with pytest.raises(DataError, match=r"dataset 'bad-data'.*, test split: the test split is empty"):
        run_recipe(recipe(defect="empty-test"), tmp_path / "run", progress=False)


@attrs.define
class DeclaringConfig(BadConfig):
    @property
    def num_classes(self) -> int:  # what `recipe check` goes by; the data (BadData) have 2
        return 10


def test_a_declared_class_count_the_data_do_not_have_is_refused(fresh_registry, tmp_path):
    get_registry().register("dataset", "bad-data", factory=BadData, config=DeclaringConfig)
    with pytest.raises(DataError, match=r"train split: its config declares num_classes = 10, but the loaded data "
                                        r"have 2 classes"):
        run_recipe(recipe(), tmp_path / "run", progress=False)
