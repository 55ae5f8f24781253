"""The suite's stage server (stage_server.py) runs a stage script as a plain `python` would: the same
arguments, folder, environment, import path, standard streams and exit; signals to the command reach
the stage, and a stage whose command is killed outright dies with it."""

import os
import signal
import subprocess
import sys
import time

import pytest

import stage_server

PROBE = """import json, os, sys, time
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "marker": os.environ.get("PROBE_MARKER"),
                  "path0": sys.path[0], "pythonpath": sys.path[1], "file": __file__, "name": __name__,
                  "stdin": sys.stdin.read(), "dlcourse": "dlcourse" in sys.modules}))
print("to stderr", file=sys.stderr)
if sys.argv[1] == "sleep":
    open("started", "w").close()
    time.sleep(60)
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture(scope="module")
def server():
    """This test process's server (the one its workspaces use, when it has started already)."""
    served = stage_server.shared({**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert served is not None, "the stage server did not start"
    return served


@pytest.fixture
def project(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "probe.py").write_text(PROBE)
    return tmp_path


def run(env, project, *args):
    return subprocess.run(["python", "stages/probe.py", *args], cwd=project, env=env, input="from stdin",
                          capture_output=True, text=True, timeout=60)


def test_a_script_runs_as_in_a_plain_process(server, project):
    env = {**os.environ, "PROBE_MARKER": "m", "PYTHONPATH": str(project / "src"),
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    plain, forked = run(env, project, "a b", "3"), run(server.env(env), project, "a b", "3")
    assert forked.returncode == plain.returncode == 3
    assert forked.stdout == plain.stdout and forked.stderr == plain.stderr == "to stderr\n"
    assert '"argv": ["a b", "3"]' in forked.stdout and '"stdin": "from stdin"' in forked.stdout
    assert f'"pythonpath": "{project / "src"}"' in forked.stdout and '"dlcourse": false' in forked.stdout


def started(project, client: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not (project / "started").exists():
        assert client.poll() is None and time.monotonic() < deadline, client.communicate()
        time.sleep(0.02)


def stage_pids(project) -> list[int]:
    """The processes running the probe: the client's own, and the fork that runs the script."""
    pids = []
    for proc in os.listdir("/proc"):
        try:
            if proc.isdigit() and os.readlink(f"/proc/{proc}/cwd") == str(project):
                pids.append(int(proc))
        except OSError:
            continue
    return pids


def test_sigterm_to_the_command_ends_the_stage_by_it(server, project):
    client = subprocess.Popen(["python", "stages/probe.py", "sleep", "0"], cwd=project, env=server.env(dict(os.environ)),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started(project, client)
    assert len(stage_pids(project)) == 2  # the command, and the stage forked from the server
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == -signal.SIGTERM  # as a plain process ends by a SIGTERM it does not catch
    time.sleep(0.2)
    assert stage_pids(project) == []


def test_a_command_killed_outright_takes_its_stage_along(server, project):
    client = subprocess.Popen(["python", "stages/probe.py", "sleep", "0"], cwd=project, env=server.env(dict(os.environ)),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started(project, client)
    client.kill()
    assert client.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while stage_pids(project):
        assert time.monotonic() < deadline, "the stage outlived its command"
        time.sleep(0.05)


def test_other_commands_and_a_missing_server_run_the_real_python(server, project):
    version = subprocess.run(["python", "-c", "import sys; print(sys.executable)"], env=server.env(dict(os.environ)),
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == sys.executable
    env = {**server.env(dict(os.environ)), stage_server.SOCKET_VARIABLE: str(project / "no-socket")}
    result = run(env, project, "x", "0")
    assert result.returncode == 0 and '"argv": ["x", "0"]' in result.stdout
