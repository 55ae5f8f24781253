"""The report: claims, figures and environment as Markdown and as self-contained HTML; and, end to
end, that `dvc repro` builds it and that `dvc plots show`, `dvc params diff` and `dvc metrics diff`
show every curve and every change."""

import base64
import hashlib
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from dlcourse.report.figures import plot_curves
from dlcourse.report.results import Results
from dlcourse.report.document import document, markdown_to_html, unlisted_figures, write_report
from dlcourse.report.environment import NOT_RECORDED, environment, recorded_run

CLAIMS = {
    "first-claim": {"claim": "Something holds.", "course": "Quelque chose est vrai", "measured": "42 % of a long story",
                    "summary": "42 % (bar: 40 %)", "values": {}, "holds": True},
    "second-claim": {"claim": "Something else holds.", "course": "Autre chose", "measured": "a | b, at length",
                     "summary": "a | b", "values": {}, "holds": False},
}


class Attributes(HTMLParser):
    """Every (tag, attribute, value) of an HTML page."""

    def __init__(self, page: str):
        super().__init__()
        self.found = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.found += [(tag, name, value) for name, value in attrs]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A tiny project: params.yaml, one stage's timing and run record, one report figure, one stage figure."""
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text("seed: 0\n")
    Path("metrics/timing").mkdir(parents=True)
    Path("metrics/timing/train-linear@one_epoch.json").write_text(json.dumps({"device": "cpu", "train_seconds": 1.0}))
    Path("tracking").mkdir()
    Path("tracking/train-linear@one_epoch.json").write_text(
        json.dumps({"stage": "train-linear@one_epoch", "run_id": "abc123", "experiment": "dl-course",
                    "seconds": 12.34, "startup_seconds": 5.0, "cpu": "CPU A, 2 CPUs"}))
    curve = pd.DataFrame({"step": [0, 1, 2], "test_accuracy": [0.1, 0.5, 0.9]})
    plot_curves({"run": curve}, "step", "test_accuracy", "a curve", Path("reports/figures/curve.png"), "step")
    plot_curves({"run": curve}, "step", "test_accuracy", "a stage's figure", Path("plots/stage/figure.png"), "step")
    return tmp_path


def build(stages=("train-linear@one_epoch", "evaluate@cnn/mnist")) -> str:
    env = environment(list(stages), Results(Path("metrics"), Path("plots")))
    section = "## Figures\n\n![curve](figures/curve.png)\n\n| a stage's |\n| --- |\n| ![](../plots/stage/figure.png) |\n"
    return document(CLAIMS, [section], env)


def table_rows(page: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)


def test_the_committed_page_links_its_images_where_they_lie(project):
    markdown = build()
    write_report(markdown, Path("reports"))
    page = Path("reports/report.html").read_text()
    sources = [value for tag, name, value in Attributes(page).found if tag == "img" and name == "src"]
    assert sources == ["figures/curve.png", "../plots/stage/figure.png"]
    assert all((Path("reports") / src).is_file() for src in sources) and "data:" not in page


def test_html_is_self_contained_with_every_image_embedded(project):
    page = markdown_to_html(build(), Path("reports"))  # the copy the report's MLflow run holds
    attributes = Attributes(page).found
    sources = [value for tag, name, value in attributes if tag == "img" and name == "src"]
    expected = [Path("reports/figures/curve.png").read_bytes(), Path("plots/stage/figure.png").read_bytes()]
    assert [base64.b64decode(src.removeprefix("data:image/png;base64,")) for src in sources] == expected
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    # links only within the page (the claims table's to its claim sections)
    assert not [(tag, value) for tag, name, value in attributes
                if name in {"src", "href"} and tag != "img" and not value.startswith("#")]
    assert "<link" not in page and "<script" not in page


def test_every_claim_appears_with_its_verdict_and_links_to_its_section(project):
    markdown = build()
    write_report(markdown, Path("reports"))
    page = Path("reports/report.html").read_text()
    assert "1 of 2 course claims hold" in markdown
    ids = {value for tag, name, value in Attributes(page).found if name == "id"}
    for claim_id, claim in CLAIMS.items():
        verdict = "holds" if claim["holds"] else "<strong>FAILS</strong>"
        [row] = [row for row in table_rows(page) if claim_id in row]
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
        assert len(cells) == 3  # the pipe in "a | b" stays inside its cell
        assert cells[0] == f'<a href="#{claim_id}">{claim_id}</a>' and claim_id in ids
        assert cells[1] == claim["summary"] and cells[2] == verdict
        # the section the link leads to holds the claim in full
        section = page[page.index(f'id="{claim_id}"'):]
        section = section[:section.index("<h", 1)]
        assert claim["claim"] in section and claim["course"] in section and claim["measured"] in section
    assert "✅" not in page and "❌" not in page
    assert markdown == Path("reports/report.md").read_text()


def test_environment_section_names_versions_commit_params_and_each_stage(project):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "empty"], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    markdown = build()
    environment_part = markdown[markdown.index("## Environment"):]
    rows = {cells[0]: cells[1:] for line in environment_part.splitlines() if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.split("|")[1:-1]]]}
    assert rows["params.yaml (sha256)"] == [f"`{hashlib.sha256(Path('params.yaml').read_bytes()).hexdigest()}`"]
    assert rows["torch"] == [torch.__version__] and rows["CUDA (torch build)"] == [torch.version.cuda or
                                                                                  "none: CPU-only build"]
    assert rows["git commit"] == [f"`{commit}`"]
    assert rows["MLflow experiment"] == ["`dl-course`"]
    assert rows["CPU (the stages' runs)"] == ["CPU A, 2 CPUs"]
    assert rows["`train-linear@one_epoch`"] == ["cpu", "12.3", "5.0", "`abc123`"]
    assert rows["`evaluate@cnn/mnist`"] == [NOT_RECORDED] * 4  # no timing, no run record
    assert rows["**all 1 timed stages**"] == ["", "12.3", "5.0", ""]
    assert '<h2 id="environment">Environment</h2>' in markdown_to_html(markdown, Path("reports"))


def stage_cpus_row(markdown: str) -> str:
    [row] = [line for line in markdown.splitlines() if line.startswith("| CPU (the stages' runs)")]
    return row.split("|")[2].strip()


def test_stages_timed_on_several_processors_are_counted_per_processor(project):
    for stage, cpu in [("train-linear@long", "CPU B, 4 CPUs"), ("evaluate@cnn/mnist", "CPU A, 2 CPUs"),
                       ("attack@cnn/mnist", None)]:  # a record from before processors were recorded
        Path(f"tracking/{stage}.json").parent.mkdir(parents=True, exist_ok=True)
        Path(f"tracking/{stage}.json").write_text(json.dumps(
            {"stage": stage, "run_id": "r", "seconds": 1.0, "startup_seconds": 1.0, **({"cpu": cpu} if cpu else {})}))
    assert stage_cpus_row(build(["train-linear@one_epoch", "train-linear@long", "evaluate@cnn/mnist",
                                 "attack@cnn/mnist"])) == (
        f"CPU A, 2 CPUs (2 stages); CPU B, 4 CPUs (1 stage); {NOT_RECORDED} (1 stage)")
    assert stage_cpus_row(build(["attack@cnn/mnist"])) == NOT_RECORDED


def environment_rows(markdown: str) -> dict[str, str]:
    return {cells[0]: cells[1] for line in markdown[markdown.index("## Environment"):].splitlines()
            if line.startswith("| ") for cells in [[cell.strip() for cell in line.split("|")[1:-1]]]}


def test_the_stages_versions_and_locks_are_shown_and_different_locks_are_said(project):
    Path("uv.lock").write_text("the checkout's lock\n")
    current = hashlib.sha256(b"the checkout's lock\n").hexdigest()
    versions = {"python": "3.11.7", "torch": "2.14.1", "numpy": "2.4.6"}
    for stage, env in [("train-linear@one_epoch", {**versions, "lock_sha256": current}),
                       ("train-linear@long", {**versions, "lock_sha256": current}),
                       ("evaluate@cnn/mnist", {**versions, "numpy": "2.3.5", "lock_sha256": "f" * 64,
                                               "cuda": "13.0", "cudnn": "92400"})]:
        Path(f"tracking/{stage}.json").parent.mkdir(parents=True, exist_ok=True)
        Path(f"tracking/{stage}.json").write_text(json.dumps(
            {"stage": stage, "run_id": "r", "seconds": 1.0, "startup_seconds": 1.0, "environment": env}))
    rows = environment_rows(build(["train-linear@one_epoch", "train-linear@long", "evaluate@cnn/mnist"]))
    assert rows["uv.lock (sha256)"] == f"`{current}`"
    assert rows["uv.lock (the stages' runs)"] == (
        f"**2 different locks**: `{current[:12]}` (this checkout's) (2 stages); `ffffffffffff` (not this checkout's) (1 stage)")
    assert rows["versions (the stages' runs)"] == ("Python 3.11.7, torch 2.14.1, numpy 2.4.6 (2 stages); "
                                                   "Python 3.11.7, torch 2.14.1, numpy 2.3.5, CUDA 13.0, cuDNN 92400 (1 stage)")
    rows = environment_rows(build(["train-linear@one_epoch", "train-linear@long"]))
    assert rows["uv.lock (the stages' runs)"] == f"`{current[:12]}` (this checkout's)"
    assert rows["versions (the stages' runs)"] == "Python 3.11.7, torch 2.14.1, numpy 2.4.6"
    Path("uv.lock").unlink()
    rows = environment_rows(build(["train-linear@one_epoch", "attack@cnn/mnist"]))  # no lock; no record
    assert rows["uv.lock (sha256)"] == NOT_RECORDED
    assert rows["uv.lock (the stages' runs)"] == f"`{current[:12]}` (not this checkout's)"


def test_missing_run_record_is_not_recorded_and_a_broken_one_is_named(project):
    assert recorded_run("score-gan") is None
    Path("tracking/score-gan.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tracking/score-gan\.json: not valid JSON"):
        recorded_run("score-gan")
    Path("tracking/score-gan.json").write_text(json.dumps({"stage": "score-gan"}))
    with pytest.raises(ValueError, match=r"tracking/score-gan\.json: holds no run_id"):
        recorded_run("score-gan")


def test_a_missing_image_stops_the_report_before_anything_is_written(project):
    markdown = build() + "\n![gone](../plots/stage/gone.png)\n"
    with pytest.raises(FileNotFoundError, match=r"plots/stage/gone\.png: image shown in the report is missing"):
        write_report(markdown, Path("reports"))
    assert not Path("reports/report.md").exists() and not Path("reports/report.html").exists()


def test_unlisted_figures_are_the_ones_no_image_shows(project):
    plot_curves({"run": pd.DataFrame({"x": [0, 1], "y": [0, 1]})}, "x", "y", "another", Path("plots/other/b.png"),
                "x")
    assert unlisted_figures(build(), Path("reports"), Path("plots")) == [Path("plots/other/b.png")]
    assert unlisted_figures(build(), Path("reports"), Path("reports/figures")) == []


@pytest.mark.slow
def test_repro_builds_the_report_and_dvc_shows_every_plot_and_every_change(workspace):
    ws, root = workspace, workspace.path

    # the report: every figure of the stages shown, linked in the committed HTML and embedded in the copy
    # its MLflow run holds; every other stage's run id
    reports = root / "reports"
    markdown, page = (reports / "report.md").read_text(), (reports / "report.html").read_text()
    assert unlisted_figures(markdown, reports, root / "plots") == []
    assert unlisted_figures(markdown, reports, reports / "figures") == []
    sources = [value for tag, name, value in Attributes(page).found if tag == "img" and name == "src"]
    assert len(sources) == markdown.count("![") and all((reports / s).is_file() for s in sources)
    from mlflow.tracking import MlflowClient

    run_id = json.loads((reports / "run.json").read_text())["run_id"]
    logged = Path(MlflowClient(f"sqlite:///{root / 'mlflow.db'}").download_artifacts(run_id, "report.html", str(ws.path.parent)))
    embedded = [value for tag, name, value in Attributes(logged.read_text()).found if tag == "img" and name == "src"]
    assert len(embedded) == len(sources) and all(s.startswith("data:image/png;base64,") for s in embedded)
    records = sorted((root / "tracking").rglob("*.json"))
    # every stage's but check-params' (it logs no run) and the report's own, which is not among its inputs
    assert len(records) == len(ws.first_run) - 2
    for record in records:
        assert json.loads(record.read_text())["run_id"] in markdown, record

    # dvc plots show: every declared plot has data, and every CSV a stage writes is drawn by some plot
    shown = json.loads(ws.run("dvc", "plots", "show", "--json"))
    assert not shown.get("errors"), shown["errors"]
    top_level = [definition for entry in yaml.safe_load((root / "dvc.yaml").read_text())["plots"]
                 for definition in entry.items()]
    assert {name for name, _ in top_level} <= set(shown["data"])
    for name, renders in shown["data"].items():
        assert renders[0]["content"]["data"]["values"], name
    drawn = set(shown["data"]) | {path for _, definition in top_level for path in definition["y"]}
    assert {p.relative_to(root).as_posix() for p in (root / "plots").rglob("*.csv")} <= drawn

    # rebuilt from the same inputs, the report is the same but for the commit it was built at (its
    # results were committed after the build)
    built_at, now = ws.run("git", "rev-parse", "HEAD~1").strip(), ws.run("git", "rev-parse", "HEAD").strip()
    before = {name: (reports / name).read_text() for name in ("report.md", "report.html", "claims.json")}
    assert ws.repro("--force", "--single-item", "report") == ["report"]
    for name, content in before.items():
        assert (reports / name).read_text() == content.replace(built_at, now), name

    # one params edit after the committed results: params diff names the key, metrics diff the changes,
    # and every claim's verdict is a metric that DVC shows
    def longer(params):
        params["train_linear"]["one_epoch"]["iterations"] = 20
        return params

    ws.edit_params(longer)
    assert ws.repro() == ["check-params", "train-linear@one_epoch", "evaluate@linear/one_epoch",
                          "attack@linear/one_epoch", "report"]
    params_diff = json.loads(ws.run("dvc", "params", "diff", "--json"))
    assert params_diff == {"params.yaml": {"train_linear.one_epoch.iterations": {"old": 10, "new": 20, "diff": 10}}}
    metrics_diff = json.loads(ws.run("dvc", "metrics", "diff", "--json"))
    assert metrics_diff["metrics/linear/one_epoch.json"]["iterations"] == {"old": 10, "new": 20, "diff": 10}
    claims = json.loads((reports / "claims.json").read_text())
    shown = json.loads(ws.run("dvc", "metrics", "show", "--json"))
    [workspace_metrics] = [revision["data"] for revision in shown.values()]
    verdicts = workspace_metrics["reports/verdicts.json"]["data"]
    assert verdicts == {"claims_held": sum(c["holds"] for c in claims.values()), "claims_total": len(claims),
                        **{c: v["holds"] for c, v in claims.items()}}
    assert "reports/claims.json" not in workspace_metrics  # its texts would make `dvc metrics diff` unreadable
