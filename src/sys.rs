//! The one place that calls the C library: `poll`, `epoll`, `recv` and `sendmsg` on
//! descriptors that Python owns, the parts of a socket address that socket2
//! does not give (an IPv6 host with its scope, an AF_UNIX path as the kernel
//! wrote it), the two questions `detach` asks of the process, and the errno
//! values the rest of the crate tells apart.  Everything above this module
//! speaks `io::Result`, slices and `Duration`s; what is platform-specific
//! stays here.

use std::ffi::{c_void, CStr};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_short};
use std::os::unix::io::RawFd;
use std::ptr::NonNull;
use std::time::Duration;

use socket2::SockAddr;

pub use libc::{EAGAIN, EBADF};

/// Flags of a receive or a send.
pub type MsgFlags = c_int;

/// Return what a receive would, leaving it in the socket.
pub const MSG_PEEK: MsgFlags = libc::MSG_PEEK;
/// Do not block, whatever the descriptor's own mode.
pub const MSG_DONTWAIT: MsgFlags = libc::MSG_DONTWAIT;

/// Errors accept() returns when descriptors or memory run out, which the
/// listener stays readable through.
pub fn is_resource_exhaustion(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

/// What to wait for on a descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Interest {
    Readable,
    Writable,
}

impl Interest {
    fn events(self) -> c_short {
        match self {
            Interest::Readable => libc::POLLIN,
            Interest::Writable => libc::POLLOUT,
        }
    }
}

/// What poll(2) reported for one descriptor.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Readiness(c_short);

impl Readiness {
    /// Nothing happened: the wait timed out (or the descriptor was not asked).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn is_readable(self) -> bool {
        self.0 & libc::POLLIN != 0
    }

    /// The descriptor is not open (POLLNVAL).
    pub fn is_invalid(self) -> bool {
        self.0 & libc::POLLNVAL != 0
    }
}

/// Milliseconds for poll(2): rounded up, so that a wait never ends before
/// its time, and capped; `None` waits without limit.
fn poll_millis(timeout: Option<Duration>) -> c_int {
    match timeout {
        None => -1,
        Some(left) => c_int::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX),
    }
}

/// Waits until one of `fds` is ready for what is asked of it, or `timeout`
/// passes (`None`: no limit); what each reported, in the same order.  A
/// negative descriptor is skipped, as poll(2) does.
pub fn poll<const N: usize>(
    fds: [(RawFd, Interest); N],
    timeout: Option<Duration>,
) -> io::Result<[Readiness; N]> {
    let mut pollfds = fds.map(|(fd, interest)| libc::pollfd {
        fd,
        events: interest.events(),
        revents: 0,
    });
    let count = libc::nfds_t::try_from(N).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `pollfds` is an array of `N` initialised pollfd structures that
    // outlives the call; poll(2) writes only their `revents`.
    let ret = unsafe { libc::poll(pollfds.as_mut_ptr(), count, poll_millis(timeout)) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pollfds.map(|pfd| Readiness(pfd.revents)))
}

/// One descriptor's readiness as reported by a `Poller`: the token it was
/// registered with, and what it is ready for.  An error or a hang-up counts
/// as both, so that the next read or write reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PollEvent {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
}

/// Readiness of many descriptors at once, level-triggered: epoll on Linux,
/// poll(2) over a registration table elsewhere.  Registrations may change
/// from any thread while another waits; the change applies to that wait.
#[cfg(target_os = "linux")]
pub type Poller = Epoll;
#[cfg(not(target_os = "linux"))]
pub type Poller = PollSet;

/// Most events taken from the kernel per wait.
const POLL_BATCH: usize = 1024;

#[cfg(target_os = "linux")]
pub struct Epoll {
    epfd: std::os::fd::OwnedFd,
}

#[cfg(target_os = "linux")]
impl Epoll {
    pub fn new() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: a plain system call; on success we own the new descriptor.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(Self {
            epfd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    fn ctl(&self, op: c_int, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut events = 0;
        if read {
            events |= libc::EPOLLIN;
        }
        if write {
            events |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the call (ignored by DEL).
        let ret = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watch `fd` for reading and/or writing, reported as `token`.
    pub fn add(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, read, write)
    }

    /// Change what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, read, write)
    }

    /// Stop watching `fd` (before it is closed).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, false, false)
    }

    /// Wait up to `timeout` (None: no limit) and append what is ready to
    /// `events`.  EINTR comes back as an `Interrupted` error.
    pub fn wait(&self, events: &mut Vec<PollEvent>, timeout: Option<Duration>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; POLL_BATCH];
        // SAFETY: `raw` holds POLL_BATCH entries that the kernel may write.
        let ret = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                raw.as_mut_ptr(),
                POLL_BATCH as c_int,
                poll_millis(timeout),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let trouble = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        for event in &raw[..ret as usize] {
            let bits = event.events;
            events.push(PollEvent {
                token: event.u64,
                readable: bits & (libc::EPOLLIN as u32 | trouble) != 0,
                writable: bits & (libc::EPOLLOUT as u32 | trouble) != 0,
            });
        }
        Ok(())
    }
}

/// The portable `Poller`: a table of registrations and poll(2) over it,
/// with a socket pair that restarts a wait when the table changes.
/// (Built on Linux too, for its tests.)
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub struct PollSet {
    table: crate::locks::Lock<std::collections::HashMap<RawFd, (u64, c_short)>>,
    wake: (socket2::Socket, socket2::Socket),
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
impl PollSet {
    pub fn new() -> io::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let (reader, writer) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok(Self {
            table: crate::locks::Lock::new(std::collections::HashMap::new()),
            wake: (reader, writer),
        })
    }

    fn set(&self, fd: RawFd, entry: Option<(u64, c_short)>) {
        let mut table = self.table.lock();
        match entry {
            Some(entry) => table.insert(fd, entry),
            None => table.remove(&fd),
        };
        drop(table);
        // A full pipe already holds a wake-up.
        let _ = self.wake.1.send(&[1]);
    }

    fn events(read: bool, write: bool) -> c_short {
        (if read { libc::POLLIN } else { 0 }) | (if write { libc::POLLOUT } else { 0 })
    }

    pub fn add(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.set(fd, Some((token, Self::events(read, write))));
        Ok(())
    }

    pub fn modify(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.add(fd, token, read, write)
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.set(fd, None);
        Ok(())
    }

    pub fn wait(&self, events: &mut Vec<PollEvent>, timeout: Option<Duration>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let wake_fd = self.wake.0.as_raw_fd();
        let (mut pollfds, tokens): (Vec<libc::pollfd>, Vec<u64>) = {
            let table = self.table.lock();
            table
                .iter()
                .filter(|(_, &(_, interest))| interest != 0)
                .map(|(&fd, &(token, interest))| {
                    let pfd = libc::pollfd {
                        fd,
                        events: interest,
                        revents: 0,
                    };
                    (pfd, token)
                })
                .unzip()
        };
        pollfds.push(libc::pollfd {
            fd: wake_fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let count = libc::nfds_t::try_from(pollfds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `pollfds` holds `count` initialised entries for the call.
        let ret = unsafe { libc::poll(pollfds.as_mut_ptr(), count, poll_millis(timeout)) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let trouble = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
        for (pfd, &token) in pollfds.iter().zip(&tokens) {
            if pfd.revents != 0 {
                events.push(PollEvent {
                    token,
                    readable: pfd.revents & (libc::POLLIN | trouble) != 0,
                    writable: pfd.revents & (libc::POLLOUT | trouble) != 0,
                });
            }
        }
        let mut sink = [MaybeUninit::<u8>::uninit(); 64];
        while matches!(recv(wake_fd, &mut sink, MSG_DONTWAIT), Ok(n) if n > 0) {}
        Ok(())
    }
}

/// Whether `fd` is readable right now.
pub fn readable_now(fd: RawFd) -> bool {
    matches!(
        poll([(fd, Interest::Readable)], Some(Duration::ZERO)),
        Ok([ready]) if ready.is_readable()
    )
}

fn result_of(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// One recv(2) into `buf`: how many bytes arrived (0 at end of stream).
/// The first that many bytes of `buf` are then initialised.
pub fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>], flags: MsgFlags) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call, and recv(2) writes nothing beyond that length.
    let ret = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    };
    result_of(ret).map(|n| n.min(buf.len()))
}

/// One sendmsg(2) of `bufs` gathered, without SIGPIPE: how many bytes left.
pub fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>], flags: MsgFlags) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is a valid one (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed to be ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len() as _;
    // SAFETY: every iovec points to bytes borrowed for the whole call, which
    // sendmsg(2) only reads.
    let ret = unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) };
    result_of(ret)
}

/// The host of an IPv6 address as Python's `makeipaddr` gives it:
/// getnameinfo(NI_NUMERICHOST), which also appends `%scope` to a link-local
/// address.  `Err` holds getnameinfo's own error code.
pub fn numeric_host(address: &SockAddr) -> Result<String, c_int> {
    let mut text = [0 as libc::c_char; 64];
    // SAFETY: a valid sockaddr of the stated length and an output buffer of
    // the stated size.
    let rc = unsafe {
        libc::getnameinfo(
            address.as_ptr().cast(),
            address.len(),
            text.as_mut_ptr(),
            text.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NUMERICHOST,
        )
    };
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: getnameinfo NUL-terminates its output on success.
    Ok(unsafe { CStr::from_ptr(text.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}

/// The bytes of an AF_UNIX address's `sun_path` that its length covers
/// (empty for an unnamed socket); `None` for another family.
pub fn unix_path(address: &SockAddr) -> Option<&[u8]> {
    if !address.is_unix() {
        return None;
    }
    let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = (address.len() as usize).saturating_sub(offset);
    let raw = address.as_ptr().cast::<u8>();
    // SAFETY: the family says the storage holds a sockaddr_un, and the
    // address's length covers (and the storage holds) `len` bytes of its
    // path, borrowed with `address`.
    Some(unsafe { std::slice::from_raw_parts(raw.add(offset), len) })
}

/// The address of a symbol of the running process, if it has one.
pub fn find_symbol(name: &CStr) -> Option<NonNull<c_void>> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the name up.
    NonNull::new(unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) })
}

/// Whether the calling thread is the process's main thread (false where
/// that cannot be told).
#[cfg(target_os = "linux")]
pub fn on_main_thread() -> bool {
    // SAFETY: plain system calls without arguments.
    unsafe { libc::gettid() == libc::getpid() }
}

#[cfg(target_os = "macos")]
pub fn on_main_thread() -> bool {
    // SAFETY: no arguments; always safe.
    unsafe { libc::pthread_main_np() != 0 }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn on_main_thread() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    use socket2::{Domain, Socket, Type};

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
    fn poll_reports_each_descriptor_apart() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let (c, d) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let fds = [
            (a.as_raw_fd(), Interest::Readable),
            (c.as_raw_fd(), Interest::Readable),
        ];
        let [x, y] = poll(fds, Some(Duration::ZERO)).unwrap();
        assert!(x.is_empty() && y.is_empty());
        d.send(b"x").unwrap();
        let [x, y] = poll(fds, Some(Duration::ZERO)).unwrap();
        assert!(x.is_empty() && y.is_readable());
        b.send(b"x").unwrap();
        assert!(readable_now(a.as_raw_fd()));
        let [w] = poll([(a.as_raw_fd(), Interest::Writable)], None).unwrap();
        assert!(!w.is_empty());
    }

    #[test]
    fn poll_skips_negative_descriptors_and_waits_out_its_timeout() {
        let (a, _b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let started = Instant::now();
        let fds = [
            (a.as_raw_fd(), Interest::Readable),
            (-1, Interest::Readable),
        ];
        let [x, y] = poll(fds, Some(Duration::from_millis(30))).unwrap();
        assert!(x.is_empty() && y.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn recv_and_send_vectored_move_bytes() {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let parts = [
            IoSlice::new(b"head"),
            IoSlice::new(b""),
            IoSlice::new(b"body"),
        ];
        assert_eq!(send_vectored(a.as_raw_fd(), &parts, 0).unwrap(), 8);
        let mut buf = [MaybeUninit::<u8>::uninit(); 16];
        let peeked = recv(b.as_raw_fd(), &mut buf, MSG_PEEK).unwrap();
        assert_eq!(peeked, 8);
        let got = recv(b.as_raw_fd(), &mut buf[..5], 0).unwrap();
        assert_eq!(got, 5);
        let err = recv(b.as_raw_fd(), &mut buf[..0], MSG_DONTWAIT);
        assert_eq!(err.unwrap(), 0);
        drop(a);
        let mut rest = [MaybeUninit::<u8>::uninit(); 16];
        assert_eq!(recv(b.as_raw_fd(), &mut rest, 0).unwrap(), 3);
        assert_eq!(recv(b.as_raw_fd(), &mut rest, 0).unwrap(), 0);
    }

    #[test]
    fn recv_would_block_without_data() {
        let (_a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let mut buf = [MaybeUninit::<u8>::uninit(); 4];
        let err = recv(b.as_raw_fd(), &mut buf, MSG_DONTWAIT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    fn pollers_report_tokens<P>(
        poller: P,
        add: impl Fn(&P, RawFd, u64, bool, bool),
        wait: impl Fn(&P, &mut Vec<PollEvent>),
    ) {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        add(&poller, a.as_raw_fd(), 7, true, false);
        let mut events = Vec::new();
        wait(&poller, &mut events);
        assert!(events.is_empty(), "{events:?}");
        b.send(b"x").unwrap();
        wait(&poller, &mut events);
        assert_eq!(
            events,
            [PollEvent {
                token: 7,
                readable: true,
                writable: false
            }]
        );
        events.clear();
        add(&poller, b.as_raw_fd(), 9, false, true);
        wait(&poller, &mut events);
        events.sort_by_key(|event| event.token);
        assert_eq!(events.len(), 2);
        assert!(events[1].token == 9 && events[1].writable && !events[1].readable);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn epoll_reports_tokens_and_forgets_deleted_descriptors() {
        let poller = Epoll::new().unwrap();
        pollers_report_tokens(
            poller,
            |p, fd, token, read, write| p.add(fd, token, read, write).unwrap(),
            |p, events| p.wait(events, Some(Duration::from_millis(10))).unwrap(),
        );
        let poller = Epoll::new().unwrap();
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        poller.add(a.as_raw_fd(), 1, true, false).unwrap();
        b.send(b"x").unwrap();
        poller.modify(a.as_raw_fd(), 1, false, false).unwrap();
        let mut events = Vec::new();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
        poller.delete(a.as_raw_fd()).unwrap();
        assert!(poller.delete(a.as_raw_fd()).is_err());
    }

    #[test]
    fn poll_set_reports_tokens_and_wakes_on_changes() {
        let poller = PollSet::new().unwrap();
        pollers_report_tokens(
            poller,
            |p, fd, token, read, write| p.add(fd, token, read, write).unwrap(),
            |p, events| p.wait(events, Some(Duration::from_millis(10))).unwrap(),
        );
        let poller = std::sync::Arc::new(PollSet::new().unwrap());
        let (a, _b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let fd = a.as_raw_fd();
        let changer = {
            let poller = poller.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                poller.add(fd, 3, false, true).unwrap();
            })
        };
        let started = Instant::now();
        let mut events = Vec::new();
        while events.is_empty() {
            poller
                .wait(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(events[0].token, 3);
        changer.join().unwrap();
    }

    #[test]
    fn addresses() {
        let v6: std::net::SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(numeric_host(&SockAddr::from(v6)).unwrap(), "::1");
        assert_eq!(unix_path(&SockAddr::from(v6)), None);
        let path = SockAddr::unix("/tmp/x.sock").unwrap();
        assert_eq!(
            unix_path(&path).unwrap().split(|&b| b == 0).next(),
            Some(&b"/tmp/x.sock"[..])
        );
    }

    #[test]
    fn process_questions() {
        assert!(find_symbol(c"malloc").is_some());
        assert!(find_symbol(c"no_such_symbol_here").is_none());
        assert!(!std::thread::spawn(on_main_thread).join().unwrap());
    }

    #[test]
    fn only_resource_errors_count_as_exhaustion() {
        assert!(is_resource_exhaustion(libc::EMFILE));
        assert!(is_resource_exhaustion(libc::ENFILE));
        assert!(!is_resource_exhaustion(libc::ECONNABORTED));
        assert!(!is_resource_exhaustion(libc::EAGAIN));
    }
}
