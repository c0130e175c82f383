"""Fine-tuning core: early stopping restores the best copy, resume, determinism, AUC, grid."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from medtransfer.data.images import load_image
from medtransfer.data.synth.primitives import class_pattern, write_image
from medtransfer.data.transforms import Preprocessing
from medtransfer.errors import ConfigError, ProtocolError
from medtransfer.models.backbone import Backbone
from medtransfer.models.catalog import get_model_spec
from medtransfer.protocols import finetune as ft
from medtransfer.protocols.finetune import (
    build_model,
    finetune,
    make_optimisation,
    run_search,
    search_grid,
)
from medtransfer.protocols.finetune_config import FinetuneConfig
from medtransfer.protocols.finetune_data import (
    BatchOrder,
    FinetuneData,
    ImageSplit,
    augment_image,
    random_resized_crop_params,
)
from medtransfer.protocols.metrics import classification_metrics, metric_from_scores

SIZE = 16
STEPS = 25
EVERY = 5


def tiny_backbone(seed: int = 0) -> Backbone:
    """A conv + BatchNorm trunk with 8 features, built without touching the global RNG."""
    spec = dataclasses.replace(get_model_spec("random_r18"), name="tiny", feature_dim=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
    return Backbone(spec, trunk, weights_sha256="0" * 64, normalization="imagenet")


def _split(root: Path, name: str, per_class: int, seed: int) -> ImageSplit:
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for label in (0, 1):
        for k in range(per_class):
            # Non-square images so the crop and the shorter-side resize both do work.
            image = class_pattern(rng, 20, label, 2)[:, : SIZE + 2]
            path = root / name / f"{label}_{k}.png"
            write_image(image, path)
            paths.append(path)
            labels.append(label)
    return ImageSplit(paths, labels, load_image)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> FinetuneData:
    root = tmp_path_factory.mktemp("finetune-images")
    return FinetuneData(
        train=_split(root, "train", 10, 0),
        val=_split(root, "val", 4, 1),
        test=_split(root, "test", 4, 2),
        n_classes=2,
        eval_transform=lambda size: Preprocessing(size, resize="shorter"),
    )


def config(**changes: object) -> FinetuneConfig:
    base = FinetuneConfig(
        lr=0.05, steps=STEPS, batch_size=6, eval_every=EVERY, image_size=SIZE, patience=10
    )
    return dataclasses.replace(base, **changes)


def run(data: FinetuneData, cfg: FinetuneConfig, **kwargs: object) -> ft.FinetuneResult:
    return finetune(tiny_backbone(), data, cfg, progress=False, **kwargs)


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- early stopping


def scripted_validation(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> None:
    """Make the validation checks return ``values`` in order."""
    remaining = iter(values)
    monkeypatch.setattr(ft, "validation_metric", lambda *args: next(remaining))


def test_early_stopping_tests_a_copy_of_the_best_state(
    data: FinetuneData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checks at 5, 10, 15, 20, 25: best at 10, then three drops -> stop at 25 (patience 3).
    seen: dict[int, dict[str, Tensor]] = {}
    cfg = config(early_stopping=True, patience=3, steps=40)
    scripted_validation(monkeypatch, [50.0, 70.0, 60.0, 65.0, 40.0])
    result = run(data, cfg, on_step=lambda step, loss, model: seen.update({step: snapshot(model)}))

    assert (result.best_step, result.stopped_step, result.steps_run) == (10, 25, 25)
    assert result.best_val == 70.0 and result.tested == "best"
    assert result.val_curve == [(5, 50.0), (10, 70.0), (15, 60.0), (20, 65.0), (25, 40.0)]
    assert max(seen) == 25  # training ended at the stop
    assert same(result.state_dict, seen[10])
    assert not same(result.state_dict, seen[25])

    # restore_best=False: the original's defect, the last weights are tested.
    scripted_validation(monkeypatch, [50.0, 70.0, 60.0, 65.0, 40.0])
    last = run(data, dataclasses.replace(cfg, restore_best=False))
    assert last.tested == "last" and last.stopped_step == 25
    assert same(last.state_dict, seen[25])


def test_ties_count_as_improvements(data: FinetuneData, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_validation(monkeypatch, [60.0, 50.0, 60.0, 50.0, 50.0])
    result = run(data, config(early_stopping=True, patience=2, steps=40))
    assert result.best_step == 15  # the tie at 15 resets the counter and becomes the best
    assert result.stopped_step == result.steps_run == 25  # two drops after it


def test_without_early_stopping_trains_on_train_and_val(data: FinetuneData) -> None:
    result = run(data, config(steps=3))
    assert result.n_train == len(data.train) + len(data.val) and result.n_val == 0
    assert result.val_curve == [] and result.best_step is None and result.tested == "last"
    assert set(result.metrics) == {"accuracy", "balanced_accuracy", "auc"}


# --------------------------------------------------------------------------- resume, determinism


class Killed(RuntimeError):
    pass


def kill_at(step_to_die: int) -> ft.StepCallback:
    def callback(step: int, loss: float, model: nn.Module) -> None:
        if step == step_to_die:
            raise Killed(step)

    return callback


def test_a_killed_run_resumes_to_the_same_weights(data: FinetuneData, tmp_path: Path) -> None:
    cfg = config(early_stopping=True)
    whole = run(data, cfg, checkpoint_dir=tmp_path / "whole")

    with pytest.raises(Killed):
        run(data, cfg, checkpoint_dir=tmp_path / "killed", on_step=kill_at(13))
    resumed = run(data, cfg, checkpoint_dir=tmp_path / "killed")

    assert resumed.resumed_from == 10
    assert same(resumed.state_dict, whole.state_dict)
    assert resumed.val_curve == whole.val_curve and resumed.best_step == whole.best_step
    assert resumed.metrics == whole.metrics
    saved = torch.load(resumed.weights_path, weights_only=True)
    assert same(saved, resumed.state_dict)

    # A finished run is not trained again.
    again = run(data, cfg, checkpoint_dir=tmp_path / "killed", on_step=kill_at(1))
    assert again.resumed_from == STEPS and same(again.state_dict, whole.state_dict)


def test_resuming_with_other_settings_is_refused(data: FinetuneData, tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run(data, config(), checkpoint_dir=tmp_path, on_step=kill_at(6))
    with pytest.raises(ProtocolError, match="other settings"):
        run(data, config(lr=0.01), checkpoint_dir=tmp_path)


def test_same_seed_same_weights_other_seed_other_weights(data: FinetuneData) -> None:
    cfg = config(steps=12)
    state = torch.get_rng_state()
    first, second = run(data, cfg), run(data, cfg)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used
    assert same(first.state_dict, second.state_dict)
    assert not same(first.state_dict, run(data, config(steps=12, seed=1)).state_dict)


def test_batch_order_resumes_mid_epoch_and_augmentation_is_seeded() -> None:
    order = BatchOrder(n=10, batch_size=4, seed=3)
    assert order.batches_per_epoch == 3
    full = order.epoch_keys(1, first_step=4)
    assert order.epoch_keys(1, first_step=5) == full[1:]
    assert sorted(i for batch in full for i, _ in batch) == list(range(10))
    assert [len(b) for b in full] == [4, 4, 2]
    assert not torch.equal(order.permutation(0), order.permutation(1))

    rng = np.random.default_rng(0)
    from medtransfer.data.synth.primitives import to_uint8_image

    image = to_uint8_image(class_pattern(rng, 40, 1, 2)[:, :30])
    a, b = augment_image(image, SIZE, 7), augment_image(image, SIZE, 7)
    assert a.shape == (3, SIZE, SIZE) and torch.equal(a, b)
    assert not torch.equal(a, augment_image(image, SIZE, 8))
    top, left, h, w = random_resized_crop_params(30, 40, torch.Generator().manual_seed(0))
    assert 0 <= top <= 40 - h and 0 <= left <= 30 - w


# ------------------------------------------------------------------ metrics, schedule, grid


def test_auc_is_computed_from_probabilities_not_hard_predictions() -> None:
    labels = np.array([0, 0, 1, 1])
    positive = np.array([0.1, 0.3, 0.2, 0.45])  # argmax predicts 0 everywhere
    probs = np.stack([1 - positive, positive], axis=1)
    assert metric_from_scores(labels, probs, "auc") == pytest.approx(75.0)  # 3 of 4 pairs right
    metrics = classification_metrics(labels, probs, "auc")
    assert metrics["auc"] == pytest.approx(75.0)
    assert metrics["balanced_accuracy"] == pytest.approx(50.0)  # what the original reported
    assert metrics["accuracy"] == pytest.approx(50.0)


def test_auc_needs_a_binary_task(data: FinetuneData) -> None:
    three = dataclasses.replace(data, n_classes=3)
    with pytest.raises(ProtocolError, match="binary"):
        run(three, config(metric="auc"))
    with pytest.raises(ConfigError):
        FinetuneConfig(metric="f1")


def test_any_module_with_a_feature_dim_is_a_backbone() -> None:
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ProtocolError, match="feature_dim"):
        build_model(trunk, 2, seed=0)
    trunk.feature_dim = 4
    assert build_model(trunk, 2, seed=0)(torch.rand(1, 3, 8, 8)).shape == (1, 2)


def test_cosine_schedule_follows_the_closed_form() -> None:
    cfg = config(lr=0.01, steps=50)
    model = build_model(tiny_backbone(), 2, seed=0)
    parts = make_optimisation(model, cfg, torch.device("cpu"))
    optimizer, scheduler = parts["optimizer"], parts["scheduler"]
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-8)
    for t in range(cfg.steps + 1):
        expected = cfg.lr / 2 * (1 + math.cos(math.pi * t / cfg.steps))
        assert group["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
        optimizer.step()
        scheduler.step()


def test_search_grid_is_the_original_one() -> None:
    expected = [(0.1, 0.0), (0.1, 1e-5), (0.1, 1e-2), (1e-4, 0.0), (1e-4, 1e-2), (1e-4, 10.0)]
    grid = search_grid(2)
    assert len(grid) == 6
    for (lr, wd), (lr0, wd0) in zip(grid, expected, strict=True):
        assert lr == pytest.approx(lr0, rel=1e-12) and wd == pytest.approx(wd0, rel=1e-12)
    lrs = [lr for lr, _ in search_grid(3)[::4]]
    assert lrs == pytest.approx([1e-1, 10**-2.5, 1e-4], rel=1e-12)


def test_search_picks_the_first_strictly_better_point(
    data: FinetuneData, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = iter([50.0, 60.0, 60.0, 40.0, 70.0, 70.0])
    calls: list[tuple[FinetuneConfig, FinetuneData]] = []

    def fake(backbone: Backbone, d: FinetuneData, cfg: FinetuneConfig, **kw: object):
        calls.append((cfg, d))
        return SimpleNamespace(value=next(values))

    monkeypatch.setattr(ft, "finetune", fake)
    found = run_search(tiny_backbone, data, config(), progress=False)
    assert (found.lr, found.wd, found.best_val) == (1e-4, pytest.approx(1e-2), 70.0)
    assert [s[2] for s in found.scores] == [50.0, 60.0, 60.0, 40.0, 70.0, 70.0]
    for cfg, d in calls:  # full steps on train alone, scored on val
        assert not cfg.early_stopping and cfg.steps == STEPS
        assert d.training_split(cfg.early_stopping) == data.train and d.test == data.val


def test_search_runs_end_to_end(data: FinetuneData) -> None:
    found = run_search(tiny_backbone, data, config(steps=2), grid_size=1, progress=False)
    assert [(lr, wd) for lr, wd, _ in found.scores] == search_grid(1)
    assert (found.lr, found.wd) in search_grid(1)


def test_a_skipped_fp16_step_does_not_step_the_schedule() -> None:
    """An overflowed fp16 step is skipped by the loss scaler; the learning rate must not
    move on without it (the schedule follows the optimiser's real steps)."""
    model = nn.Linear(4, 2)
    config = FinetuneConfig(steps=10, precision="fp16")
    parts = ft.make_optimisation(model, config, torch.device("cpu"))
    images, labels = torch.ones(2, 4), torch.tensor([0, 1])
    ft._train_step(parts, images, labels, torch.device("cpu"), "fp16")
    assert parts["scheduler"].last_epoch == 1
    with torch.no_grad():
        model.weight.fill_(float("inf"))  # every gradient overflows from here on
    weight_before = model.weight.clone()
    ft._train_step(parts, images, labels, torch.device("cpu"), "fp16")
    assert parts["scheduler"].last_epoch == 1
    assert torch.equal(model.weight, weight_before)  # the optimiser step was skipped
