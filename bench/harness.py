"""The benchmark harness: the bench venv and the load generator, server
processes pinned to CPU 0, the load generator on CPU 1, and one measured cell
at a time. bench/run.py, bench/framed.py and the other benchmarks are entry
points over it; bench/report.py turns what they measure into tables."""

import argparse
import json
import math
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = ROOT / "build"
VENV = BUILD / "bench-venv"
PYTHON = VENV / "bin" / "python"
# The load generator is a member of the project's Cargo workspace, built
# into a target directory of its own under build/.
LOADGEN_TARGET = BUILD / "loadgen-target"
LOADGEN_BIN = LOADGEN_TARGET / "release"
SERVERS = BENCH / "servers.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, LOADGEN_CPU = "0", "1"


def log(message):
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Setting up


def run_checked(cmd, **kwargs):
    log("+ " + " ".join(str(part) for part in cmd))
    subprocess.run([str(part) for part in cmd], check=True, **kwargs)


def setup(args):
    BUILD.mkdir(exist_ok=True)
    if not PYTHON.exists():
        log(f"creating {VENV.relative_to(ROOT)}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    env = dict(os.environ, CARGO_TARGET_DIR=str(BUILD / "cargo-target"))
    if not args.no_install:
        run_checked(
            [PYTHON, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", ROOT],
            env=env,
        )
    have_uvloop = (
        subprocess.run([PYTHON, "-c", "import uvloop"], capture_output=True).returncode == 0
    )
    if not have_uvloop:
        run_checked([PYTHON, "-m", "pip", "install", "-q", "uvloop"])
    build_loadgen()


def build_loadgen():
    run_checked(
        ["cargo", "build", "--release", "-q", "-p", "socketserver-bench-loadgen"],
        cwd=ROOT,
        env=dict(os.environ, CARGO_TARGET_DIR=str(LOADGEN_TARGET)),
    )


def cell_bench_config(doc, runs, duration, warmup, extra=()):
    """The command line of a bench made of timed cells (--runs, --duration,
    --no-install, and `extra` as (flag, keyword arguments) pairs), parsed,
    with the tools checked and the venv and load generator set up."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for flag, options in extra:
        parser.add_argument(flag, **options)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--duration", type=float, default=duration)
    parser.add_argument("--no-install", action="store_true")
    cfg = parser.parse_args()
    cfg.warmup = warmup
    cfg.no_wrk = True
    check_tools(cfg)
    setup(cfg)
    return cfg


def check_tools(args):
    missing = [tool for tool in ("taskset", "cargo") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (taskset is in util-linux; cargo: rustup)")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs at least 2 CPUs: the server runs on CPU 0, the load generator on CPU 1")
    if not args.no_wrk and shutil.which("wrk") is None:
        sys.exit(
            "wrk is not installed; install it with\n"
            "    apt-get update && apt-get install -y wrk\n"
            "or skip the http.server part with --no-wrk"
        )


# --------------------------------------------------------------------------
# Running one cell


def cpu_times(pid):
    """(user, system) seconds of the process (all its threads) plus those of
    its reaped children (ForkingMixIn), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are 14-17.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + cutime) / CLK_TCK, (stime + cstime) / CLK_TCK


def cpu_seconds(pid):
    return sum(cpu_times(pid))


def context_switches(pid):
    """Voluntary and involuntary context switches of the process's live
    threads (a thread that exited took its count with it)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += proc_status(f"{pid}/task/{task.name}", "voluntary_ctxt_switches")
            total += proc_status(f"{pid}/task/{task.name}", "nonvoluntary_ctxt_switches")
        except FileNotFoundError:
            pass  # the thread ended while we looked
    return total


def proc_status(pid, field):
    """A number from /proc/PID/status (0 if absent): VmRSS in KiB, Threads."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def pinned(argv, cpus):
    """argv run on the CPUs listed in `cpus` ("0", "0,1"), or anywhere if None."""
    pin = [] if cpus is None else ["taskset", "-c", cpus]
    return [*pin, *map(str, argv)]


class Server:
    """A server process pinned to CPU 0 (by default); stops when its stdin closes."""

    def __init__(self, argv, name, cpus=SERVER_CPU):
        self.name = name
        BUILD.mkdir(exist_ok=True)
        self.errlog = open(BUILD / "bench-server-stderr.log", "ab")
        self.proc = subprocess.Popen(
            pinned(argv, cpus),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errlog,
        )
        self.port = int(self._read_line(15).split()[1])

    def _read_line(self, timeout):
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.stop()
                raise RuntimeError(f"{self.name}: no PORT line within {timeout}s")
        line = self.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"{self.name}: did not start (see build/bench-server-stderr.log)")
        return line

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.errlog.close()


def server_argv(spec):
    impl, what = spec
    if impl == "rust":
        return [LOADGEN_BIN / "rust-echo", what]
    if impl == "uvloop":
        return [PYTHON, SERVERS, "uvloop", "--proto", what]
    server_class, handler = what
    return [
        PYTHON,
        SERVERS,
        "serve",
        "--impl",
        impl,
        "--server",
        server_class,
        "--handler",
        handler,
    ]


def loadgen(command, port, options, budget, on_line=None, cpus=LOADGEN_CPU):
    """Runs the load generator on CPU 1 (by default); returns its RESULT as a dict."""
    argv = [LOADGEN_BIN / "loadgen", command, "--port", port]
    for key, value in options.items():
        argv += [f"--{key}", value]
    proc = subprocess.Popen(
        pinned(argv, cpus), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(budget, proc.kill)
    watchdog.start()
    result = None
    try:
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
            if on_line is not None:
                on_line(line.strip(), proc)
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
    if result is None:
        raise RuntimeError(f"loadgen {command} gave no result (exit {proc.returncode})")
    return result


def window_marks(server):
    """A dict filled with the server's (CPU seconds, context switches) at the
    load generator's START and STOP lines, and the on_line that fills it."""
    marks = {}

    def on_line(line, _proc):
        if line in ("START", "STOP"):
            marks[line] = (cpu_seconds(server.pid), context_switches(server.pid))

    return marks, on_line


def timed_cell(spec, command, options, cfg):
    """One measured run: returns req/s, MiB/s, p50/p99 µs, CPU µs/request
    and context switches per request."""
    server = Server(server_argv(spec), label(spec))
    marks, on_line = window_marks(server)
    try:
        opts = dict(options, warmup=cfg.warmup, duration=cfg.duration)
        result = loadgen(command, server.port, opts, cfg.warmup + cfg.duration + 30, on_line)
    finally:
        server.stop()
    cpu = marks["STOP"][0] - marks["START"][0]
    switches = marks["STOP"][1] - marks["START"][1]
    requests = result["requests"]
    cell = {
        "rps": result["rps"],
        "p50": result["p50_us"],
        "p99": result["p99_us"],
        "cpu": cpu * 1e6 / requests if requests else math.nan,
        "switches": switches / requests if requests else math.nan,
        "errors": result["errors"],
        "stalled": result.get("stalled", 0),
    }
    if command in ("bulk", "lines"):
        mib = result["bytes"] / (1024 * 1024)
        cell["rps"] = result["mib_per_s"]
        cell["cpu"] = cpu * 1e6 / mib if mib else math.nan
        cell["p50"] = cell["p99"] = math.nan
    return cell


def with_server(spec, measure):
    """Start the server of `spec`, return measure(server) and stop it; None
    (and a FAILED line) when the server or the measurement fails."""
    try:
        server = Server(server_argv(spec), label(spec))
    except RuntimeError as err:
        log(f"   {label(spec)}: FAILED: {err}")
        return None
    try:
        return measure(server)
    except RuntimeError as err:
        log(f"   {label(spec)}: FAILED: {err}")
        return None
    finally:
        server.stop()


def parse_wrk(text):
    out = {"rps": math.nan, "p50": math.nan, "p99": math.nan, "errors": 0}
    units = {"us": 1, "ms": 1000, "s": 1e6}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            value = parts[1]
            for suffix in ("us", "ms", "s"):
                if value.endswith(suffix):
                    number = float(value[: -len(suffix)]) * units[suffix]
                    out["p50" if parts[0] == "50%" else "p99"] = number
                    break
        elif line.strip().startswith("Socket errors:") or line.strip().startswith("Non-2xx"):
            out["errors"] += sum(int(p.strip(",")) for p in parts if p.strip(",").isdigit())
    return out


# --------------------------------------------------------------------------
# The servers compared


STD_TTCP = ("std", ("ThreadingTCPServer", "line"))


RS_TTCP = ("rs", ("ThreadingTCPServer", "line"))


UVLOOP_TCP = ("uvloop", "tcp")


RUST_TCP = ("rust", "tcp")


def label(spec):
    impl, what = spec
    if impl == "rust":
        return "pure Rust (thread/conn)" if what == "tcp" else "pure Rust (1 thread)"
    if impl == "uvloop":
        return "uvloop"
    server_class, handler = what
    module = "socketserver" if impl == "std" else "socketserver_rs"
    suffix = {"bulk-files": " rfile/wfile", "bulk-plain": " recv/sendall"}.get(handler, "")
    return f"{module} {server_class}{suffix}"


# --------------------------------------------------------------------------
# Framed echo (bench/framed.py, and the framed part of bench/run.py)


FRAMED_MODELS = {
    "thread": "(a) thread per connection (ThreadingTCPServer, event_driven = False)",
    "event": "(b) event-driven, handlers on the serving thread (TCPServer)",
    "event-threading": "(b') event-driven, handlers on the pool (ThreadingTCPServer)",
    "uvloop": "(c) uvloop asyncio.Protocol",
}


def framed_medians(model, size, args):
    """The median CPU µs/message and messages/s of args.runs cells, and
    the errors of all."""
    runs = [framed_cell(model, size, args) for _ in range(args.runs)]
    return {
        "cpu": statistics.median(run["cpu"] for run in runs),
        "rps": statistics.median(run["rps"] for run in runs),
        "errors": sum(run["errors"] for run in runs),
    }


def framed_cell(model, size, args):
    server = Server([PYTHON, SERVERS, "framed", "--model", model], model)
    marks, on_line = window_marks(server)
    try:
        options = {"conns": 16, "size": size, "warmup": args.warmup, "duration": args.duration}
        result = loadgen("framed", server.port, options, args.warmup + args.duration + 30, on_line)
    finally:
        server.stop()
    messages = result["requests"]
    cpu = (marks["STOP"][0] - marks["START"][0]) * 1e6 / messages if messages else math.nan
    return {"cpu": cpu, "rps": result["rps"], "errors": result["errors"]}


FRAMED_IDLE = [
    ("stdlib", "the standard module's ThreadingTCPServer, a thread per connection", 1000),
    ("event-threading", "socketserver_rs ThreadingTCPServer, event-driven", 10000),
]


def framed_idle_cell(model, conns):
    """Server threads and RSS (KiB) with `conns` idle framed connections."""
    server = Server([PYTHON, SERVERS, "framed", "--model", model], model)
    seen = {}

    def on_line(line, proc):
        if line == "HELD":
            time.sleep(0.5)  # let the last handlers settle
            seen["rss"] = rss_kib(server.pid)
            seen["threads"] = proc_status(server.pid, "Threads")
            proc.stdin.close()

    try:
        before = rss_kib(server.pid)
        result = loadgen("framed-idle", server.port, {"conns": conns, "hold": 60}, 180, on_line)
    finally:
        server.stop()
    return {"before": before, "held": result["held"], "errors": result["errors"], **seen}
