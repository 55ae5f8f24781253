"""The MLflow UI in a real browser: two runs of one training stage, with different learning rates,
compared in MLflow's Compare view; the registered model of that stage with a version per run, the
alias `champion` that the report gave the best classifier of each dataset, and a version's signature.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). A screenshot of the
last page shown goes to $TEST_ARTIFACTS (default: test-artifacts/ in the repository).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import (ElementClickInterceptedException, StaleElementReferenceException,
                                        TimeoutException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from dlcourse.pipeline import registry, store
from workspace import ROOT, Workspace, free_port, stop_group

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
STAGE = "train-cnn@cifar10-linear"
NEW_LR = 0.05
LR = "train_cnn.cifar10-linear.lr"  # the MLflow param: the key dvc.yaml declares, flattened
UI_WAIT_S = 60

# One worker for the module: its workspace and UI server, module fixtures, are then made once.
pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.xdist_group("mlflow-ui")]


@pytest.fixture(scope="module", autouse=True)
def chromium():
    if not (CHROMIUM and CHROMEDRIVER):
        reason = "needs chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs them")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def workspace(built, tmp_path_factory) -> Workspace:
    """A copy of the tiny workspace where `train-cnn@cifar10-linear` ran twice: with its lr, then with NEW_LR."""
    ws = built.copy_to(tmp_path_factory.mktemp("ui") / "repo")

    def new_lr(params):
        entry = params["train_cnn"]["cifar10-linear"]
        ws.learning_rates = [entry["lr"], NEW_LR]
        entry["lr"] = NEW_LR
        return params

    ws.edit_params(new_lr)
    assert ws.learning_rates[0] != NEW_LR, f"params.yaml already has lr {NEW_LR} for {STAGE}; the edit must change it"
    assert ws.repro(STAGE) == ["check-params", STAGE]
    return ws


@pytest.fixture(scope="module")
def stage_runs(workspace):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dl-course")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`dvc.stage` = '{STAGE}'")
    assert len(runs) == 2, f"expected two MLflow runs of {STAGE}, found {len(runs)}"
    assert sorted(float(run.data.params[LR]) for run in runs) == sorted(workspace.learning_rates)
    assert [run.info.run_name for run in runs] == [STAGE, STAGE]
    return runs



@pytest.fixture(scope="module")
def mlflow_ui(workspace, tmp_path_factory):
    """`mlflow ui` on the workspace's store, on a free loopback port; its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    env = {**workspace.env, "MLFLOW_DISABLE_TELEMETRY": "true",
           # the job runner (LLM evaluation jobs) only adds worker processes this test does not need
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).parent / "mlflow"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{workspace.path / 'mlflow.db'}",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            cwd=workspace.path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        problem = store.wait_until_healthy(url, 180, server)
        assert problem is None, f"mlflow ui {problem}:\n{log_path.read_text()}"
        yield url
    finally:
        stop_group(server)  # uvicorn runs in a child process of `mlflow ui`


@pytest.fixture
def screenshot_path(request) -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{request.node.name}.png"


@pytest.fixture
def browser(screenshot_path):
    """Headless Chromium; the page it shows last is saved to `screenshot_path`, whether the test passes or not."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1800"):
        options.add_argument(argument)
    # an explicit driver path: Selenium Manager never tries to download one
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.save_screenshot(str(screenshot_path))
        driver.quit()


class Page:
    """Explicit waits whose failures name what the UI never showed, and where the screenshot is."""

    def __init__(self, driver, screenshot_path: Path):
        self.driver = driver
        self.screenshot = screenshot_path

    def wait(self, condition, what: str):
        # The UI is React: it may re-render an element between finding it and reading it. A condition
        # that meets a stale element is polled again (conditions re-find their elements on each poll).
        try:
            return WebDriverWait(self.driver, UI_WAIT_S,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(condition)
        except TimeoutException:
            raise AssertionError(f"the MLflow UI did not show {what} within {UI_WAIT_S} s "
                                 f"(at {self.driver.current_url}); screenshot: {self.screenshot}") from None

    def click(self, by, selector: str, what: str) -> None:
        self.wait(EC.element_to_be_clickable((by, selector)), what).click()

    def click_past_dialogs(self, by, selector: str, what: str) -> None:
        """Click, closing first any dialog in the way (the registry's first visit shows one, news of its UI)."""
        def clicked(driver) -> bool:
            try:
                driver.find_element(by, selector).click()
                return True
            except ElementClickInterceptedException:
                for close in driver.find_elements(By.CSS_SELECTOR, "[role='dialog'] button[aria-label='Close']"):
                    close.click()
                return False

        self.wait(EC.element_to_be_clickable((by, selector)), what)
        self.wait(clicked, what)


def text(element) -> str:
    # textContent, not .text: rows scrolled out of the compare view's grids are in the DOM but not visible
    return element.get_attribute("textContent").strip()


def test_compare_two_learning_rates_in_the_ui(stage_runs, mlflow_ui, browser, screenshot_path):
    page = Page(browser, screenshot_path)
    see = f"screenshot: {screenshot_path}"
    by_id = {run.info.run_id: run for run in stage_runs}

    # The experiment, in the UI's "Model training" mode, which lists runs (the default mode shows traces)
    browser.get(mlflow_ui)
    page.click(By.XPATH, "//*[@role='button'][normalize-space()='Model training']", "the 'Model training' switch")
    page.click(By.LINK_TEXT, "dl-course", "a link to the experiment dl-course")

    # Both runs ticked in the runs table (its rows carry the run id), then Compare
    for run_id in by_id:
        page.click(By.CSS_SELECTOR, f"[row-id='{run_id}'] .ag-selection-checkbox", f"the checkbox of run {run_id}")
    for run_id in by_id:
        checkbox = browser.find_element(By.CSS_SELECTOR, f"[row-id='{run_id}'] input.ag-checkbox-input")
        assert checkbox.is_selected(), f"run {run_id} is not selected; {see}"
    page.click(By.CSS_SELECTOR, "[data-testid='runs-compare-button']", "the Compare button")

    page.wait(EC.url_contains("compare-runs"), "the compare page")
    assert all(run_id in browser.current_url for run_id in by_id), f"{browser.current_url}; {see}"

    # Run details: one column per run, in the order of the run ids in the header
    header = page.wait(EC.presence_of_all_elements_located(
        (By.XPATH, "//table[contains(@class, 'mlflow-compare-table')]//tr[th[normalize-space()='Run ID:']]/th/a")),
        "the run ids")
    columns = [text(link) for link in header]
    assert sorted(columns) == sorted(by_id), f"run ids shown: {columns}; {see}"
    names = browser.find_elements(By.XPATH, "//tr[th[normalize-space()='Run Name:']]/td")
    assert [text(name) for name in names] == [by_id[run_id].info.run_name for run_id in columns], see

    # Params: with "Show diff only", lr alone remains, with each run's value
    page.click(By.CSS_SELECTOR, "button[aria-label='Parameters - Show diff only']", "the params' diff switch")
    params_rows = (By.XPATH, "//button[@aria-label='Parameters - Show diff only']/following::table[1]//tr")
    page.wait(lambda driver: len(driver.find_elements(*params_rows)) == 1, "only the differing params")
    rows = browser.find_elements(*params_rows)
    assert [text(row.find_element(By.TAG_NAME, "th")) for row in rows] == [LR], see
    shown_lr = [text(cell) for cell in rows[0].find_elements(By.TAG_NAME, "td")]
    assert shown_lr == [by_id[run_id].data.params[LR] for run_id in columns], f"lr shown: {shown_lr}; {see}"

    # Metrics: a virtualized grid of names beside a grid of values, both unscrolled: a row's cells share its height
    name_cell = page.wait(EC.presence_of_element_located(
        (By.XPATH, "//div[@role='grid']//a[normalize-space()='test_accuracy']/..")), "the metric test_accuracy")
    values_grid = name_cell.find_element(By.XPATH, "./ancestor::div[@role='grid']/following::div[@role='grid'][1]")
    row_cells = [cell for cell in values_grid.find_elements(By.XPATH, "./div/div")
                 if cell.rect["y"] == name_cell.rect["y"]]
    shown_accuracy = [text(cell) for cell in sorted(row_cells, key=lambda cell: cell.rect["x"])]
    assert len(shown_accuracy) == 2, f"test_accuracy cells: {shown_accuracy}; {see}"
    for run_id, shown in zip(columns, shown_accuracy):
        # the UI rounds metrics to 3 decimals
        assert float(shown) == pytest.approx(by_id[run_id].data.metrics["test_accuracy"], abs=5e-4), \
            f"test_accuracy of run {run_id}: shown {shown}; {see}"


def version_row(name: str, version) -> tuple:
    """The row of a registered model's versions table that links to one version."""
    return By.XPATH, f"//div[@role='row'][.//a[@href='#/models/{name}/versions/{version}']]"


def row_text(name: str, version, shows):
    """A condition: the version's row is on the page and its text satisfies `shows` (found anew each poll)."""
    def condition(driver) -> bool:
        rows = driver.find_elements(*version_row(name, version))
        return bool(rows) and shows(text(rows[0]))
    return condition


def has_alias(name: str, version, expected: bool):
    """A condition: the version's row is on the page, with (or without) the champion alias."""
    def condition(driver) -> bool:
        rows = driver.find_elements(*version_row(name, version))
        badge = f"[role='status'][title='{registry.CHAMPION}']"
        return bool(rows) and bool(rows[0].find_elements(By.CSS_SELECTOR, badge)) == expected
    return condition


def test_registered_models_show_their_versions_the_champions_and_a_signature(stage_runs, workspace, mlflow_ui, browser,
                                                                            screenshot_path):
    from mlflow.tracking import MlflowClient

    page = Page(browser, screenshot_path)
    client = MlflowClient(f"sqlite:///{workspace.path / 'mlflow.db'}")
    name = registry.registered_name(STAGE)
    versions = {v.run_id: str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
    assert set(versions) == {run.info.run_id for run in stage_runs}  # a version per run of the stage
    champions = [client.get_model_version_by_alias(rm.name, registry.CHAMPION)
                 for rm in client.search_registered_models() if registry.CHAMPION in rm.aliases]
    assert sorted(v.tags["dataset"] for v in champions) == ["cifar10", "mnist"]

    # From the list of registered models to the stage's: one row per version, each linking to its page
    browser.get(f"{mlflow_ui}/#/models")
    page.click_past_dialogs(By.XPATH, f"//a[normalize-space()='{name}']", f"a link to the registered model {name}")
    for version in versions.values():
        page.wait(row_text(name, version, lambda shown: f"Version {version}" in shown),
                  f"the row 'Version {version}' of {name}")

    # Each champion's page, opened from the list: the alias on the version the report promoted, on no other
    for champion in champions:
        browser.get(f"{mlflow_ui}/#/models")
        page.click_past_dialogs(By.XPATH, f"//a[normalize-space()='{champion.name}']",
                                f"a link to the registered model {champion.name}")
        page.wait(has_alias(champion.name, champion.version, True),
                  f"the alias {registry.CHAMPION} on version {champion.version} of {champion.name}")
        for other in client.search_model_versions(f"name = '{champion.name}'"):
            if str(other.version) != str(champion.version):
                page.wait(has_alias(champion.name, other.version, False),
                          f"version {other.version} of {champion.name}, without the alias {registry.CHAMPION}")

    # A version's page: its signature, float images of MNIST's shape in, 10 probabilities out
    mnist = next(v for v in champions if v.tags["dataset"] == "mnist")
    browser.get(f"{mlflow_ui}/#/models/{mnist.name}/versions/{mnist.version}")
    for label, shape in (("Inputs (1)", "[-1,1,28,28]"), ("Outputs (1)", "[-1,10]")):
        page.click(By.XPATH, f"//div[@role='row'][normalize-space()='{label}']", f"the signature's {label}")
        page.wait(EC.presence_of_element_located(
            (By.XPATH, f"//*[normalize-space()='Tensor (dtype: float32, shape: {shape})']")), f"the tensor {shape}")
