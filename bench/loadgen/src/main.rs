//! Load generator for the socketserver_rs benchmarks (std only).
//!
//! Every subcommand talks to 127.0.0.1:PORT and is bounded in time. The timed
//! ones warm up first, then print `START`, measure for `--duration` seconds,
//! print `STOP` and finally one `RESULT {json}` line, so that whoever runs it
//! can sample the server's CPU time exactly around the measured window.
//!
//!   keepalive  N connections, each sending a line and reading it back, in a loop
//!   connper    N workers, each: connect, send a line, read the reply, close
//!   udp        N sockets, each sending a datagram and waiting for the echo
//!   bulk       N connections streaming --size byte chunks and reading them back
//!   lines      bulk with newline-terminated lines of --size bytes (sent in
//!              writes of at least 64 KiB)
//!   idle       open N keep-alive connections (one echo each), print HELD,
//!              hold them until standard input closes (or --hold seconds);
//!              gives up after 10 connections that got no echo within 2 s
//!   burst      N simultaneous connects, each sending a line and reading the
//!              reply; latency is from the common start to the reply
//!   framed     keepalive with length-prefixed messages: N connections, each
//!              sending a message of --size bytes (a 4-byte big-endian
//!              length, then the payload) and reading the reply, in a loop
//!   framed-idle  idle with one length-prefixed message per connection
//!   paced      keepalive at a fixed total --rate (requests/s over the N
//!              connections), one request in flight per connection; a
//!              connection that falls behind drops its missed turns, so the
//!              achieved rate shows a server that cannot keep up (--rate
//!              paces framed the same way)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;
/// After the window, load goes on uncounted for COOLDOWN_TIME, so that the
/// server's threads are still there when whoever reads STOP samples them.
const COOLDOWN: u8 = 3;
const COOLDOWN_TIME: Duration = Duration::from_millis(300);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Workers that have their connection up and answered once (or gave up).
/// Warm-up starts when all are, so that slow first connects (a dropped SYN
/// waits a second) do not fall into the measured window.
static READY: AtomicUsize = AtomicUsize::new(0);
const READY_WAIT: Duration = Duration::from_secs(5);

fn ready() {
    READY.fetch_add(1, Ordering::SeqCst);
}

struct Args {
    port: u16,
    conns: usize,
    warmup: f64,
    duration: f64,
    size: usize,
    rounds: usize,
    hold: f64,
    rate: f64,
}

fn parse_args(rest: &[String]) -> Args {
    let mut args = Args {
        port: 0,
        conns: 16,
        warmup: 1.0,
        duration: 3.0,
        size: 64,
        rounds: 5,
        hold: 60.0,
        rate: 0.0,
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--port" => args.port = num(flag, value),
            "--conns" => args.conns = num(flag, value),
            "--warmup" => args.warmup = num(flag, value),
            "--duration" => args.duration = num(flag, value),
            "--size" => args.size = num(flag, value),
            "--rounds" => args.rounds = num(flag, value),
            "--hold" => args.hold = num(flag, value),
            "--rate" => args.rate = num(flag, value),
            _ => fail(&format!("unknown option {flag}")),
        }
    }
    if args.port == 0 {
        fail("--port is required");
    }
    args
}

fn num<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| fail(&format!("bad value for {flag}: {value}")))
}

fn fail(message: &str) -> ! {
    eprintln!("loadgen: {message}");
    std::process::exit(2);
}

/// What one worker thread saw during the measured window.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    bytes: u64,
    /// Connections that completed nothing in the measured window.
    stalled: u64,
    latencies_ns: Vec<u64>,
}

impl Tally {
    /// One request of the measured window: its latency, or an error.
    fn record(&mut self, ok: bool, took: Duration) {
        if ok {
            self.requests += 1;
            self.latencies_ns.push(took.as_nanos() as u64);
        } else {
            self.errors += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.stalled += other.stalled;
        self.latencies_ns.extend(other.latencies_ns);
    }
}

fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1000.0
}

fn line(size: usize) -> Vec<u8> {
    let mut line: Vec<u8> = (0..size.max(1)).map(|i| b'a' + (i % 26) as u8).collect();
    *line.last_mut().unwrap() = b'\n';
    line
}

/// Runs `workers` threads of `work` through warm-up and the measured window,
/// printing START and STOP around the window, and returns the merged tally
/// with the window's length in seconds.
fn timed<F>(args: &Args, work: F) -> (Tally, f64)
where
    F: Fn(usize, &AtomicU8) -> Tally + Send + Sync + 'static,
{
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..args.conns)
        .map(|i| {
            let phase = Arc::clone(&phase);
            let work = Arc::clone(&work);
            thread::spawn(move || work(i, &phase))
        })
        .collect();
    let waiting = Instant::now();
    while READY.load(Ordering::SeqCst) < args.conns && waiting.elapsed() < READY_WAIT {
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_secs_f64(args.warmup));
    phase.store(MEASURE, Ordering::SeqCst);
    let start = Instant::now();
    say("START");
    thread::sleep(Duration::from_secs_f64(args.duration));
    phase.store(COOLDOWN, Ordering::SeqCst);
    let secs = start.elapsed().as_secs_f64();
    say("STOP");
    thread::sleep(COOLDOWN_TIME);
    phase.store(DONE, Ordering::SeqCst);
    let mut total = Tally::default();
    for handle in handles {
        if let Ok(tally) = handle.join() {
            total.merge(tally);
        }
    }
    (total, secs)
}

fn say(what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what}");
    let _ = out.flush();
}

fn report(mut tally: Tally, secs: f64, extra: &str) {
    tally.latencies_ns.sort_unstable();
    let json = format!(
        "{{\"requests\":{},\"errors\":{},\"bytes\":{},\"secs\":{:.6},\"rps\":{:.1},\
\"mib_per_s\":{:.2},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"stalled\":{}{}}}",
        tally.requests,
        tally.errors,
        tally.bytes,
        secs,
        tally.requests as f64 / secs.max(1e-9),
        tally.bytes as f64 / secs.max(1e-9) / (1024.0 * 1024.0),
        percentile_us(&tally.latencies_ns, 50.0),
        percentile_us(&tally.latencies_ns, 99.0),
        tally.latencies_ns.last().copied().unwrap_or(0) as f64 / 1000.0,
        tally.stalled,
        extra,
    );
    say(&format!("RESULT {json}"));
}

/// Spreads the first connects of long-lived connections a little, so that a
/// server with the standard module's listen backlog of 5 does not drop SYNs
/// (and make a client wait a second for the retry) during warm-up.
fn stagger(i: usize) {
    thread::sleep(Duration::from_millis(3 * i as u64));
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends `msg` and reads until a newline; the reply must match.
fn round_trip(
    writer: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    msg: &[u8],
    reply: &mut Vec<u8>,
) -> std::io::Result<()> {
    writer.write_all(msg)?;
    reply.clear();
    reader.read_until(b'\n', reply)?;
    if reply.as_slice() != msg {
        return Err(std::io::Error::other("short or wrong reply"));
    }
    Ok(())
}

/// Requests over persistent connections, one `round_trip` each on what
/// `open` makes of a new connection; reconnects after a failed one.
/// `bytes` per request go to the tally. With `--rate`, connection `i` of N
/// sends every N/rate seconds, offset by i/rate, so that the requests are
/// spread evenly; one that falls behind drops its missed turns.
fn persistent<C, O, R>(args: &Args, addr: SocketAddr, bytes: u64, open: O, round_trip: R)
where
    O: Fn(TcpStream) -> C + Send + Sync + 'static,
    R: Fn(&mut C, &mut Vec<u8>) -> std::io::Result<()> + Send + Sync + 'static,
{
    let pace = (args.rate > 0.0).then(|| Duration::from_secs_f64(args.conns as f64 / args.rate));
    let conns = args.conns as u32;
    let (tally, secs) = timed(args, move |i, phase| {
        let mut tally = Tally::default();
        let mut reply = Vec::new();
        stagger(i);
        let mut announced = false;
        let mut next =
            Instant::now() + pace.map_or(Duration::ZERO, |every| every * i as u32 / conns);
        'reconnect: while phase.load(Ordering::Relaxed) != DONE {
            let Ok(stream) = connect(addr) else {
                tally.errors += 1;
                thread::sleep(Duration::from_millis(10));
                continue;
            };
            let mut conn = open(stream);
            loop {
                if let Some(every) = pace {
                    thread::sleep(next.saturating_duration_since(Instant::now()));
                    next = (next + every).max(Instant::now());
                }
                let began = Instant::now();
                let ok = round_trip(&mut conn, &mut reply).is_ok();
                let ended = Instant::now();
                if !announced {
                    announced = true;
                    ready();
                }
                match phase.load(Ordering::Relaxed) {
                    MEASURE if ok => {
                        tally.requests += 1;
                        tally.bytes += bytes;
                        tally.latencies_ns.push((ended - began).as_nanos() as u64);
                    }
                    MEASURE => tally.errors += 1,
                    DONE => break 'reconnect,
                    _ => {}
                }
                if !ok {
                    continue 'reconnect;
                }
            }
        }
        tally.stalled = u64::from(tally.requests == 0);
        tally
    });
    report(tally, secs, "");
}

fn keepalive(args: &Args, addr: SocketAddr) {
    let msg = line(args.size);
    let open = |writer: TcpStream| {
        let reader = BufReader::new(writer.try_clone().expect("clone socket"));
        (writer, reader)
    };
    persistent(args, addr, 0, open, move |(writer, reader), reply| {
        round_trip(writer, reader, &msg, reply)
    });
}

/// Sends `msg` (framed already) and reads one framed reply; it must match.
fn framed_round_trip(
    stream: &mut TcpStream,
    msg: &[u8],
    reply: &mut Vec<u8>,
) -> std::io::Result<()> {
    stream.write_all(msg)?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header) as usize;
    reply.resize(len, 0);
    stream.read_exact(reply)?;
    if len + 4 != msg.len() || reply.as_slice() != &msg[4..] {
        return Err(std::io::Error::other("short or wrong reply"));
    }
    Ok(())
}

/// A message of `size` payload bytes: its 4-byte big-endian length, then it.
fn framed_message(size: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut msg = (payload.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&payload);
    msg
}

fn framed(args: &Args, addr: SocketAddr) {
    let msg = framed_message(args.size);
    let bytes = msg.len() as u64;
    persistent(
        args,
        addr,
        bytes,
        |stream| stream,
        move |stream, reply| framed_round_trip(stream, &msg, reply),
    );
}

fn connper(args: &Args, addr: SocketAddr) {
    let msg = line(args.size);
    let (tally, secs) = timed(args, move |_, phase| {
        let mut tally = Tally::default();
        let mut reply = Vec::with_capacity(msg.len());
        ready();
        while phase.load(Ordering::Relaxed) != DONE {
            let began = Instant::now();
            let ok = connect(addr).and_then(|mut writer| {
                let mut reader = BufReader::new(writer.try_clone()?);
                round_trip(&mut writer, &mut reader, &msg, &mut reply)
            });
            let ended = Instant::now();
            if phase.load(Ordering::Relaxed) == MEASURE {
                tally.record(ok.is_ok(), ended - began);
            }
            if ok.is_err() {
                thread::sleep(Duration::from_millis(1));
            }
        }
        tally
    });
    report(tally, secs, "");
}

fn udp(args: &Args, addr: SocketAddr) {
    let msg = line(args.size);
    let (tally, secs) = timed(args, move |_, phase| {
        let mut tally = Tally::default();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP socket");
        socket.connect(addr).expect("connect UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(250)))
            .expect("set timeout");
        let mut buf = vec![0u8; 65536];
        ready();
        while phase.load(Ordering::Relaxed) != DONE {
            let began = Instant::now();
            let ok = socket.send(&msg).and_then(|_| loop {
                // A late echo of an earlier, timed-out datagram is skipped.
                let n = socket.recv(&mut buf)?;
                if buf[..n] == msg[..] {
                    break Ok(());
                }
            });
            let ended = Instant::now();
            if phase.load(Ordering::Relaxed) == MEASURE {
                tally.record(ok.is_ok(), ended - began);
            }
        }
        tally
    });
    report(tally, secs, "");
}

fn bulk(args: &Args, addr: SocketAddr) {
    let size = args.size.max(1);
    stream(args, addr, vec![b'x'; size], size);
}

fn lines(args: &Args, addr: SocketAddr) {
    let one = line(args.size);
    let count = (64 * 1024usize).div_ceil(one.len());
    stream(args, addr, one.repeat(count), one.len());
}

/// N connections each writing `payload` over and over and reading back what
/// comes; a request is `unit` bytes received.
fn stream(args: &Args, addr: SocketAddr, payload: Vec<u8>, unit: usize) {
    let payload = Arc::new(payload);
    let (tally, secs) = timed(args, move |i, phase| {
        let mut tally = Tally::default();
        stagger(i);
        let Ok(stream) = connect(addr) else {
            tally.errors += 1;
            ready();
            return tally;
        };
        let mut writer = stream.try_clone().expect("clone socket");
        let mut counted = 0u64;
        let sender = {
            let payload = Arc::clone(&payload);
            thread::spawn(move || {
                // Streams until the reader shuts the socket down, which
                // makes a pending or the next write fail.
                while writer.write_all(&payload).is_ok() {}
            })
        };
        let mut reader = stream;
        let mut buf = vec![0u8; 256 * 1024];
        let mut announced = false;
        loop {
            let read = reader.read(&mut buf);
            if !announced {
                announced = true;
                ready();
            }
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    match phase.load(Ordering::Relaxed) {
                        MEASURE => counted += n as u64,
                        DONE => {
                            // Stops the writer too.
                            let _ = reader.shutdown(Shutdown::Both);
                            break;
                        }
                        _ => {}
                    }
                }
            }
        }
        let _ = sender.join();
        tally.bytes = counted;
        tally.requests = tally.bytes / unit as u64;
        tally.stalled = u64::from(counted == 0);
        tally
    });
    report(tally, secs, &format!(",\"chunk\":{unit}"));
}

/// `idle`, or with `framed` its length-prefixed variant.
fn idle(args: &Args, addr: SocketAddr, framed: bool) {
    let msg = if framed {
        framed_message(args.size)
    } else {
        line(args.size)
    };
    let mut held = Vec::with_capacity(args.conns);
    let mut errors = 0u64;
    let began = Instant::now();
    let mut reply = Vec::new();
    for _ in 0..args.conns {
        let ok = connect(addr).and_then(|mut writer| {
            writer.set_read_timeout(Some(Duration::from_secs(2)))?;
            if framed {
                framed_round_trip(&mut writer, &msg, &mut reply)?;
            } else {
                let mut reader = BufReader::new(writer.try_clone()?);
                round_trip(&mut writer, &mut reader, &msg, &mut reply)?;
            }
            Ok(writer)
        });
        match ok {
            Ok(stream) => held.push(stream),
            Err(_) => errors += 1,
        }
        // A server that leaves connections unanswered would take hours.
        if errors >= 10 {
            break;
        }
    }
    let secs = began.elapsed().as_secs_f64();
    say(&format!(
        "RESULT {{\"held\":{},\"errors\":{},\"secs\":{:.3}}}",
        held.len(),
        errors,
        secs
    ));
    say("HELD");
    // Hold until standard input closes, or at most --hold seconds.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(Duration::from_secs_f64(args.hold));
    drop(held);
}

/// A connect in a burst gives up after this long (a server with a short
/// listen backlog makes clients retry their SYN after 1, 3, 7, 15 s...).
const BURST_TIMEOUT: Duration = Duration::from_secs(10);

fn burst(args: &Args, addr: SocketAddr) {
    let msg = Arc::new(line(args.size));
    let mut tally = Tally::default();
    for round in 0..args.rounds.max(1) {
        if round > 0 {
            thread::sleep(Duration::from_millis(200));
        }
        let barrier = Arc::new(Barrier::new(args.conns + 1));
        let handles: Vec<_> = (0..args.conns)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                let msg = Arc::clone(&msg);
                thread::spawn(move || {
                    barrier.wait();
                    let began = Instant::now();
                    let mut reply = Vec::new();
                    let stream = TcpStream::connect_timeout(&addr, BURST_TIMEOUT);
                    let ok = stream.and_then(|mut writer| {
                        writer.set_nodelay(true)?;
                        writer.set_read_timeout(Some(BURST_TIMEOUT))?;
                        let mut reader = BufReader::new(writer.try_clone()?);
                        round_trip(&mut writer, &mut reader, &msg, &mut reply)
                    });
                    (ok.is_ok(), began.elapsed())
                })
            })
            .collect();
        barrier.wait();
        for handle in handles {
            // A client that gave up counts with the time it waited.
            match handle.join() {
                Ok((ok, took)) => {
                    if ok {
                        tally.requests += 1;
                    } else {
                        tally.errors += 1;
                    }
                    tally.latencies_ns.push(took.as_nanos() as u64);
                }
                Err(_) => tally.errors += 1,
            }
        }
    }
    report(tally, 1.0, &format!(",\"rounds\":{}", args.rounds.max(1)));
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let Some(command) = argv.get(1) else {
        fail("usage: loadgen keepalive|connper|udp|bulk|lines|idle|burst|framed|framed-idle|paced --port N [options]");
    };
    let args = parse_args(&argv[2..]);
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    match command.as_str() {
        "keepalive" => keepalive(&args, addr),
        "connper" => connper(&args, addr),
        "udp" => udp(&args, addr),
        "bulk" => bulk(&args, addr),
        "lines" => lines(&args, addr),
        "idle" => idle(&args, addr, false),
        "framed-idle" => idle(&args, addr, true),
        "burst" => burst(&args, addr),
        "framed" => framed(&args, addr),
        "paced" => {
            if args.rate <= 0.0 {
                fail("paced needs --rate R (requests per second over all connections)");
            }
            keepalive(&args, addr)
        }
        other => fail(&format!("unknown command {other}")),
    }
}
