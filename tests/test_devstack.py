"""`make run`'s launcher: it refuses ports it cannot listen on before starting anything, and stops all it started."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_devstack(**env_vars: str) -> subprocess.CompletedProcess:
    # A Redis URL of its own: an attempt to start the stack would not start the embedded Redis server.
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0", **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "config.devstack"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_run_stops_with_a_message_and_a_failure_status_when_the_web_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_devstack(WEB_PORT=str(port), SIMULATOR_PORT=str(free_port()))
    assert result.returncode != 0
    assert f"Port {port} (WEB_PORT) is already in use" in result.stderr
    assert "WEB_PORT=8001 SIMULATOR_PORT=9101 make run" in result.stderr
    assert "is starting at" not in result.stdout


def test_make_run_names_a_taken_simulator_port_and_a_port_that_is_not_a_number():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_devstack(WEB_PORT="eighty", SIMULATOR_PORT=str(port))
    assert result.returncode != 0
    assert "WEB_PORT=eighty is not a port number." in result.stderr
    assert f"Port {port} (SIMULATOR_PORT) is already in use" in result.stderr
    assert "is starting at" not in result.stdout


def test_make_run_takes_the_ports_of_the_env_file_and_the_process_environment_over_them(tmp_path):
    # A copy of the launcher in a folder of its own, so that the .env it reads is this test's.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "devstack.py").write_text((BASE_DIR / "config" / "devstack.py").read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / ".env").write_text(f"WEB_PORT={port}\nSIMULATOR_PORT={free_port()}\n")
        env = {name: value for name, value in os.environ.items() if name not in ("WEB_PORT", "SIMULATOR_PORT")}
        env["PYTHONPATH"] = str(BASE_DIR)
        from_file = subprocess.run(
            [sys.executable, str(tmp_path / "config" / "devstack.py")],
            env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        overridden = subprocess.run(
            [sys.executable, str(tmp_path / "config" / "devstack.py")],
            env={**env, "REDIS_URL": "redis://127.0.0.1:1/0", "WEB_PORT": "eighty"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert from_file.returncode != 0
    assert f"Port {port} (WEB_PORT) is already in use" in from_file.stderr
    assert overridden.returncode != 0
    assert "WEB_PORT=eighty is not a port number." in overridden.stderr


def test_ctrl_c_stops_every_process_even_when_the_output_of_make_run_is_gone(tmp_path):
    # `make run | tee run.log`: Ctrl-C ends tee first, and honcho, writing to a closed pipe, stops nothing itself.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "devstack.py").write_text((BASE_DIR / "config" / "devstack.py").read_text())
    pid_file = tmp_path / "sleeper.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    (tmp_path / "Procfile").write_text(f'sleeper: {sys.executable} -c "{sleeper}"\n')
    env = {
        **os.environ,
        "PYTHONPATH": str(BASE_DIR),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "WEB_PORT": str(free_port()),
        "SIMULATOR_PORT": str(free_port()),
    }
    stack = subprocess.Popen(
        [sys.executable, str(tmp_path / "config" / "devstack.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # Ctrl-C reaches `make run` from a terminal: a test run started in the background ignores SIGINT, and the
        # stack would inherit that and never stop.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    sleeper_pid = None
    try:
        while not (pid_file.exists() and pid_file.read_text()):
            assert stack.poll() is None, stack.stdout.read().decode()
            time.sleep(0.1)
        sleeper_pid = int(pid_file.read_text())
        stack.stdout.close()
        os.killpg(stack.pid, signal.SIGINT)
        stack.wait(timeout=120)
        assert not psutil.pid_exists(sleeper_pid) or psutil.Process(sleeper_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        for pid in (sleeper_pid, stack.pid):
            if pid and psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_termination_signal_stops_every_process_the_stack_started_and_its_redis(tmp_path, stop_signal):
    # `kill PID`, a supervisor stopping it, or the terminal closing: the launcher alone gets the signal, and
    # honcho's processes (web, worker, beat, simulator, in sessions of their own) and the embedded Redis do not.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "devstack.py").write_text((BASE_DIR / "config" / "devstack.py").read_text())
    pid_file = tmp_path / "sleeper.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    (tmp_path / "Procfile").write_text(f'sleeper: {sys.executable} -c "{sleeper}"\n')
    env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}  # the embedded Redis starts
    env |= {
        "PYTHONPATH": str(BASE_DIR),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "WEB_PORT": str(free_port()),
        "SIMULATOR_PORT": str(free_port()),
    }
    stack = subprocess.Popen(
        [sys.executable, str(tmp_path / "config" / "devstack.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started = []
    try:
        while not (pid_file.exists() and pid_file.read_text()):
            assert stack.poll() is None
            time.sleep(0.1)
        started = psutil.Process(stack.pid).children(recursive=True)
        names = " ".join(" ".join(process.cmdline()) for process in started)
        assert "honcho" in names and "redis-server" in names and "sleeper.pid" in names, names

        stack.send_signal(stop_signal)
        stack.wait(timeout=120)

        running = [process for process in started if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]
        assert running == []
    finally:
        for process in [*started, psutil.Process(stack.pid)] if stack.poll() is None else started:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
