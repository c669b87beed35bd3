//! The system layer: everything above it speaks `io::Result`, slices,
//! `Duration`s and `RawSock` (a descriptor on Unix, a SOCKET on Windows).
//! Receives and sends go through socket2 on sockets that Python owns,
//! readiness of many sockets through the `polling` crate (`poller.rs`);
//! what no crate offers stays behind `#[cfg]` in one module per system,
//! `unix.rs` and `windows.rs`.

use std::ffi::c_int;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::time::Duration;

use socket2::{SockAddr, SockRef, Socket};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as os;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as os;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
mod poll_set;
mod poller;

pub use os::{
    as_raw, borrow, find_symbol, into_raw, is_resource_exhaustion, numeric_host, on_main_thread,
    own, set_reuse_port, socket_pair, unix_path, OwnedSock, RawSock, EAGAIN, EBADF, MSG_DONTWAIT,
    MSG_PEEK, NO_SOCKET,
};
pub use poller::{PollEvent, Poller};

/// Flags of a receive or a send.
pub type MsgFlags = c_int;

/// What to wait for on a socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Interest {
    Readable,
    Writable,
}

impl Interest {
    fn events(self) -> i16 {
        match self {
            Interest::Readable => os::POLLIN,
            Interest::Writable => os::POLLOUT,
        }
    }
}

/// What poll reported for one socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Readiness(i16);

impl Readiness {
    /// Nothing happened: the wait timed out (or the socket was not asked).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_readable(self) -> bool {
        self.0 & os::READABLE != 0
    }

    /// The socket is not open (POLLNVAL).
    pub fn is_invalid(self) -> bool {
        self.0 & os::POLLNVAL != 0
    }
}

/// Milliseconds for poll: rounded up, so that a wait never ends before its
/// time, and capped; `None` waits without limit.
fn poll_millis(timeout: Option<Duration>) -> c_int {
    match timeout {
        None => -1,
        Some(left) => c_int::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX),
    }
}

/// Waits until one of `socks` is ready for what is asked of it, or `timeout`
/// passes (`None`: no limit); what each reported, in the same order.
/// `NO_SOCKET` is skipped.
pub fn poll<const N: usize>(
    socks: [(RawSock, Interest); N],
    timeout: Option<Duration>,
) -> io::Result<[Readiness; N]> {
    let mut fds = socks.map(|(sock, interest)| os::poll_fd(sock, interest.events()));
    os::poll_fds(&mut fds, poll_millis(timeout))?;
    Ok(fds.map(|fd| Readiness(fd.revents)))
}

/// Whether `sock` is readable right now.
pub fn readable_now(sock: RawSock) -> bool {
    matches!(
        poll([(sock, Interest::Readable)], Some(Duration::ZERO)),
        Ok([ready]) if ready.is_readable()
    )
}

/// Run `f` on a socket that someone else owns (Python), without ever
/// closing it.
pub fn with_socket<T>(sock: RawSock, f: impl FnOnce(&Socket) -> T) -> T {
    // SAFETY: callers pass sockets that their owner keeps open for the call.
    let borrowed = unsafe { borrow(sock) };
    f(&SockRef::from(&borrowed))
}

/// One receive into `buf`: how many bytes arrived (0 at end of stream).
/// The first that many bytes of `buf` are then initialised.
pub fn recv(sock: RawSock, buf: &mut [MaybeUninit<u8>], flags: MsgFlags) -> io::Result<usize> {
    let flags = os::dontwait(sock, flags, true)? | os::MSG_NOSIGNAL;
    with_socket(sock, |socket| socket.recv_with_flags(buf, flags)).map(|n| n.min(buf.len()))
}

/// One receive of a datagram: its length and sender.
pub fn recv_from(
    sock: RawSock,
    buf: &mut [MaybeUninit<u8>],
    flags: MsgFlags,
) -> io::Result<(usize, SockAddr)> {
    let flags = os::dontwait(sock, flags, true)?;
    with_socket(sock, |socket| socket.recv_from_with_flags(buf, flags))
}

/// One send of `bufs` gathered, without SIGPIPE: how many bytes left.
/// One non-empty buffer (a plain write) goes by `send`, which the kernel
/// takes with less work than a `sendmsg` of an I/O vector.
pub fn send_vectored(sock: RawSock, bufs: &[IoSlice<'_>], flags: MsgFlags) -> io::Result<usize> {
    let flags = os::dontwait(sock, flags, false)? | os::MSG_NOSIGNAL;
    let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
    match (filled.next(), filled.next()) {
        (Some(only), None) => with_socket(sock, |socket| socket.send_with_flags(only, flags)),
        _ => with_socket(sock, |socket| socket.send_vectored_with_flags(bufs, flags)),
    }
}

/// The socket of a Python `fileno()`, None for a closed one (-1).
pub fn from_fileno(fileno: i64) -> Option<RawSock> {
    if fileno < 0 {
        return None;
    }
    RawSock::try_from(fileno).ok()
}

/// A socket as Python's `fileno()` gives it.
pub fn to_fileno(sock: RawSock) -> i64 {
    // A Windows SOCKET is a handle that fits, as Python gives it.
    sock as i64
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn millis_round_up_and_cap() {
        assert_eq!(poll_millis(None), -1);
        assert_eq!(poll_millis(Some(Duration::ZERO)), 0);
        assert_eq!(poll_millis(Some(Duration::from_nanos(1))), 1);
        assert_eq!(poll_millis(Some(Duration::from_micros(1500))), 2);
        assert_eq!(poll_millis(Some(Duration::from_secs(u64::MAX))), c_int::MAX);
    }

    #[test]
    fn poll_reports_each_socket_apart() {
        let (a, b) = socket_pair().unwrap();
        let (c, d) = socket_pair().unwrap();
        let socks = [
            (as_raw(&a), Interest::Readable),
            (as_raw(&c), Interest::Readable),
        ];
        let [x, y] = poll(socks, Some(Duration::ZERO)).unwrap();
        assert!(x.is_empty() && y.is_empty());
        d.send(b"x").unwrap();
        let [x, y] = poll(socks, Some(Duration::ZERO)).unwrap();
        assert!(x.is_empty() && y.is_readable());
        b.send(b"x").unwrap();
        assert!(readable_now(as_raw(&a)));
        let [w] = poll([(as_raw(&a), Interest::Writable)], None).unwrap();
        assert!(!w.is_empty());
    }

    #[test]
    fn poll_skips_no_socket_and_waits_out_its_timeout() {
        let (a, _b) = socket_pair().unwrap();
        let started = Instant::now();
        let socks = [
            (as_raw(&a), Interest::Readable),
            (NO_SOCKET, Interest::Readable),
        ];
        let [x, y] = poll(socks, Some(Duration::from_millis(30))).unwrap();
        assert!(x.is_empty() && y.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn recv_and_send_vectored_move_bytes() {
        let (a, b) = socket_pair().unwrap();
        let (a, b) = (as_raw(&a), as_raw(&b));
        let parts = [
            IoSlice::new(b"head"),
            IoSlice::new(b""),
            IoSlice::new(b"body"),
        ];
        assert_eq!(send_vectored(a, &parts, 0).unwrap(), 8);
        let mut buf = [MaybeUninit::<u8>::uninit(); 16];
        let peeked = recv(b, &mut buf, MSG_PEEK).unwrap();
        assert_eq!(peeked, 8);
        let got = recv(b, &mut buf[..5], 0).unwrap();
        assert_eq!(got, 5);
        assert_eq!(recv(b, &mut buf[..0], MSG_DONTWAIT).unwrap(), 0);
    }

    #[test]
    fn recv_reads_the_rest_then_the_end() {
        let (a, b) = socket_pair().unwrap();
        send_vectored(as_raw(&a), &[IoSlice::new(b"abc")], 0).unwrap();
        drop(a);
        let mut rest = [MaybeUninit::<u8>::uninit(); 16];
        assert_eq!(recv(as_raw(&b), &mut rest, 0).unwrap(), 3);
        assert_eq!(recv(as_raw(&b), &mut rest, 0).unwrap(), 0);
    }

    #[test]
    fn dontwait_would_block_without_data_whatever_the_mode() {
        let (a, b) = socket_pair().unwrap();
        let mut buf = [MaybeUninit::<u8>::uninit(); 4];
        let err = recv(as_raw(&b), &mut buf, MSG_DONTWAIT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let err = recv_from(as_raw(&b), &mut buf, MSG_DONTWAIT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        a.set_send_buffer_size(4096).unwrap();
        let chunk = [0u8; 65536];
        let full = loop {
            match send_vectored(as_raw(&a), &[IoSlice::new(&chunk)], MSG_DONTWAIT) {
                Ok(_) => {}
                Err(err) => break err,
            }
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn filenos() {
        assert_eq!(from_fileno(-1), None);
        assert_eq!(from_fileno(5), Some(5));
        assert_eq!(to_fileno(5), 5);
    }

    #[test]
    fn ipv6_hosts() {
        let v6: std::net::SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(numeric_host(&SockAddr::from(v6)).unwrap(), "::1");
        assert_eq!(unix_path(&SockAddr::from(v6)), None);
    }
}
