"""Stage `check-params`: params.yaml checked against its schema, and every network it describes
built once on a blank batch, before any other stage runs. The networks are built on PyTorch's meta
device (shapes, no memory): one over checks.PARAMETER_BUDGET or ACTIVATION_BUDGET is refused naming
its entry, and the check never allocates what a size typo asks for (dlcourse.pipeline.checks).

Every stage depends on its output, which stays the same while params are valid: an edit of
params.yaml reruns this check (seconds), and a typo stops `dvc repro` here, before DVC removes the
outputs of the stage that reads the key.
"""

from pathlib import Path

from dlcourse import progress
from dlcourse.files import atomic_path
from dlcourse.pipeline import params
from dlcourse.pipeline.checks import check

VERDICT = Path("checks/params.ok")


def main() -> None:
    try:
        check(params.load())
    except ValueError as exc:  # ParamsError too: the message names the key
        raise SystemExit(str(exc)) from None
    with atomic_path(VERDICT) as tmp:
        tmp.write_text("params.yaml is valid: the schema of src/dlcourse/params.py, every network built\n")
    progress.summary("check-params", "params.yaml valid, every network built")


if __name__ == "__main__":
    main()
