"""Which images and labels evaluation uses: random subsets of a split (not its first, possibly
class-sorted, images) and the data's class balance for a class-conditional model's samples."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_recipes import tiny_recipe

from avade.data.base import TensorImageDataset
from avade.errors import ConfigError
from avade.evaluate import RunContext, run_metrics
from avade.registry import get_registry
from avade.train.data import eval_batches, indexed_batches, subset_batches
from avade.train.trainer import Trainer


def _class_sorted(per_class: int = 30, classes: int = 3) -> TensorImageDataset:
    labels = torch.arange(classes).repeat_interleave(per_class)
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8).contiguous()
    return TensorImageDataset(images, labels, num_classes=classes)


class _Files(torch.utils.data.Dataset):
    """The same data without ``as_tensors`` (the DataLoader path of file-backed datasets)."""

    def __init__(self, data: TensorImageDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i]


def test_a_subset_of_a_class_sorted_split_covers_its_classes():
    data = _class_sorted()
    for dataset in (data, _Files(data)):
        labels = torch.cat([y for _, y in subset_batches(dataset, 30, batch_size=7)])
        assert len(labels) == 30 and set(labels.tolist()) == {0, 1, 2}
        again = torch.cat([y for _, y in subset_batches(dataset, 30, batch_size=30)])
        assert torch.equal(labels, again)  # fixed by the seed, whatever the batch size
        images = torch.cat([x for x, _ in subset_batches(dataset, 30, batch_size=7)])
        assert torch.equal(images[:, 0, 0, 0].long(), labels)  # images and labels stay paired


def test_all_or_more_than_all_is_the_whole_split_in_order():
    data = _class_sorted()
    for n in (None, 90, 500):
        labels = torch.cat([y for _, y in subset_batches(data, n, batch_size=16)])
        assert torch.equal(labels, data.labels)


def test_a_batch_limit_evaluates_a_random_subset():
    data = _class_sorted()
    labels = torch.cat([y for _, y in eval_batches(data, 10, limit=3)])
    assert len(labels) == 30 and set(labels.tolist()) == {0, 1, 2}
    full = torch.cat([y for _, y in eval_batches(data, 10)])
    assert torch.equal(full, data.labels)
    # Sharded, the processes' batches are the same subset between them.
    shards = [[i for i, _, _ in indexed_batches(data, 10, 3, shard=(r, 2))] for r in range(2)]
    assert shards == [[0, 2], [1]]
    by_shard = torch.cat([y for r in range(2) for _, _, y in indexed_batches(data, 10, 3, shard=(r, 2))])
    assert sorted(by_shard.tolist()) == sorted(labels.tolist())


def test_a_conditional_model_is_sampled_with_the_datas_class_balance(tmp_path, monkeypatch):
    trainer = Trainer(tiny_recipe("model.conditional=true", "data.num_classes=4"), tmp_path, progress=False)
    assert trainer.model.num_classes == 4
    ctx = RunContext(trainer.model, trainer.recipe, trainer.train_set, trainer.test_set, trainer.device,
                     tmp_path, tmp_path)
    given: list[torch.Tensor | None] = []
    sample = trainer.model.sample

    def spy(n, labels=None, **kwargs):
        given.append(labels)
        return sample(n, labels, **kwargs)

    monkeypatch.setattr(trainer.model, "sample", spy)
    assert sum(len(x) for x in ctx.sample_batches(10, batch_size=4)) == 10
    assert len(given) == 3 and all(g is not None for g in given)
    drawn = ctx.class_labels(4000)
    train = trainer.train_set.labels
    expected = torch.bincount(train, minlength=4).double() / len(train)
    torch.testing.assert_close(torch.bincount(drawn, minlength=4).double() / 4000, expected, atol=0.03, rtol=0)
    assert torch.equal(drawn, ctx.class_labels(4000))  # seeded


def test_class_conditional_metrics_refuse_an_unconditional_model(tmp_path):
    # gan-test / gan-train on an unconditional model used to score unconditional samples against the
    # labels asked for (chance accuracy, no error): refused at recipe load, before any metric runs, and
    # wherever labels are asked of such a model.
    with pytest.raises(ConfigError, match=r"eval.metrics\[1\]: metric 'gan-test' scores class-conditional"):
        tiny_recipe("data.num_classes=4", 'eval.metrics=["bpd", "gan-test"]')
    trainer = Trainer(tiny_recipe("data.num_classes=4"), tmp_path, progress=False)
    assert trainer.model.num_classes == 0 and trainer.train_set.num_classes == 4
    ctx = RunContext(trainer.model, trainer.recipe, trainer.train_set, trainer.test_set, trainer.device,
                     tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="metric 'gan-train' scores class-conditional samples"):
        run_metrics(ctx, ["bpd", "gan-train"], trainer.recipe)
    with pytest.raises(ConfigError, match="the model is not class-conditional"):
        next(ctx.sample_batches(2, labels=torch.zeros(2, dtype=torch.int64)))


def test_a_plugin_metric_built_by_a_function_is_checked_before_training(tmp_path, fresh_registry):
    class NeedsClasses:
        name = "needs-classes"
        needs_conditional = True

        def compute(self, ctx):
            raise AssertionError("must not run")

    def factory(cfg=None):  # a function factory: recipe load cannot see the attribute
        return NeedsClasses()

    get_registry().register("metric", "needs-classes", factory=factory, config=None)
    recipe = tiny_recipe("data.num_classes=4", 'eval.metrics=["bpd", "needs-classes"]')
    with pytest.raises(ConfigError, match="metric 'needs-classes' scores class-conditional samples"):
        Trainer(recipe, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_plugin_metric_reusing_a_builtin_config_class_is_checked_by_its_own_factory(fresh_registry) -> None:
    # (the built-in FIDConfig says needs_conditional = False: that is FID's factory's, not this plugin's)
    from avade.metrics.configs import FIDConfig

    class PerClassFID:
        name = "per-class-fid"
        needs_conditional = True

        def __init__(self, cfg: Any) -> None:
            self.cfg = cfg

    class PerClassConfig(FIDConfig):  # a subclass that adds nothing inherits the False as well
        pass

    for name, config in (("per-class-fid", FIDConfig), ("per-class-fid2", PerClassConfig)):
        get_registry().register("metric", name, factory=PerClassFID, config=config)
        with pytest.raises(ConfigError, match=f"metric '{name}' scores class-conditional samples"):
            tiny_recipe(f'eval.metrics=["bpd", "{name}"]')


def test_cached_real_features_are_keyed_by_how_files_are_decoded(monkeypatch) -> None:
    import avade.data.base
    from avade.evaluate import dataset_key

    key = dataset_key("image-folder", (3, 32, 32), {"folder": "photos"})
    assert key == dataset_key("image-folder", (3, 32, 32), {"folder": "photos"})
    assert key.startswith("image-folder/3x32x32/")
    assert key != dataset_key("image-folder", (3, 32, 32), {"folder": "other"})
    monkeypatch.setattr(avade.data.base, "DECODING_VERSION", avade.data.base.DECODING_VERSION + 1)
    assert key != dataset_key("image-folder", (3, 32, 32), {"folder": "photos"})  # e.g. EXIF now applied


def _file_backed_run(tmp_path, monkeypatch) -> tuple[Trainer, Any, RunContext, list[int]]:
    """A tiny run with ``data.num_workers = 2``, its test split behind a file-backed wrapper, the RunContext of
    it, and the ``num_workers`` of every DataLoader made from then on."""
    import avade.train.data

    trainer = Trainer(tiny_recipe("data.num_workers=2"), tmp_path, progress=False)
    files = _Files(trainer.test_set)
    workers: list[int] = []
    loader = avade.train.data.DataLoader
    monkeypatch.setattr(avade.train.data, "DataLoader",
                        lambda *a, **k: workers.append(k["num_workers"]) or loader(*a, **k))
    ctx = RunContext(trainer.model, trainer.recipe, trainer.train_set, files, trainer.device, tmp_path, tmp_path)
    return trainer, files, ctx, workers


def test_bpd_of_a_file_backed_split_reads_it_with_data_num_workers_and_gives_the_same_value(tmp_path, monkeypatch):
    # data.num_workers, settable for avade eval, was read by training alone: evaluation decoded every file in
    # the main process. With workers the batches (so the noise of each) are the same: bit-identical bits/dim.
    import attrs

    trainer, files, ctx, workers = _file_backed_run(tmp_path, monkeypatch)
    with_workers = ctx.bpd()
    trainer.test_set = files
    assert trainer.test_bpd() == with_workers["bpd"]
    assert workers == [2, 2]
    alone = attrs.evolve(trainer.recipe, data=attrs.evolve(trainer.recipe.data, options=attrs.evolve(
        trainer.recipe.data.options, num_workers=0)))
    ctx = RunContext(trainer.model, alone, trainer.train_set, files, trainer.device, tmp_path, tmp_path)
    assert ctx.bpd() == with_workers and workers[-1] == 0


def test_reference_images_of_a_file_backed_split_are_read_with_data_num_workers(tmp_path, monkeypatch):
    # The real images of FID/KID/PRDC reference features (``real_batches``: 50,000 of them, decoded from files)
    # were read in the main process whatever data.num_workers said; bits/dim's batches were read by the workers.
    # With workers the images are the same, in the same order.
    _, files, ctx, workers = _file_backed_run(tmp_path, monkeypatch)
    for n in (None, 10):
        got = list(ctx.real_batches("test", n, batch_size=4))
        alone = list(subset_batches(files, n, batch_size=4))
        assert len(got) == len(alone)
        for (x, y), (x0, y0) in zip(got, alone, strict=True):
            assert torch.equal(x, x0) and torch.equal(y, y0)
    assert workers == [2, 0, 2, 0]
