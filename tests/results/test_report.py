"""The HTML report: self-contained, and checked in a real headless browser (Debian's
Chromium driven by Playwright; no browser download). Without a browser the browser test
fails under CI=true and is skipped, by name, elsewhere."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from medtransfer.results.collect import newest_per_config, read_records
from medtransfer.results.table import long_table
from tests.results.conftest import SWEEP_MODELS, Sweep


@pytest.fixture(scope="module")
def report(sweep: Sweep, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    status, text = sweep.cli("report", "--out", str(out), "--note", "synthetic data")
    assert status == 0 and text.strip() == f"report: {out}"
    return out


def test_report_is_self_contained_and_warns(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    images = re.findall(r'<img class="figure"[^>]*src="([^"]+)"', html)
    assert len(images) == 5 and all(i.startswith("data:image/svg+xml;base64,") for i in images)
    assert "Note from whoever made this report: synthetic data" in html
    assert "rests on few images" in html and "episode resampling only" in html
    assert "One seed per run (knn, linear)" in html


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_in_a_real_browser(report: Path, sweep: Sweep, tmp_path: Path) -> None:
    executable = _browser()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        missing = "the chromium package" if executable is None else "playwright"
        message = f"browser test of the report needs {missing} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    records = newest_per_config(read_records(sweep.roots.results)[0])
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            figures = page.evaluate(
                "Array.from(document.querySelectorAll('img.figure')).map("
                "i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            assert len(figures) == 5
            assert all(done and width > 0 and height > 0 for done, width, height in figures)

            rows = page.locator("#long-table tbody tr")
            assert rows.count() == len(long_table(records))
            for protocol in ("few-shot", "linear", "knn"):
                ranking = page.locator(f"table[id^='rank-{protocol}-'] tbody tr")
                names = sorted(ranking.locator("td:nth-child(2)").all_inner_texts())
                assert names == sorted(SWEEP_MODELS)
            assert page.locator("ul.verdicts li").count() == 9

            value = page.locator("#long-table th", has_text="value").first
            value.click()
            first = float(page.locator("#long-table tbody tr td:nth-child(6)").first.inner_text())
            assert first == min(long_table(records)["value"].round(2))

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("MEDTRANSFER_SCREENSHOT_DIR")
            if keep:
                shutil.copy(shot, Path(keep) / "report.png")
        finally:
            browser.close()
    assert problems == []
