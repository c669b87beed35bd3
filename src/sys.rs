//! The one place that calls the C library for I/O: `poll` on descriptors
//! that Python owns, and the errno values the rest of the crate tells apart.  Everything above this module speaks `io::Result`,
//! slices and `Duration`s; what is platform-specific stays here.

use std::io;
use std::os::raw::{c_int, c_short};
use std::os::unix::io::RawFd;
use std::time::Duration;

pub use libc::EBADF;

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

/// Whether `fd` is readable right now.
pub fn readable_now(fd: RawFd) -> bool {
    matches!(
        poll([(fd, Interest::Readable)], Some(Duration::ZERO)),
        Ok([ready]) if ready.is_readable()
    )
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
    fn only_resource_errors_count_as_exhaustion() {
        assert!(is_resource_exhaustion(libc::EMFILE));
        assert!(is_resource_exhaustion(libc::ENFILE));
        assert!(!is_resource_exhaustion(libc::ECONNABORTED));
        assert!(!is_resource_exhaustion(libc::EAGAIN));
    }
}
