"""Figures: every figure is produced from the table alone, says what it lacks, and the
statistics it prints are Pearson's r and the weighted least-squares line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from medtransfer.results.collect import read_records
from medtransfer.results.plots import all_figures, fit_line, property_figure, radar
from medtransfer.results.table import long_table
from tests.results.conftest import Sweep, hand_record

MODELS = {"byol": 0.0, "swav": 1.0, "pirl": 2.0, "moco-v2": 3.0}


def _written(figure) -> None:
    assert figure.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in figure.svg.read_bytes()


def test_every_figure_of_the_sweep(sweep: Sweep, tmp_path: Path) -> None:
    table = long_table(read_records(sweep.roots.results)[0])
    figures = {f.name: f for f in all_figures(table, tmp_path)}
    assert set(figures) == {
        "fewshot_radar",
        "bars_shenzhencxr",
        "transfer_vs_attentive_diffusion",
        "transfer_vs_invariance",
        "transfer_vs_perceptual_distance",
    }
    for figure in figures.values():
        _written(figure)
    assert (
        "at least 3 datasets; the table has 1 (shenzhencxr 2-way)"
        in (figures["fewshot_radar"].notes[0])
    )
    assert "no 'saliency' records" in figures["transfer_vs_attentive_diffusion"].notes[0]
    assert figures["bars_shenzhencxr"].notes == []
    again = all_figures(table, tmp_path / "again")
    assert again[1].svg.read_bytes() == figures["bars_shenzhencxr"].svg.read_bytes()


@pytest.fixture
def analyses(tmp_path: Path):
    """Few-shot on three datasets for four models, with saliency, invariance and perceptual
    distance records whose values move with the accuracy (moco-v2 has no analyses)."""
    for dataset in ("shenzhencxr", "montgomerycxr", "bach"):
        for model, rank in MODELS.items():
            accuracy = 60.0 + 5 * rank + (dataset == "bach")
            hand_record(
                tmp_path,
                protocol="few-shot",
                model=model,
                dataset=dataset,
                params={"n_way": 2, "n_support": 20},
                metrics={"accuracy": accuracy, "accuracy_ci95": 0.5 + rank / 10},
            )
            if model == "moco-v2":
                continue
            hand_record(
                tmp_path,
                protocol="saliency",
                model=model,
                dataset=dataset,
                metrics={"attentive_diffusion": 40 + 2 * rank, "attentive_diffusion_ci": [0, 90]},
            )
            hand_record(
                tmp_path,
                protocol="invariance",
                model=model,
                dataset=dataset,
                params={"transform": "h_flip"},
                metrics={"similarity": 0.5 - 0.1 * rank},
            )
            hand_record(
                tmp_path,
                protocol="perceptual-distance",
                model=model,
                dataset=dataset,
                metrics={"lpips_alex": 0.9, "lpips_average": 0.8 - rank / 20},
            )
    return long_table(read_records(tmp_path)[0])


def test_radar_and_property_figures(analyses, tmp_path: Path) -> None:
    figure = radar(analyses, tmp_path)
    _written(figure)
    assert figure.notes == []
    for prop in ("attentive diffusion", "invariance", "perceptual distance"):
        figure = property_figure(analyses, prop, tmp_path)
        _written(figure)
        left = [n for n in figure.notes if "left out moco-v2 (a value on only one axis)" in n]
        assert len(left) == 3, figure.notes  # one per dataset: never silently dropped


def test_fit_line_is_pearson_and_weighted_least_squares() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 12)
    y = 2 * x + 1 + rng.normal(0, 0.1, 12)
    sigma = rng.uniform(0.05, 0.3, 12)
    fit = fit_line(x, y, sigma)
    r, p = stats.pearsonr(x, y)
    assert (fit.r, fit.p, fit.n) == pytest.approx((r, p, 12))
    slope, intercept = np.polyfit(x, y, 1, w=1 / sigma)
    assert (fit.slope, fit.intercept) == pytest.approx((slope, intercept))
    chi2 = np.sum(((y - slope * x - intercept) / sigma) ** 2) / 10
    assert fit.weighted and fit.reduced_chi2 == pytest.approx(chi2)
    unweighted = fit_line(x, y, np.full(12, np.nan))
    assert not unweighted.weighted
    assert (unweighted.slope, unweighted.intercept) == pytest.approx(tuple(np.polyfit(x, y, 1)))
    assert np.isnan(fit_line(x[:2], y[:2], sigma[:2]).r)  # two points: no r, no line
