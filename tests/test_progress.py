"""Progress of the long stages (src/dlcourse/progress.py): a bar on a terminal, lines in a log, on
stderr only, and each stage's last line saying what it produced."""

import functools
import re

from dlcourse import progress


def test_in_a_log_a_line_at_each_tenth_with_the_time_left(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_on_terminal", lambda: False)
    with progress.bar("train-linear@x", total=25, unit="step") as bar:
        for _ in range(25):
            bar.update()
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 10
    assert [int(re.search(r"(\d+) %", line).group(1)) for line in lines] == [12, 20, 32, 40, 52, 60, 72, 80, 92, 100]
    assert all(line.startswith("train-linear@x: ") and "elapsed" in line and "left" in line and "step/s" in line
               for line in lines)


def test_a_loop_of_epochs_writes_one_line_per_epoch_with_its_numbers(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_on_terminal", lambda: False)
    bar = progress.Bar("train-cnn@x", 200, "batch", "epoch", enabled=True)
    for epoch in (1, 2):
        for _ in range(100):
            bar.update()
        bar.epoch_done(epoch, 2, test_accuracy=0.5 * epoch)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("train-cnn@x:  50 % (100/200, ")
    assert lines[0].endswith("epoch 1/2, test_accuracy 0.5") and "batch/s" in lines[0]
    assert lines[1].startswith("train-cnn@x: 100 % (200/200, ") and "00:00 left" in lines[1]


def test_on_a_terminal_a_bar_with_its_rate_and_time_left(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_on_terminal", lambda: True)
    monkeypatch.setattr(progress, "tqdm", functools.partial(progress.tqdm, mininterval=0))  # every update drawn
    with progress.bar("fooling@x gradient", total=4, unit="step") as bar:
        for _ in range(4):
            bar.update(1, loss=0.25)
    err = capsys.readouterr().err
    assert "fooling@x gradient" in err and "4/4" in err and "step/s" in err and "<" in err  # elapsed<left


def test_a_disabled_bar_and_another_process_print_nothing(capsys, monkeypatch):
    for terminal in (True, False):
        monkeypatch.setattr(progress, "_on_terminal", lambda: terminal)
        with progress.bar("x", total=10, enabled=False) as bar:
            for _ in range(10):
                bar.update()
            bar.epoch_done(1, 1)
    assert capsys.readouterr() == ("", "")


def test_the_summary_is_one_line_on_stderr_with_the_seconds(capsys):
    progress.summary("train-cnn@mnist", "99.48 % test accuracy, 2 epochs")
    out, err = capsys.readouterr()
    assert out == "" and re.fullmatch(r"train-cnn@mnist: 99\.48 % test accuracy, 2 epochs, \d+ s\n", err)


def test_a_count_of_one_reads_singular():
    assert progress.counted(1, "epoch") == "1 epoch"
    assert progress.counted(2, "epoch") == "2 epochs"
    assert progress.counted(0, "epoch") == "0 epochs"
    assert progress.counted(1.0004, "epoch", ".3g") == "1 epoch"  # as the line shows it
    assert progress.counted(0.938, "epoch", ".3g") == "0.938 epochs"
    assert progress.counted(1, "generator step") == "1 generator step"
