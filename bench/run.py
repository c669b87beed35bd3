#!/usr/bin/env python3
"""Benchmarks: the standard socketserver, socketserver_rs, uvloop and a pure
Rust echo server through the same workloads, side by side, in one run.

    python3 bench/run.py            # the full run, about 13 minutes
    python3 bench/run.py --quick    # about 3 minutes, noisier
    python3 bench/run.py --no-wrk   # without the http.server part

It creates build/bench-venv, installs this repository into it (release build)
together with uvloop, builds bench/loadgen, then runs every cell with the
server pinned to CPU 0 and the load generator to CPU 1, and prints the
tables and the PASS/MISS of each target. Everything talks over 127.0.0.1 and
stops by itself.
"""

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
LOADGEN_MANIFEST = BENCH / "loadgen" / "Cargo.toml"
LOADGEN_BIN = BENCH / "loadgen" / "target" / "release"
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
    run_checked(["cargo", "build", "--release", "-q", "--manifest-path", LOADGEN_MANIFEST])


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


def cpu_seconds(pid):
    """utime+stime of the process (all its threads) plus those of its
    reaped children (ForkingMixIn), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are 14-17.
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def proc_status(pid, field):
    """A number from /proc/PID/status (0 if absent): VmRSS in KiB, Threads."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


class Server:
    """A server process pinned to CPU 0; stops when its stdin closes."""

    def __init__(self, argv, name):
        self.name = name
        self.errlog = open(BUILD / "bench-server-stderr.log", "ab")
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *map(str, argv)],
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


def loadgen(command, port, options, budget, on_line=None):
    """Runs the load generator on CPU 1; returns its RESULT as a dict."""
    argv = ["taskset", "-c", LOADGEN_CPU, LOADGEN_BIN / "loadgen", command, "--port", port]
    for key, value in options.items():
        argv += [f"--{key}", value]
    proc = subprocess.Popen(
        [str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
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


def timed_cell(spec, command, options, cfg):
    """One measured run: returns req/s, MiB/s, p50/p99 µs, CPU µs/request."""
    server = Server(server_argv(spec), label(spec))
    marks = {}

    def on_line(line, _proc):
        if line in ("START", "STOP"):
            marks[line] = cpu_seconds(server.pid)

    try:
        opts = dict(options, warmup=cfg.warmup, duration=cfg.duration)
        result = loadgen(command, server.port, opts, cfg.warmup + cfg.duration + 30, on_line)
    finally:
        server.stop()
    cpu = marks["STOP"] - marks["START"]
    requests = result["requests"]
    cell = {
        "rps": result["rps"],
        "p50": result["p50_us"],
        "p99": result["p99_us"],
        "cpu": cpu * 1e6 / requests if requests else math.nan,
        "errors": result["errors"],
        "stalled": result.get("stalled", 0),
    }
    if command in ("bulk", "lines"):
        mib = result["bytes"] / (1024 * 1024)
        cell["rps"] = result["mib_per_s"]
        cell["cpu"] = cpu * 1e6 / mib if mib else math.nan
        cell["p50"] = cell["p99"] = math.nan
    return cell


# --------------------------------------------------------------------------
# The workloads

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


def workloads():
    """(title, loadgen command, options, unit, [(spec, std reference, rust reference)])"""
    return [
        (
            "keep-alive line echo, 16 conns",
            "keepalive",
            {"conns": 16, "size": 64},
            "req/s",
            [STD_TTCP, RS_TTCP, UVLOOP_TCP, RUST_TCP],
            {"default": STD_TTCP},
        ),
        (
            "connection per request, 4 workers",
            "connper",
            {"conns": 4, "size": 64},
            "req/s",
            [
                STD_TTCP,
                RS_TTCP,
                ("std", ("TCPServer", "line")),
                ("rs", ("TCPServer", "line")),
                ("std", ("ForkingTCPServer", "line")),
                ("rs", ("ForkingTCPServer", "line")),
                UVLOOP_TCP,
                RUST_TCP,
            ],
            {"default": STD_TTCP},
        ),
        (
            "UDP ping-pong, 8 sockets",
            "udp",
            {"conns": 8, "size": 64},
            "req/s",
            [
                ("std", ("UDPServer", "udp")),
                ("rs", ("UDPServer", "udp")),
                ("std", ("ThreadingUDPServer", "udp")),
                ("rs", ("ThreadingUDPServer", "udp")),
                ("uvloop", "udp"),
                ("rust", "udp"),
            ],
            {"default": ("std", ("UDPServer", "udp"))},
        ),
        (
            "bulk echo, 2 conns x 256 KiB writes",
            "bulk",
            {"conns": 2, "size": 256 * 1024},
            "MiB/s",
            [
                ("std", ("ThreadingTCPServer", "bulk-plain")),
                ("std", ("ThreadingTCPServer", "bulk-files")),
                ("rs", ("ThreadingTCPServer", "bulk-files")),
                UVLOOP_TCP,
                RUST_TCP,
            ],
            # Every row is compared to the standard module's plain recv/sendall.
            {"all": ("std", ("ThreadingTCPServer", "bulk-plain"))},
        ),
    ]


def std_reference(spec, refs):
    if "all" in refs:
        return refs["all"]
    impl, what = spec
    if impl == "rs":
        return ("std", what)
    if impl == "std":
        return spec
    return refs["default"]


def rust_reference(specs):
    return next(spec for spec in specs if spec[0] == "rust")


def run_timed_workloads(cfg, results):
    for title, command, options, unit, specs, refs in workloads():
        log(f"== {title}")
        runs = {spec: [] for spec in specs}
        for round_no in range(cfg.runs):
            for spec in specs:  # interleaved, so that drifting noise hits all alike
                try:
                    cell = timed_cell(spec, command, options, cfg)
                except Exception as err:  # noqa: BLE001 - a failed cell must not end the run
                    log(f"   {label(spec)}: FAILED: {err}")
                    continue
                runs[spec].append(cell)
                log(
                    f"   run {round_no + 1} {label(spec):45} {cell['rps']:10.1f} {unit}"
                    f"  cpu {cell['cpu']:8.1f} us  err {cell['errors']}"
                    f"  stalled {cell['stalled']}"
                )
        results["timed"].append(
            {
                "title": title,
                "unit": unit,
                "rows": [
                    {
                        "spec": spec,
                        "label": label(spec),
                        "runs": runs[spec],
                        "std": std_reference(spec, refs),
                        "rust": rust_reference(specs),
                    }
                    for spec in specs
                ],
            }
        )


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


def run_idle(cfg, results):
    log("== 1,000 idle keep-alive connections")

    def measure(server):
        before = rss_kib(server.pid)
        seen = {}

        def on_line(line, proc):
            if line == "HELD":
                time.sleep(0.5)  # let the last handlers settle
                seen["rss"] = rss_kib(server.pid)
                proc.stdin.close()

        result = loadgen("idle", server.port, {"conns": 1000, "hold": 30}, 90, on_line)
        return before, seen.get("rss", math.nan), result

    for spec in [STD_TTCP, RS_TTCP, UVLOOP_TCP, RUST_TCP]:
        measured = with_server(spec, measure)
        if measured is None:
            continue
        before, held, result = measured
        row = {
            "label": label(spec),
            "spec": spec,
            "before_kib": before,
            "held_kib": held,
            "held": result["held"],
            "errors": result["errors"],
            "open_s": result["secs"],
        }
        log(f"   {row}")
        results["idle"].append(row)


def run_framed(cfg, results):
    # bench/framed.py measures; it imports this module, so import it late.
    import framed

    log("== framed echo, 16 keep-alive conns")
    for size in (64, 65536):
        for model, title in framed.MODELS.items():
            row = {"size": size, "model": model, "label": title}
            row.update(framed.medians(model, size, cfg))
            log(f"   {row}")
            results["framed"].append(row)
    log("== idle framed connections")
    for model, title, conns in framed.IDLE:
        row = {"model": model, "label": title, "conns": conns}
        row.update(framed.idle_cell(model, conns))
        log(f"   {row}")
        results["framed_idle"].append(row)


def run_burst(cfg, results):
    log("== burst of 64 simultaneous connects")
    options = {"conns": 64, "rounds": cfg.burst_rounds}
    for spec in [STD_TTCP, RS_TTCP]:
        result = with_server(spec, lambda server: loadgen("burst", server.port, options, 300))
        if result is None:
            continue
        row = {
            "label": label(spec),
            "spec": spec,
            "p50_ms": result["p50_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000,
            "max_ms": result["max_us"] / 1000,
            "ok": result["requests"],
            "errors": result["errors"],
        }
        log(f"   {row}")
        results["burst"].append(row)


def run_shutdown(cfg, results):
    log("== shutdown() latency")
    for impl in ("std", "rs"):
        argv = [
            "taskset",
            "-c",
            SERVER_CPU,
            PYTHON,
            SERVERS,
            "shutdown",
            "--impl",
            impl,
            "--tries",
            cfg.shutdown_tries,
        ]
        try:
            out = subprocess.run(
                [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=True
            ).stdout
        except (subprocess.SubprocessError, OSError) as err:
            log(f"   {impl}: FAILED: {err}")
            continue
        took = sorted(json.loads(out)["shutdown_s"])
        row = {
            "label": "socketserver" if impl == "std" else "socketserver_rs",
            "impl": impl,
            "median_ms": statistics.median(took) * 1000,
            "p99_ms": percentile(took, 99) * 1000,
            "tries": len(took),
        }
        log(f"   {row}")
        results["shutdown"].append(row)


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


def run_http(cfg, results):
    log("== http.server under wrk -c16")
    modes = [
        ("HTTP/1.1 keep-alive", []),
        ("HTTP/1.0 Connection: close", ["-H", "Connection: close"]),
    ]
    for mode, extra in modes:
        runs = {impl: [] for impl in ("std", "rs")}
        for _ in range(cfg.runs):
            for impl in ("std", "rs"):
                try:
                    server = Server([PYTHON, SERVERS, "http", "--impl", impl], f"http {impl}")
                except RuntimeError as err:
                    log(f"   {impl}: FAILED: {err}")
                    continue
                try:
                    argv = [
                        "taskset",
                        "-c",
                        LOADGEN_CPU,
                        "wrk",
                        "-t1",
                        "-c16",
                        f"-d{cfg.wrk_seconds}s",
                        "--latency",
                        *extra,
                        f"http://127.0.0.1:{server.port}/",
                    ]
                    before = cpu_seconds(server.pid)
                    out = subprocess.run(
                        argv, capture_output=True, text=True, timeout=cfg.wrk_seconds + 60
                    ).stdout
                    cpu = cpu_seconds(server.pid) - before
                finally:
                    server.stop()
                cell = parse_wrk(out)
                total = cell["rps"] * cfg.wrk_seconds
                cell["cpu"] = cpu * 1e6 / total if total else math.nan
                log(f"   {mode} {impl}: {cell}")
                runs[impl].append(cell)
        results["http"].append({"mode": mode, "runs": runs})


# --------------------------------------------------------------------------
# Summaries and the tables


def percentile(sorted_values, p):
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def med(runs, key):
    values = [r[key] for r in runs if not math.isnan(r[key])]
    if not values:
        return math.nan, math.nan
    m = statistics.median(values)
    spread = (max(values) - min(values)) / m * 100 if m else math.nan
    return m, spread


def fmt_num(value):
    if math.isnan(value):
        return "n/a"
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 10_000:
        return f"{value / 1000:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_spread(value, spread):
    if math.isnan(value):
        return "n/a"
    if math.isnan(spread):
        return fmt_num(value)
    return f"{fmt_num(value)} ±{spread:.0f}%"


def fmt_ratio(ratio):
    return "n/a" if math.isnan(ratio) else f"{ratio:.2f}x"


def better(value, reference, higher_is_better):
    """How many times better `value` is than `reference` (>1: better)."""
    if math.isnan(value) or math.isnan(reference) or value == 0 or reference == 0:
        return math.nan
    return value / reference if higher_is_better else reference / value


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summarize(results):
    """Medians per row, keyed by (workload title, spec) for the targets."""
    summary = {}
    for workload in results["timed"]:
        for row in workload["rows"]:
            summary[(workload["title"], tuple_spec(row["spec"]))] = {
                key: med(row["runs"], key) for key in ("rps", "p50", "p99", "cpu")
            }
    return summary


def tuple_spec(spec):
    impl, what = spec
    return (impl, tuple(what) if isinstance(what, list) else what)


def problems(workload):
    """Notes on rows whose clients saw failures or silent connections."""
    notes = []
    for row in workload["rows"]:
        stalled = [r["stalled"] for r in row["runs"]]
        errors = [r["errors"] for r in row["runs"]]
        if any(stalled):
            notes.append(
                f"- {row['label']}: connections that got no reply at all during the "
                f"measured window, per run: {stalled} (the figures above come from the rest)"
            )
        if any(errors):
            notes.append(f"- {row['label']}: failed requests per run: {errors}")
    if len(workload["rows"][0]["runs"]) == 0:
        notes.append("- some rows have no runs: see the log above")
    return ["\n" + "\n".join(notes)] if notes else []


def render(results, cfg):
    out = []
    summary = summarize(results)
    out.append(
        f"Medians of {cfg.runs} runs of {cfg.duration:g} s (after {cfg.warmup:g} s warm-up), "
        "± is the spread (max-min)/median. Server on CPU 0, load generator on CPU 1, "
        "127.0.0.1.\nRatios are 'times better' than the reference (>1 = better): "
        "vs std = the standard module's same server class (uvloop and pure Rust: its "
        "ThreadingTCPServer / UDPServer; bulk: its plain recv/sendall), vs rust = the pure "
        "Rust server. CPU = server utime+stime per request (bulk: per MiB)."
    )
    header = [
        "server",
        "req/s",
        "vs std",
        "vs rust",
        "p50 µs",
        "vs std",
        "vs rust",
        "p99 µs",
        "vs std",
        "vs rust",
        "CPU µs/req",
        "vs std",
        "vs rust",
    ]
    for workload in results["timed"]:
        rows = []
        for row in workload["rows"]:
            mine = summary[(workload["title"], tuple_spec(row["spec"]))]
            std = summary.get((workload["title"], tuple_spec(row["std"])))
            rust = summary.get((workload["title"], tuple_spec(row["rust"])))
            cells = [row["label"]]
            for key, higher in (("rps", True), ("p50", False), ("p99", False), ("cpu", False)):
                value, spread = mine[key]
                cells.append(fmt_spread(value, spread))
                for ref in (std, rust):
                    cells.append(fmt_ratio(better(value, ref[key][0], higher) if ref else math.nan))
            rows.append(cells)
        head = list(header)
        if workload["unit"] != "req/s":
            head[1] = workload["unit"]
            head[10] = "CPU µs/MiB"
        out.append(f"\n### {workload['title']}\n")
        out.append(markdown_table(head, rows))
        out.extend(problems(workload))

    if results["idle"]:
        std_rss = next((r["held_kib"] for r in results["idle"] if r["spec"] == STD_TTCP), math.nan)
        rust_rss = next(
            (r["held_kib"] for r in results["idle"] if r["spec"][0] == "rust"), math.nan
        )
        rows = [
            [
                r["label"],
                f"{r['before_kib'] / 1024:.1f}",
                f"{r['held_kib'] / 1024:.1f}",
                f"{r['held']}/{r['held'] + r['errors']}",
                f"{r['open_s']:.2f}",
                fmt_ratio(better(r["held_kib"], std_rss, False)),
                fmt_ratio(better(r["held_kib"], rust_rss, False)),
            ]
            for r in results["idle"]
        ]
        out.append("\n### 1,000 idle keep-alive connections (server RSS, one run)\n")
        out.append(
            markdown_table(
                [
                    "server",
                    "RSS before MiB",
                    "RSS with 1,000 MiB",
                    "echoed",
                    "open s",
                    "vs std",
                    "vs rust",
                ],
                rows,
            )
        )
    if results["framed"]:
        rows = [
            [r["label"], framed_size(r["size"]), fmt_num(r["cpu"]), fmt_num(r["rps"]), r["errors"]]
            for r in results["framed"]
        ]
        out.append(f"\n### framed echo, 16 keep-alive conns (median of {cfg.runs})\n")
        out.append(
            markdown_table(["server", "message", "CPU µs/message", "messages/s", "errors"], rows)
        )
    if results["framed_idle"]:
        rows = [
            [
                r["label"],
                f"{r['held']}/{r['conns']}",
                r.get("threads", "n/a"),
                f"{r['before'] / 1024:.1f}",
                f"{r.get('rss', math.nan) / 1024:.1f}",
            ]
            for r in results["framed_idle"]
        ]
        out.append("\n### idle framed connections (one run)\n")
        out.append(
            markdown_table(["server", "held", "threads", "RSS before MiB", "RSS held MiB"], rows)
        )
    if results["burst"]:
        rows = [
            [
                r["label"],
                f"{r['p50_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['max_ms']:.1f}",
                f"{r['ok']}/{r['ok'] + r['errors']}",
            ]
            for r in results["burst"]
        ]
        out.append(
            f"\n### burst of 64 simultaneous connects, {cfg.burst_rounds} bursts, "
            "connect-to-reply, default settings\n"
        )
        out.append(markdown_table(["server", "p50 ms", "p99 ms", "max ms", "replies"], rows))
    if results["shutdown"]:
        rows = [
            [r["label"], f"{r['median_ms']:.2f}", f"{r['p99_ms']:.2f}", r["tries"]]
            for r in results["shutdown"]
        ]
        out.append("\n### shutdown() of a serving ThreadingTCPServer, default poll_interval\n")
        out.append(markdown_table(["module", "median ms", "p99 ms", "tries"], rows))
    if results["http"]:
        rows = []
        for entry in results["http"]:
            std_rps = med(entry["runs"]["std"], "rps")[0]
            std_cpu = med(entry["runs"]["std"], "cpu")[0]
            for impl in ("std", "rs"):
                runs = entry["runs"][impl]
                rps, rps_spread = med(runs, "rps")
                cpu, cpu_spread = med(runs, "cpu")
                rows.append(
                    [
                        entry["mode"],
                        "socketserver" if impl == "std" else "socketserver_rs",
                        fmt_spread(rps, rps_spread),
                        fmt_ratio(better(rps, std_rps, True)),
                        fmt_num(med(runs, "p50")[0]),
                        fmt_num(med(runs, "p99")[0]),
                        fmt_spread(cpu, cpu_spread),
                        fmt_ratio(better(cpu, std_cpu, False)),
                    ]
                )
        out.append(
            f"\n### http.server ThreadingHTTPServer, 2-byte 200, wrk -t1 -c16 "
            f"-d{cfg.wrk_seconds}s (median of {cfg.runs})\n"
        )
        out.append(
            markdown_table(
                ["mode", "server", "req/s", "vs std", "p50 µs", "p99 µs", "CPU µs/req", "vs std"],
                rows,
            )
        )
    out.append("\n### targets\n")
    out.append(markdown_table(["target", "measured", "result"], targets(results, summary)))
    return "\n".join(out)


def targets(results, summary):
    keep = "keep-alive line echo, 16 conns"
    conn = "connection per request, 4 workers"
    udp = "UDP ping-pong, 8 sockets"
    bulk = "bulk echo, 2 conns x 256 KiB writes"

    def get(title, spec, key="cpu"):
        entry = summary.get((title, tuple_spec(spec)))
        return entry[key][0] if entry else math.nan

    rows = []

    def check(name, measured, ok):
        if measured is None:
            rows.append([name, "not run", "n/a"])
        elif isinstance(measured, float) and math.isnan(measured):
            rows.append([name, "n/a", "MISS"])
        else:
            rows.append([name, measured, "PASS" if ok else "MISS"])

    def timed_check(name, measured, ok):
        # The workloads of the 'timed' part, which --only may leave out.
        check(name, measured if results["timed"] else None, ok)

    ka_std, ka_rs = get(keep, STD_TTCP), get(keep, RS_TTCP)
    ka_uv, ka_rust = get(keep, UVLOOP_TCP), get(keep, RUST_TCP)
    r = better(ka_rs, ka_std, False)
    timed_check("keep-alive CPU/req ≥1.25x better than stdlib", fmt_ratio(r), r >= 1.25)
    r = better(ka_rs, ka_uv, False)
    timed_check("keep-alive CPU/req better than uvloop", fmt_ratio(r), r > 1)
    r = ka_rs / ka_rust
    timed_check("keep-alive CPU/req within 1.25x of pure Rust", f"{r:.2f}x of rust", r <= 1.25)

    cp_std, cp_rs = get(conn, STD_TTCP), get(conn, RS_TTCP)
    cp_uv, cp_rust = get(conn, UVLOOP_TCP), get(conn, RUST_TCP)
    r, r2 = better(cp_rs, cp_std, False), cp_rs / cp_rust
    timed_check(
        "conn/request CPU/req ≥2.5x better than stdlib (or within 1.15x of pure Rust)",
        f"{fmt_ratio(r)} vs std, {r2:.2f}x of rust",
        r >= 2.5 or r2 <= 1.15,
    )
    r = better(cp_rs, cp_uv, False)
    timed_check("conn/request CPU/req better than uvloop", fmt_ratio(r), r > 1)

    for server_class, need in (("ThreadingUDPServer", 7.0), ("UDPServer", 1.5)):
        r = better(
            get(udp, ("rs", (server_class, "udp"))), get(udp, ("std", (server_class, "udp"))), False
        )
        timed_check(
            f"{server_class} CPU/req ≥{need:g}x better than stdlib", fmt_ratio(r), r >= need
        )

    http = {e["mode"]: e for e in results["http"]}
    for mode, need in (("HTTP/1.1 keep-alive", 50.0), ("HTTP/1.0 Connection: close", 1.5)):
        if mode in http:
            r = better(
                med(http[mode]["runs"]["rs"], "rps")[0],
                med(http[mode]["runs"]["std"], "rps")[0],
                True,
            )
            check(f"http.server {mode} req/s ≥{need:g}x stdlib", fmt_ratio(r), r >= need)
        else:
            check(f"http.server {mode} req/s ≥{need:g}x stdlib", None, False)

    rs_shutdown = next((r["median_ms"] for r in results["shutdown"] if r["impl"] == "rs"), None)
    check(
        "shutdown() median ≤2 ms",
        None if rs_shutdown is None else f"{rs_shutdown:.2f} ms",
        rs_shutdown is not None and rs_shutdown <= 2,
    )

    idle = {tuple_spec(r["spec"]): r for r in results["idle"]}
    std_idle, rs_idle = idle.get(tuple_spec(STD_TTCP)), idle.get(tuple_spec(RS_TTCP))
    if std_idle and rs_idle:
        ok = rs_idle["held"] == 1000 and rs_idle["held_kib"] <= std_idle["held_kib"]
        check(
            "RSS with 1,000 idle keep-alive conns ≤ stdlib's",
            f"{rs_idle['held_kib'] / 1024:.1f} vs {std_idle['held_kib'] / 1024:.1f} MiB",
            ok,
        )
    else:
        check(
            "RSS with 1,000 idle keep-alive conns ≤ stdlib's",
            math.nan if results["idle"] else None,
            False,
        )

    plain = get(bulk, ("std", ("ThreadingTCPServer", "bulk-plain")), "rps")
    files = get(bulk, ("rs", ("ThreadingTCPServer", "bulk-files")), "rps")
    timed_check(
        "bulk through rfile/wfile MiB/s ≥ stdlib plain recv/sendall",
        f"{fmt_num(files)} vs {fmt_num(plain)} MiB/s",
        files >= plain,
    )

    framed_targets(results, check)

    rs_burst = next((r for r in results["burst"] if r["spec"] == RS_TTCP), None)
    if rs_burst:
        check(
            "burst of 64 connects p99 < 100 ms",
            f"{rs_burst['p99_ms']:.1f} ms",
            rs_burst["p99_ms"] < 100 and rs_burst["errors"] == 0,
        )
    else:
        check("burst of 64 connects p99 < 100 ms", math.nan if results["burst"] else None, False)
    return rows


def framed_size(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def framed_targets(results, check):
    """The framed-message targets: event-driven handlers against a thread
    per connection and uvloop, and idle connections against the standard
    module."""
    cpu = {(r["size"], r["model"]): r["cpu"] for r in results["framed"]}
    rps = {(r["size"], r["model"]): r["rps"] for r in results["framed"]}

    def framed_check(name, measured, ok):
        check(name, measured if results["framed"] else None, ok)

    for model, server in (("event", "TCPServer"), ("event-threading", "ThreadingTCPServer")):
        thread, mine = cpu.get((64, "thread"), math.nan), cpu.get((64, model), math.nan)
        uv = cpu.get((64, "uvloop"), math.nan)
        r = better(mine, uv, False)
        framed_check(f"framed 64 B CPU/message below uvloop's ({server})", fmt_ratio(r), r > 1)
        r = better(mine, thread, False)
        framed_check(
            f"framed 64 B CPU/message ≥2x below thread per connection ({server})",
            fmt_ratio(r),
            r >= 2,
        )
        thread, mine = rps.get((65536, "thread"), math.nan), rps.get((65536, model), math.nan)
        r = mine / thread
        framed_check(
            f"framed 64 KiB messages/s ≥ thread per connection ({server})", fmt_ratio(r), r >= 1
        )
    idle = {r["model"]: r for r in results["framed_idle"]}
    std, rs = idle.get("stdlib"), idle.get("event-threading")
    if std and rs:
        ok = (
            rs["held"] == rs["conns"]
            and rs.get("threads", math.inf) < 10
            and rs.get("rss", math.inf) < std.get("rss", math.nan)
        )
        measured = (
            f"{rs['held']} held by {rs.get('threads')} threads in "
            f"{rs.get('rss', math.nan) / 1024:.1f} MiB vs std's 1,000 in "
            f"{std.get('rss', math.nan) / 1024:.1f} MiB"
        )
    else:
        ok, measured = False, math.nan if results["framed_idle"] else None
    check("10,000 idle framed conns: <10 threads, RSS < std's for 1,000", measured, ok)


# --------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter cells (~3 minutes)")
    parser.add_argument("--no-wrk", action="store_true", help="skip the http.server/wrk part")
    parser.add_argument(
        "--no-install", action="store_true", help="use the bench venv's installed package as it is"
    )
    parser.add_argument("--runs", type=int, help="runs per cell (default 3)")
    parser.add_argument("--duration", type=float, help="measured seconds per cell")
    parser.add_argument(
        "--only", help="comma-separated parts: timed,idle,framed,burst,shutdown,http"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=BUILD / "bench-results.json",
        help="where to write the raw results",
    )
    cfg = parser.parse_args()
    quick = cfg.quick
    cfg.runs = cfg.runs or 3
    cfg.duration = cfg.duration or (0.7 if quick else 3.0)
    cfg.warmup = 0.3 if quick else 1.0
    cfg.burst_rounds = 3 if quick else 5
    cfg.shutdown_tries = 10 if quick else 50
    cfg.wrk_seconds = 1 if quick else 3
    parts = set((cfg.only or "timed,idle,framed,burst,shutdown,http").split(","))
    if cfg.no_wrk:
        parts.discard("http")

    check_tools(cfg)
    setup(cfg)
    results = {
        "timed": [],
        "idle": [],
        "framed": [],
        "framed_idle": [],
        "burst": [],
        "shutdown": [],
        "http": [],
    }
    began = time.monotonic()
    steps = [
        ("timed", run_timed_workloads),
        ("idle", run_idle),
        ("framed", run_framed),
        ("burst", run_burst),
        ("shutdown", run_shutdown),
        ("http", run_http),
    ]
    for name, step in steps:
        if name in parts:
            step(cfg, results)
    cfg.json.parent.mkdir(parents=True, exist_ok=True)
    cfg.json.write_text(json.dumps(results, indent=1, default=str))
    log(f"measured in {time.monotonic() - began:.0f} s; raw results in {cfg.json}")
    print(render(results, cfg))


if __name__ == "__main__":
    main()
