"""The benchmark report: medians and spreads, the markdown tables of
bench/run.py and the PASS/MISS line of each of the project's targets."""

import math
import statistics

from harness import RS_TTCP, RUST_TCP, STD_TTCP, UVLOOP_TCP


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
