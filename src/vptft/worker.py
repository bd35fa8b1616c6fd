"""A warm process that runs the workflow's jobs without paying python + torch + timm imports each time.

A local `snakemake` run starts one worker (`python -m vptft worker`, from the Snakefile's `onstart`), which
imports the training stack once and then forks one child per job. A job's command stays
`python -m vptft <verb> ...`: that small client hands its arguments, working directory, environment, umask and
standard streams to the worker, forwards the signals it gets (SIGTERM: the engine checkpoints) to its child, and
exits as the child did. Where no worker is announced ($VPTFT_WORKER), none answers, or the job runs under SLURM
(another node, its own allocation), the client runs the verb itself: same code, same numbers.

The worker never computes (torch's thread pools and CUDA would not survive a fork); each child pins the
arithmetic as a fresh process does (vptft.reproducibility) under the environment its client sent.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import sys

ENV_VAR = "VPTFT_WORKER"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_HEADER = struct.Struct("!I")


def _address(name: str) -> str:
    return "\0" + name  # Linux's abstract namespace: no file to clean up, no path-length limit


def _send(conn: socket.socket, message: dict, fds=()) -> None:
    payload = json.dumps(message).encode()
    data = _HEADER.pack(len(payload)) + payload
    if fds:
        socket.send_fds(conn, [data], list(fds))
    else:
        conn.sendall(data)


def _receive(conn: socket.socket, with_fds: bool = False):
    """One message (and the descriptors sent with it); None when the peer has gone. Reads exactly its bytes: a
    fast job's status can arrive right behind its pid, and a larger read would swallow it."""
    fds: list[int] = []
    if with_fds:  # the descriptors come with the message's first bytes
        first, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        header = _read_exact(conn, _HEADER.size, first) if first else None
    else:
        header = _read_exact(conn, _HEADER.size)
    payload = None if header is None else _read_exact(conn, _HEADER.unpack(header)[0])
    message = None if payload is None else json.loads(payload)
    return (message, fds) if with_fds else message


def _read_exact(conn: socket.socket, n: int, data: bytes = b"") -> bytes | None:
    """Read until `data` holds `n` bytes; None if the peer closes first."""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            return None
        data += more
    return data


# ---- the client: what `python -m vptft` does first ----------------------------------------------------------


def _code() -> dict:
    """Which interpreter and which vptft a process runs: a job runs in the worker only where both are its own
    (a conda env of `--sdm conda`, or another checkout on PYTHONPATH, runs the job itself)."""
    import vptft

    return {"executable": os.path.realpath(sys.executable), "vptft": os.path.dirname(vptft.__file__)}


def delegate(argv: list[str]) -> int | None:
    """Run `vptft argv` in the announced worker and return its exit status; None: no worker, run it here."""
    name = os.environ.get(ENV_VAR)
    if not name or os.environ.get("SLURM_JOB_ID") or sys.platform != "linux":
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(_address(name))
    except OSError:
        return None
    umask = os.umask(0)
    os.umask(umask)
    request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask, "code": _code()}
    try:
        _send(conn, request, fds=(0, 1, 2))
        started = _receive(conn)
    except OSError:
        started = None
    if started is None or "pid" not in started:  # gone, or another Python / vptft than the job's: run it here
        return None
    child = started["pid"]

    def forward(signum, frame):
        try:
            os.killpg(child, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    finished = _receive(conn)
    if finished is None:
        print(f"vptft: the worker ended while job {child} ran", file=sys.stderr)
        return 1
    status = finished["status"]
    if status < 0:  # ended by a signal: end the same way, as the process itself would have
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


# ---- the worker ----------------------------------------------------------------------------------------------

WARM_MODULES = (  # what the verbs import (~5 s on the 2-core CI machine), imported once here
    "torch",
    "timm",
    "safetensors.torch",
    "tqdm",
    "pandas",
    "vptft.cli",
    "vptft.sweep",
    "vptft.pretrain",
    "vptft.splits",
    "vptft.fid",
    "vptft.report",
    "vptft.selection",
    "vptft.tasks.mini",
)


def _warm_up() -> None:
    import importlib

    # torch.optim imports torch._dynamo at the first optimiser step: import it here too
    for module in (*WARM_MODULES, "torch._dynamo"):
        importlib.import_module(module)


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the job's process (streams, directory, environment) and run its verb."""
    os.setsid()  # its own process group: the client's signals and a kill reach the job and what it starts
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    for signum in (*FORWARDED_SIGNALS, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    from vptft import reproducibility

    os.environ.update(reproducibility.PINNED_ENV)
    sys.argv = ["vptft", *request["argv"]]
    # end as the interpreter ends a script: SystemExit's code, a traceback and 1, death by SIGINT on Ctrl-C
    status = 0
    try:
        from vptft.cli import main

        main(request["argv"])
    except SystemExit as end:
        status = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
        if end.code is not None and not isinstance(end.code, int):
            print(end.code, file=sys.stderr)
    except KeyboardInterrupt:
        sys.stdout.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except Exception:  # noqa: BLE001 (any error of the job: its traceback, as a plain process prints it)
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _gone(conn: socket.socket) -> bool:
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _exit_status(wait_status: int) -> int:
    return -os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else os.WEXITSTATUS(wait_status)


def serve(name: str, parent: int | None = None) -> None:
    """Take jobs on the abstract socket `name` until told to stop (SIGTERM) or the parent process `parent`
    has gone and no job is running."""
    _warm_up()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_address(name))
    listener.listen(64)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through the pipe
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    running: dict[int, socket.socket] = {}  # child pid -> its client's connection
    print(f"[worker] ready on {name} (pid {os.getpid()})", flush=True)
    while not (stopping and not running) and not (parent and os.getppid() != parent and not running):
        readable, _, _ = select.select([listener, wake_read, *running.values()], [], [], 1.0)
        if wake_read in readable:
            os.read(wake_read, 4096)
        if listener in readable and not stopping:
            _accept(listener, running, (wake_read, wake_write))
        for pid, conn in list(running.items()):
            if conn in readable and _gone(conn):  # the client was killed: so is its job, as a plain process
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while running:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = running.pop(pid, None)
            if conn is not None:
                print(f"[worker] job {pid} ended: {_exit_status(wait_status)}", flush=True)
                try:
                    _send(conn, {"status": _exit_status(wait_status)})
                except OSError:
                    pass
                conn.close()
    listener.close()


def _accept(listener: socket.socket, running: dict, inherited_fds: tuple[int, ...]) -> None:
    conn, _ = listener.accept()
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    if uid != os.getuid():  # only this user's jobs
        conn.close()
        return
    request, fds = _receive(conn, with_fds=True)
    if request is None or len(fds) != 3 or request.get("code") != _code():
        if request is not None:
            _send(conn, {"refused": "another interpreter or vptft than the worker's"})
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for inherited in (listener, conn, *running.values()):
            inherited.close()
        for fd in inherited_fds:
            os.close(fd)
        _run_child(request, fds)
    for fd in fds:
        os.close(fd)
    running[pid] = conn
    print(f"[worker] job {pid}: vptft {request['argv'][0]} in {request['cwd']}", flush=True)
    try:
        _send(conn, {"pid": pid})
    except OSError:
        pass


# ---- started and stopped by the Snakefile ---------------------------------------------------------------------


def start(log_path):
    """Start a worker for this (local) snakemake run (a subprocess.Popen) and announce it to the jobs it starts;
    None off Linux."""
    import secrets
    import subprocess

    if sys.platform != "linux":
        return None
    name = f"vptft-worker-{os.getpid()}-{secrets.token_hex(6)}"
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "vptft", "worker", "--name", name, "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the run reaches the jobs, not the worker between them
        )
    os.environ[ENV_VAR] = name  # jobs not yet started inherit it; until it listens they run themselves
    return process


def stop(process) -> None:
    """Stop taking jobs; the worker exits once the jobs it runs have ended."""
    os.environ.pop(ENV_VAR, None)
    if process is not None and process.poll() is None:
        process.terminate()
