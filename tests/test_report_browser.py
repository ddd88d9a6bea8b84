"""The reports opened from file:// in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), one browser
for the module: no console error, no request leaving the page (only the report's own file: URL and data: URLs), a
confusion-matrix cell opens exactly min(count, cap) thumbnails of images whose true and predicted labels are the
cell's, sortable tables sort, explanations show their overlays, a sweep's page links each job's report. Each test
writes a screenshot into its tmp dir. Skipped, with the reason, where Chromium or playwright is missing."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reportkit import HOSTILE_CLASSES, page_data, read_predictions, ten_thousand_images, write_eval_dir, \
    write_explanations

CHROMIUM = Path(os.environ.get("IMGCLS_CHROMIUM", "/usr/bin/chromium"))
# Skipped at collection, before the shared training runs are made for nothing.
if not CHROMIUM.is_file():
    pytest.skip(f"no headless Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests drive Chromium with playwright: "
                               "pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        # As root, Chromium runs only without its sandbox. No GPU, no /dev/shm (small in containers), and none of
        # its background connections: on a machine without a network they are refused or wait on DNS.
        quiet = ["--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, timeout=60_000,
                                              args=quiet + (["--no-sandbox"] if os.geteuid() == 0 else []))
        yield chromium
        chromium.close()


@dataclass
class Visit:
    page: Any
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.errors, f"console errors: {self.errors}"
        assert not self.dialogs, f"the page opened dialogs: {self.dialogs}"
        outside = [u for u in self.requests if not (u.startswith("data:") or u.split("#")[0] == self.url)]
        assert not outside, f"requests that leave the page: {outside[:5]}"


def open_page(browser, path: Path) -> Visit:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)  # every wait on the page fails the test rather than hanging it
    visit = Visit(page, path.resolve().as_uri())
    page.on("console", lambda m: visit.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: visit.errors.append(str(e)))
    page.on("request", lambda r: visit.requests.append(r.url))
    page.on("dialog", lambda d: (visit.dialogs.append(d.message), d.dismiss()))
    page.goto(visit.url)
    return visit


FIGURES = """els => els.map(e => {
  const img = e.querySelector('img:not(.overlay)');
  return {key: e.dataset.key, true: e.dataset.true, pred: e.dataset.pred, decoded: !!img && img.naturalWidth > 0,
          overlays: Array.from(e.querySelectorAll('img.overlay')).filter(o => o.naturalWidth > 0).length};
})"""


def click_cell(visit: Visit, t: int, p: int) -> list[dict]:
    visit.page.click(f'table.cm td.cell[data-t="{t}"][data-p="{p}"]')
    return visit.page.eval_on_selector_all("#cell-thumbs figure.thumb", FIGURES)


def check_cells(visit: Visit, folder: Path, cells: list[tuple[int, int]] | None = None) -> int:
    """Click cells (all of them by default): each shows min(count, cap) decoded thumbnails of its own images."""
    page = visit.page
    classes = page.eval_on_selector_all("table.cm th.colhead", "els => els.map(e => e.textContent)")
    cap = page_data(page.content())["cap"]
    predictions = read_predictions(folder)
    counts = cell_counts(visit)
    cells = cells or sorted(counts)
    shown = 0
    for t, p in cells:
        count = counts[(t, p)]
        figures = click_cell(visit, t, p)
        assert len(figures) == min(count, cap), (classes[t], classes[p], count, cap)
        for f in figures:
            row = predictions[f["key"]]
            assert (row["target"], row["label"]) == (classes[t], classes[p]) == (f["true"], f["pred"])
            assert f["decoded"], f"thumbnail of {f['key']} did not decode"
        shown += len(figures)
    return shown


def test_a_training_runs_report_in_a_browser(browser, trained_run, tmp_path):
    visit = open_page(browser, trained_run.run_dir / "report.html")
    assert check_cells(visit, trained_run.run_dir / "eval") == 120  # every test image: no cell holds more than 24
    header = visit.page.locator("table.sortable th", has_text="recall").first
    header.click()
    column = list(visit.page.locator("table.sortable th").all_text_contents()).index("recall")
    values = [float(v) for v in visit.page.eval_on_selector_all(
        "table.sortable tbody tr", f"rows => rows.map(r => r.cells[{column}].textContent)")]
    assert values == sorted(values)
    header.click()
    assert [float(v) for v in visit.page.eval_on_selector_all(
        "table.sortable tbody tr", f"rows => rows.map(r => r.cells[{column}].textContent)")] == sorted(values)[::-1]
    assert visit.page.locator("svg.chart").count() >= 4  # loss, accuracy, lr, calibration
    visit.page.screenshot(path=str(tmp_path / "train_report.png"), full_page=True)
    assert (tmp_path / "train_report.png").stat().st_size > 10_000
    visit.assert_clean()


def cell_counts(visit: Visit) -> dict[tuple[int, int], int]:
    cells = visit.page.eval_on_selector_all("table.cm td.cell", "els => els.map(e => [e.dataset.t, e.dataset.p, "
                                            "e.dataset.n])")
    return {(int(t), int(p)): int(n) for t, p, n in cells}


def test_ten_thousand_images_in_a_browser(browser, tmp_path):
    from imgcls_cli.report.page import write_run_report
    from imgcls_cli.report.thumbs import CELL_CAP, SplitImages

    images, labels, classes, _ = ten_thousand_images()
    folder = write_eval_dir(tmp_path / "eval", labels, classes)
    write_run_report(folder, SplitImages([str(i) for i in range(len(labels))], images))
    visit = open_page(browser, folder / "report.html")
    counts = cell_counts(visit)
    busiest = max(counts, key=counts.get)
    fewest = min((c for c, n in counts.items() if n), key=counts.get)
    assert counts[busiest] > CELL_CAP
    assert check_cells(visit, folder, [fewest, busiest]) == min(counts[fewest], CELL_CAP) + CELL_CAP
    assert f"{CELL_CAP} shown (at most {CELL_CAP} a cell)" in visit.page.inner_text("#cell-view")
    visit.page.screenshot(path=str(tmp_path / "ten_thousand.png"))
    visit.assert_clean()


def test_an_eval_report_with_hostile_names_and_explanations_in_a_browser(browser, tmp_path):
    images, _, _, _ = ten_thousand_images()
    labels = np.arange(100) % len(HOSTILE_CLASSES)  # 20 a class: no cell holds more than 24
    folder = write_eval_dir(tmp_path / "eval", labels, HOSTILE_CLASSES)
    write_explanations(folder, ["1", "2", "3"], images[[1, 2, 3]])
    from imgcls_cli.report.page import write_run_report
    from imgcls_cli.report.thumbs import SplitImages

    write_run_report(folder, SplitImages([str(i) for i in range(100)], images[:100]))
    visit = open_page(browser, folder / "report.html")
    assert check_cells(visit, folder) == 100  # every image, in its cell
    assert visit.page.locator("#explanation-grid figure img.overlay").count() == 3
    predictions = read_predictions(folder)
    for key in ("1", "2", "3"):
        t, p = (HOSTILE_CLASSES.index(predictions[key][c]) for c in ("target", "label"))
        figures = click_cell(visit, t, p)
        assert figures[0]["key"] == key and figures[0]["overlays"] == 1  # with its cell, first, with its overlay
    visit.page.screenshot(path=str(tmp_path / "eval_report.png"), full_page=True)
    visit.assert_clean()


def test_a_sweeps_report_links_each_jobs_report_in_a_browser(browser, sweep_run, tmp_path):
    sweep_dir = sweep_run.run_dir
    visit = open_page(browser, sweep_dir / "sweep_report.html")
    links = visit.page.eval_on_selector_all("table.sortable a", "els => els.map(a => a.href)")
    jobs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    assert sorted(links) == sorted((job / "report.html").as_uri() for job in jobs)
    assert visit.page.locator("svg.chart polyline").count() >= 2 * len(jobs)  # each job's curve in each chart
    visit.page.screenshot(path=str(tmp_path / "sweep_report.png"), full_page=True)
    visit.assert_clean()
    visit.page.click("table.sortable a")  # a job's own report opens from it
    visit.page.wait_for_selector("table.cm")
    assert visit.page.url == links[0]
    assert not visit.errors
