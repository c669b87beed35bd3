"""Resources under load, each in a fresh interpreter running the short
form of a script under ``bench/`` (the long forms are the scripts
themselves), so that descriptors, threads, memory and child processes are
measured without the rest of the test session: running out of
descriptors, leaks after mixed connections, forked children bounded and
reaped, and a mixed-load soak. These take seconds to tens of seconds: they
carry the ``slow`` marker (``pytest -m 'not slow'`` leaves them out)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

pytestmark = pytest.mark.slow


def run_script(name, *args, timeout=120):
    """Run bench/<name> in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{name} printed nothing; rc={proc.returncode}\nstderr:\n{proc.stderr}"
    try:
        result = json.loads(lines[-1])
    except ValueError:
        pytest.fail(f"{name}: no JSON result\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    result["_returncode"] = proc.returncode
    result["_stderr"] = proc.stderr
    return result


def test_descriptor_exhaustion_backs_off_and_recovers():
    # (The standard module retries accept() at once, at full CPU: see
    # bench/fd_exhaustion.py --module socketserver.)
    ours = run_script("fd_exhaustion.py", "--seconds", "2")
    assert ours["_returncode"] == 0, ours["_stderr"]
    assert ours["cpu_fraction"] < 0.20
    levels = [level for level, _ in ours["log"]]
    assert ours["warnings_during"] == 1, ours["log"]
    assert levels.count("WARNING") == 1, ours["log"]
    assert "Too many open files" in ours["log"][0][1]
    # Once accepts succeed again: one INFO line.
    assert levels.count("INFO") == 1, ours["log"]
    assert ours["reply_ok"], ours
    assert ours["served_after_s"] < 1.0


def test_no_leaks_after_mixed_connections():
    result = run_script("leak_soak.py", "--connections", "2000")
    assert result["client_errors"] == 0, result["first_errors"]
    # Every kind of failure happened and reached handle_error.
    assert set(result["handler_errors"]) >= {"ValueError", "ConnectionResetError", "TimeoutError"}
    assert result["settled"], result
    base, now = result["fds"]
    assert now == base, f"{now - base} descriptors leaked"
    assert result["workers_left"] == 0, "idle workers did not retire"
    base, now = result["threads"]
    assert now == base
    base, now = result["threads_after_close"]
    assert now == base
    assert result["rss_growth"] < 0.10
    assert result["_returncode"] == 0, result["_stderr"]


def test_forking_servers_respect_max_children_and_leave_no_zombies():
    result = run_script("fork_soak.py", "--requests", "300", "--max-children", "5")
    for kind in ("tcp", "udp"):
        r = result[kind]
        assert r["failed"] == 0, (kind, r["first_failures"])
        assert r["handled"] >= r["requests"]
        assert r["most_unreaped"] <= 5, kind
        assert r["most_running"] <= 5, kind
        assert r["most_running"] >= 2, f"{kind}: no concurrency, the bound was not exercised"
        assert r["children_left"] == [], kind
        assert r["waitpid"] is None, f"{kind}: waitpid(-1, WNOHANG) found a child"
    assert result["_returncode"] == 0, result["_stderr"]


def test_soak_mixed_load():
    result = run_script("soak.py", "--seconds", "10", timeout=60)
    print(
        f"soak: {result['tcp_keepalive']} keep-alive and {result['tcp_per_connection']} "
        f"per-connection TCP requests, UDP {result['udp_sent']} sent, "
        f"{result['udp_lost']} lost ({result['udp_loss_rate']}), "
        f"slowest TCP reply {result['tcp_slowest_s']} s"
    )
    assert result["tcp_errors"] == 0, result["first_errors"]
    assert result["tcp_keepalive"] > 0
    # A new connection is served while keep-alive connections stay open.
    assert result["tcp_per_connection"] > 100
    assert result["tcp_slow"] == 0, f"slowest TCP reply took {result['tcp_slowest_s']} s"
    # One ping in flight per client over loopback: a reply later than a
    # second (counted lost) is rare even on a loaded machine.
    assert result["udp_sent"] > 100
    assert result["udp_received"] + result["udp_lost"] == result["udp_sent"]
    assert result["udp_lost"] <= result["udp_sent"] // 100, result["udp_lost"]
    # A wrong reply can only be a late one to a ping already counted lost.
    assert result["udp_wrong"] <= result["udp_lost"]
    assert result["_returncode"] == 0, result["_stderr"]
