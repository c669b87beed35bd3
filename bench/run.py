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
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    BUILD,
    FRAMED_IDLE,
    FRAMED_MODELS,
    LOADGEN_CPU,
    PYTHON,
    RS_TTCP,
    RUST_TCP,
    SERVER_CPU,
    SERVERS,
    STD_TTCP,
    UVLOOP_TCP,
    Server,
    check_tools,
    cpu_seconds,
    framed_idle_cell,
    framed_medians,
    label,
    loadgen,
    log,
    parse_wrk,
    rss_kib,
    setup,
    timed_cell,
    with_server,
)
from report import percentile, render  # noqa: E402

# --------------------------------------------------------------------------
# The workloads


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
    log("== framed echo, 16 keep-alive conns")
    for size in (64, 65536):
        for model, title in FRAMED_MODELS.items():
            row = {"size": size, "model": model, "label": title}
            row.update(framed_medians(model, size, cfg))
            log(f"   {row}")
            results["framed"].append(row)
    log("== idle framed connections")
    for model, title, conns in FRAMED_IDLE:
        row = {"model": model, "label": title, "conns": conns}
        row.update(framed_idle_cell(model, conns))
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
