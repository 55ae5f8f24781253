"""Stage `report`: every course claim beside its measured value, the figures, and the environment.

Writes reports/claims.json (one entry per claim id, `holds` computed from measured numbers: a DVC
metric), reports/report.md with its own figures in reports/figures/, and reports/report.html: the
same document as a web page, its images linked from the checkout. The MLflow run holds a self-contained
copy, every image embedded (open it anywhere). Its own MLflow run id goes to reports/run.json, outside
`tracking/`, which it reads.
"""

import sys

from dlcourse import progress
from dlcourse.files import write_json
from dlcourse.pipeline.layout import PLOTS, REPORTS, VERDICTS
from dlcourse.pipeline.stage import stage
from dlcourse.report.champions import promote
from dlcourse.report.claims import evaluate_claims, supported_claims
from dlcourse.report.document import document, markdown_to_html, unlisted_figures, write_report
from dlcourse.report.environment import environment, pipeline_stages
from dlcourse.report.results import Results, leftover_warning
from dlcourse.report.sections import (cnn_section, draw_figures, evaluation_section, gan_section, linear_section,
                                      other_figures_section, robust_training_section, robustness_section)


def main() -> None:
    with stage("report", record=REPORTS / "run.json") as job:
        run = job.run
        results = Results()
        leftovers = results.leftovers()  # outputs of removed entries: neither judged nor shown
        warning = leftover_warning(leftovers)
        if warning:
            print(warning, file=sys.stderr)
        claims = evaluate_claims(results)
        draw_figures(results)
        sections = [linear_section(results), cnn_section(results), evaluation_section(results),
                    robustness_section(results), robust_training_section(results), gan_section(results)]
        sections = [section for section in sections if section]
        unlisted = [path for path in unlisted_figures("\n".join(sections), REPORTS, PLOTS) if path not in leftovers]
        if unlisted:
            sections.append(other_figures_section(unlisted))
        stages = [name for name in pipeline_stages() if name != "report"]
        markdown = document(claims, sections, environment(stages, results))

        write_json(REPORTS / "claims.json", claims, sort_keys=False)  # in the course's order
        held = sum(claim["holds"] for claim in claims.values())
        # the DVC metric: verdicts only, so that `dvc metrics diff` compares them (claims.json's texts would not fit)
        write_json(VERDICTS, {"claims_held": held, "claims_total": len(claims),
                              **{claim_id: claim["holds"] for claim_id, claim in claims.items()}}, sort_keys=False)
        write_report(markdown, REPORTS)
        run.log_metrics({"claims_held": held, "claims_total": len(claims)})
        for path in [REPORTS / "claims.json", REPORTS / "report.md", *sorted((REPORTS / "figures").glob("*.png"))]:
            run.log_artifact(path)
        run.log_text(markdown_to_html(markdown, REPORTS), "report.html")  # the page in one file, every image inside
        champions = promote(results, supported_claims(claims))
        run.set_tags({f"champion.{dataset}": model for dataset, model in champions.items()})
    progress.summary(job.name, f"{held} of {len(claims)} claims hold: {REPORTS / 'report.md'}, "
                               f"{REPORTS / 'report.html'}")


if __name__ == "__main__":
    main()
