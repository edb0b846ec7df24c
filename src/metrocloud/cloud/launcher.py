"""Starting cloud processes quickly: a fork server.

Every cloud process is a Python interpreter that first imports the same third-party
libraries (nats, cryptography, httpx, pydantic, psycopg, prometheus, FastAPI and uvicorn,
...): some 0.3-0.4 s of CPU each, eleven times per embedded cloud. The :class:`Launcher`
starts one helper process, the *zygote*, that imports those libraries once and then forks
a child for each cloud process. A child becomes what ``python -m MODULE ARGS`` would be:

- its own process id, its own environment (``OMP_NUM_THREADS`` included), its log file
  as standard output and error, ``/dev/null`` as standard input, the working folder and
  ``sys.argv`` of that command;
- it imports **every metrocloud module itself, after the fork**. The zygote imports no
  metrocloud module but this one, which imports the standard library only. So the legally
  relevant code a process runs, and the checksums it reports, come from its files exactly
  as before (:mod:`metrocloud.cloud.boot` activates the install root first);
- Python's ``random`` reseeds itself in a forked child, and OpenSSL does too.

The zygote has no threads, so forking it is safe. It reaps its children and reports each
exit. The supervisor holds a :class:`ForkedProcess`, which has the part of
:class:`subprocess.Popen` it uses: ``pid``, ``returncode``, ``poll``, ``wait``,
``send_signal``, ``terminate`` and ``kill``. Signals go to the child's process id directly,
so ``kill -9`` of a service is what it was. A child re-executes itself (``os.execv``, a
software switch) with the same process id, and the zygote still sees its exit.

The environment variable ``METROCLOUD_SPAWN=exec`` turns the fork server off; every
process is then started with :class:`subprocess.Popen` as before.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

SPAWN_ENV = "METROCLOUD_SPAWN"

PRELOAD = (
    "asyncio",
    "ssl",
    "sqlite3",
    "logging.handlers",
    "msgpack",
    "nats",
    "nats.aio.client",
    "nats.js",
    "nats.js.api",
    "cryptography.x509",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.ciphers.aead",
    "httpx",
    "pydantic",
    "psycopg",
    "prometheus_client",
    "psutil",
    "fastapi",
    "starlette.applications",
    "uvicorn",
    "rich.console",
    "setproctitle",
)
"""What the zygote imports before it forks: third-party libraries and the standard library
only. Nothing that starts a thread on import (numpy's BLAS does; OpenFHE's OpenMP may)."""

POLL_S = 0.05
"""How often the zygote looks for exited children while no request comes."""


# -- the zygote ---------------------------------------------------------------------------------


def _preload() -> None:
    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # an optional one missing costs only time
            importlib.import_module(name)
    if threading.active_count() != 1:  # forking a process with threads is not safe
        raise RuntimeError("a preloaded module started a thread")


def _child(request: Mapping[str, Any], control: socket.socket) -> None:
    """In the forked child: become ``python -m module args``; never returns."""
    code = 1
    try:
        control.close()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(null)
        _retitle(request["argv"])  # before the environment changes: it finds argv by it
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = [request["module"], *request["args"]]
        code = _run(request["module"])
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _retitle(argv: Sequence[str]) -> None:
    """Show the command this child stands for in ``ps`` (and to ``pkill -f``), not the
    zygote's."""
    try:
        import setproctitle
    except ImportError:  # only the title is lost
        return
    setproctitle.setproctitle(" ".join(argv))


def _run(module: str) -> int:
    """Run ``module`` as ``__main__`` as ``python -m`` does; the exit code."""
    import runpy

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code: int = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    return code


def _send(control: socket.socket, message: Mapping[str, Any]) -> None:
    control.sendall(json.dumps(message).encode() + b"\n")


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(control, {"op": "exited", "pid": pid, "returncode": _returncode(status)})


def _returncode(status: int) -> int:
    """As :class:`subprocess.Popen` has it: the exit code, or minus the signal."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def serve_zygote(fd: int) -> None:
    """The zygote's loop on the control socket ``fd`` (inherited from the launcher)."""
    _preload()
    control = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops it, not a Ctrl-C
    pending = b""
    while True:
        readable, _, _ = select.select([control], [], [], POLL_S)
        if readable:
            data = control.recv(65536)
            if not data:  # the launcher is gone: so is the reason to be here
                _reap(control)
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                try:
                    pid = os.fork()
                except OSError as exc:
                    _send(control, {"op": "failed", "id": request["id"], "error": str(exc)})
                    continue
                if pid == 0:
                    _child(request, control)
                _send(control, {"op": "spawned", "id": request["id"], "pid": pid})
        _reap(control)


# -- the launcher (in the supervisor) ------------------------------------------------------------


class ForkedProcess:
    """A process the zygote forked: what the supervisor uses of :class:`subprocess.Popen`."""

    def __init__(self, launcher: Launcher, pid: int, args: Sequence[str]) -> None:
        self.launcher = launcher
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self.exited = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.exited.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _exited(self, returncode: int) -> None:
        self.returncode = returncode
        self.exited.set()


class Launcher:
    """Starts ``python -m`` commands through the zygote (see the module docstring)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.control = ours
        self.lock = threading.Lock()
        self.next_id = 0
        self.waiting: dict[int, tuple[threading.Event, list[Any]]] = {}
        self.children: dict[int, ForkedProcess] = {}
        self.early_exits: dict[int, int] = {}
        code = (
            f"from metrocloud.cloud.launcher import serve_zygote; serve_zygote({theirs.fileno()})"
        )
        self.zygote = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None,
        )
        theirs.close()
        self.reader = threading.Thread(target=self._read, name="launcher", daemon=True)
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.zygote.poll() is None and self.reader.is_alive()

    def spawn(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        *,
        cwd: Path | None = None,
        timeout_s: float = 30.0,
    ) -> ForkedProcess:
        """Start ``argv`` (``[python, "-m", module, *args]``) with ``env``, output to ``log``,
        in ``cwd`` (this process's working folder by default)."""
        if len(argv) < 3 or argv[1] != "-m":
            raise ValueError(f"the launcher starts python -m commands only, not {argv!r}")
        with self.lock:
            self.next_id += 1
            request_id = self.next_id
            answer: tuple[threading.Event, list[Any]] = (threading.Event(), [])
            self.waiting[request_id] = answer
        request = {
            "op": "spawn",
            "id": request_id,
            "module": argv[2],
            "args": list(argv[3:]),
            "env": dict(env),
            "cwd": str(cwd or os.getcwd()),
            "log": str(log),
            "argv": list(argv),
        }
        with self.lock:
            self.control.sendall(json.dumps(request).encode() + b"\n")
        if not answer[0].wait(timeout_s):
            raise RuntimeError("the zygote did not answer a start request")
        reply = answer[1][0]
        if reply.get("op") != "spawned":
            raise OSError(f"the zygote could not fork: {reply.get('error')}")
        process = ForkedProcess(self, int(reply["pid"]), argv)
        with self.lock:
            self.children[process.pid] = process
            early = self.early_exits.pop(process.pid, None)
        if early is not None:  # it was done before its start was even answered
            process._exited(early)
        return process

    def _read(self) -> None:
        buffered = b""
        while True:
            try:
                data = self.control.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._orphaned()
                return
            buffered += data
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                self._dispatch(json.loads(line))

    def _dispatch(self, message: dict[str, Any]) -> None:
        with self.lock:
            if message["op"] == "exited":
                child = self.children.pop(int(message["pid"]), None)
                if child is None:
                    self.early_exits[int(message["pid"])] = int(message["returncode"])
            else:
                event, slot = self.waiting.pop(int(message["id"]))
                slot.append(message)
                event.set()
                return
        if child is not None:
            child._exited(int(message["returncode"]))

    def _orphaned(self) -> None:
        """The zygote is gone: its children can no longer be reaped through it. Wait for
        them by polling their process ids instead."""
        with self.lock:
            children = list(self.children.values())
            self.children.clear()
            for event, slot in self.waiting.values():
                slot.append({"op": "failed", "error": "the zygote exited"})
                event.set()
        for child in children:
            threading.Thread(target=_watch_orphan, args=(child,), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.control.shutdown(socket.SHUT_RDWR)
        self.control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.zygote.wait(timeout=10)
        if self.zygote.poll() is None:
            self.zygote.kill()
            self.zygote.wait()


def _watch_orphan(child: ForkedProcess) -> None:
    import time

    while True:
        try:
            os.kill(child.pid, 0)
        except ProcessLookupError:
            child._exited(-signal.SIGKILL if child.returncode is None else child.returncode)
            return
        time.sleep(0.2)


_LAUNCHER: Launcher | None = None
_LAUNCHER_LOCK = threading.Lock()


def launcher() -> Launcher | None:
    """This process's launcher, started at first use; None when ``METROCLOUD_SPAWN=exec``
    or where there is no fork."""
    global _LAUNCHER
    if os.environ.get(SPAWN_ENV, "fork") == "exec" or not hasattr(os, "fork"):
        return None
    with _LAUNCHER_LOCK:
        if _LAUNCHER is None or not _LAUNCHER.alive:
            _LAUNCHER = Launcher()
            atexit.register(_LAUNCHER.close)
        return _LAUNCHER


Process: TypeAlias = "ForkedProcess | subprocess.Popen[bytes]"
"""A started cloud process, forked or executed."""


def start_process(argv: Sequence[str], env: Mapping[str, str], log: Path) -> Process:
    """Start ``argv`` with ``env``, its output appended to ``log``: through the fork server
    for ``python -m`` commands of this interpreter, else with :class:`subprocess.Popen`."""
    found = launcher() if len(argv) > 2 and argv[0] == sys.executable and argv[1] == "-m" else None
    if found is not None:
        return found.spawn(argv, env, log)
    with open(log, "ab") as out:
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=dict(env))
