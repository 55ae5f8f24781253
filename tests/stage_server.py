"""Stage processes for the test suite without their start-up: a server process imports torch,
MLflow, pandas and the rest once, and each `python stages/<script>.py ...` that DVC runs in a test
workspace becomes a fork of it, with the command's arguments, folder, environment and standard
streams. A stage's start-up is about 3.5 s of imports on this project's 2-core machines, and the
suite runs some 150 of them; forked, one starts in a few hundredths of a second.

How: the workspace's PATH starts with a folder whose `python` is a small client (`CLIENT`). For a
stage script it connects to the server's socket (DLCOURSE_STAGE_SERVER) and sends its arguments,
folder and environment, and its file descriptors 0-2; for anything else, or when no server answers,
it execs the real Python. The server forks a supervisor per request, which forks the stage (a
single-threaded process forking, as fork wants), sends the client the stage's pid, and then its
wait status. The client passes on SIGTERM, SIGINT and SIGHUP to the stage and ends as it ended,
with its exit code or by its signal; a supervisor whose client is gone kills the stage.

What differs from a plain process: the modules imported before the fork (never the project's own
`dlcourse`, which each workspace imports from its own `src/`), and the stage's process id, which
is not the id of the command DVC started. Tests that are about processes themselves (kill tests)
take plain ones: `Workspace.plain_processes()`. The real-data run in CI, too, runs plain processes.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import runpy
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

SOCKET_VARIABLE = "DLCOURSE_STAGE_SERVER"
HEADER = struct.Struct("!I")
PRELOAD = ("numpy", "pandas", "PIL.Image", "yaml", "ruamel.yaml", "filelock", "pydantic", "networkx",
           "torch", "torch.nn", "torchvision", "torch._dynamo", "torch.export", "torch.distributed",
           "scipy.linalg", "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg",
           "sqlalchemy", "alembic", "mlflow", "mlflow.pytorch", "mlflow.pyfunc", "mlflow.models",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store")

CLIENT = r'''#!{python} -IS
# The test suite's `python` (tests/stage_server.py): a stage script runs as a fork of the stage
# server; anything else, or when no server answers, runs in the real Python.
import os, re, signal, socket, struct, sys

REAL = {python!r}
args = sys.argv[1:]
address = os.environ.get({variable!r})


def plain():
    os.execv(REAL, [REAL, *args])


def open_fd(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


if not (address and args and re.fullmatch(r"stages/\w+\.py", args[0]) and all(map(open_fd, (0, 1, 2)))):
    plain()
server = socket.socket(socket.AF_UNIX)
try:
    server.connect(address)
except OSError:
    server.close()
    plain()
request = repr({{"argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(server, [struct.pack("!I", len(request))], [0, 1, 2])
server.sendall(request)
replies = server.makefile("rb")
pid = int(replies.readline())
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, lambda signum, frame: os.kill(pid, signum))
line = replies.readline()
status = int(line) if line.strip() else (128 + signal.SIGKILL) << 8
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
'''


def supervise(connection: socket.socket) -> dict:
    """In a supervisor process: read one request, fork its stage and report on it. Returns the
    request in the stage process only; the supervisor itself ends here."""
    import ast

    header, fds, _, _ = socket.recv_fds(connection, HEADER.size, 3)
    size = HEADER.unpack(header)[0]
    with connection.makefile("rb") as stream:
        body = stream.read(size)
    if len(body) != size:
        raise ConnectionError("the client hung up mid-request")
    request = ast.literal_eval(body.decode())
    pid = os.fork()
    if pid == 0:
        connection.close()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        return request
    for fd in fds:
        os.close(fd)
    try:
        connection.sendall(f"{pid}\n".encode())
        exited = os.pidfd_open(pid)
        ready, _, _ = select.select([exited, connection], [], [])
        if exited not in ready:  # the client is gone (killed): so goes its stage
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        connection.sendall(f"{status}\n".encode())
    except OSError:  # the client went away mid-way: its stage with it
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    finally:
        os._exit(0)


def serve(address: str) -> dict:
    """Import the heavy modules, then fork a supervisor per connection, until the process that
    started this server is gone. Returns only in a stage process, with its request."""
    for module in PRELOAD:
        importlib.import_module(module)
    assert "dlcourse" not in sys.modules, "the server must not import the project: each workspace has its own"
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped as they end
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address)
    listener.listen(64)
    listener.settimeout(1.0)
    Path(f"{address}.ready").touch()
    while os.getppid() == parent:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            return supervise(connection)
        connection.close()
    sys.exit(0)


def become_stage(request: dict) -> str:
    """Turn this fork into the process `python <argv>` would have started; the script's path."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = os.path.abspath(request["argv"][0])
    extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[:] = [os.path.dirname(script), *extra, *BASE_PATH]
    sys.argv = list(request["argv"])
    importlib.invalidate_caches()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return script


# sys.path as a plain `python` has it, without this file's folder (a script's own folder is first)
BASE_PATH = [entry for entry in sys.path[1:] if entry != str(Path(__file__).parent)]


class StageServer:
    """A server process of this test process's, and the folder holding its client `python`."""

    def __init__(self, env: dict[str, str]):
        self.folder = Path(tempfile.mkdtemp(prefix="stage-server-"))
        self.address = str(self.folder / "socket")
        client = self.folder / "bin" / "python"
        client.parent.mkdir()
        client.write_text(CLIENT.format(python=sys.executable, variable=SOCKET_VARIABLE))
        client.chmod(0o755)
        self.process = subprocess.Popen([sys.executable, __file__, self.address], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not Path(f"{self.address}.ready").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stage server did not start (exit code {self.process.poll()})")
            time.sleep(0.05)

    def env(self, env: dict[str, str]) -> dict[str, str]:
        """`env` with this server's `python` first on PATH."""
        return {**env, SOCKET_VARIABLE: self.address, "PATH": f"{self.folder / 'bin'}{os.pathsep}{env['PATH']}"}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


_shared: StageServer | bool | None = None
_lock = threading.Lock()


def shared(env: dict[str, str]) -> StageServer | None:
    """This process's server, started on first use with `env` (the variables that torch reads as
    it loads, OMP_NUM_THREADS and CUDA_VISIBLE_DEVICES, must be the workspaces'); None, with a
    warning, when it cannot start: stages then start as plain processes, only slower."""
    global _shared
    with _lock:
        if _shared is None:
            try:
                _shared = StageServer(env)
            except (OSError, RuntimeError) as exc:
                warnings.warn(f"stage processes start plain, without the stage server: {exc}", stacklevel=2)
                _shared = False
            else:
                atexit.register(_shared.stop)
        return _shared or None


if __name__ == "__main__":
    runpy.run_path(become_stage(serve(sys.argv[1])), run_name="__main__")
