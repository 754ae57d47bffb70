"""Start the processes of a local stack (Celery workers, the operator simulator) for tests and benchmarks.

No Django import: callers run these before or beside Django setup. Each process starts in its own session,
so its whole group (a prefork worker's pool included) can be signalled at once with os.killpg.
"""

import socket
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(argv: list[str], *, env: dict[str, str], log: Path, append: bool = False) -> subprocess.Popen:
    """Start `argv` from the repository root in a new session, its stdout and stderr going to `log`."""
    with open(log, "a" if append else "w") as output:  # the child keeps its own descriptor
        return subprocess.Popen(  # noqa: S603 - argv is built here, never from user input
            argv,
            cwd=BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_celery_worker(
    name: str,
    *,
    queues: list[str],
    env: dict[str, str],
    log: Path,
    pool: str = "solo",
    concurrency: int | None = None,
    profile_to: Path | None = None,
    append: bool = False,
) -> subprocess.Popen:
    """Start a `celery worker` named `name@host` consuming `queues`; with `profile_to`, run it under cProfile.

    Gossip, mingle and heartbeats are off: these workers never coordinate, and they start faster without.
    """
    profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    argv = [sys.executable, *profiler, "-m", "celery", "-A", "config", "worker", "-Q", ",".join(queues)]
    argv += ["-n", f"{name}@%h", "-P", pool]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    argv += ["--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return spawn(argv, env=env, log=log, append=append)


def start_simulator(*, config: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start the operator simulator on 127.0.0.1:`port` with the operators described in the JSON file `config`."""
    argv = [sys.executable, "-m", "operators.simulator", "--config", str(config), "--port", str(port)]
    return spawn(argv, env=env, log=log)
