//! What no crate offers on Unix: poll(2) on a few descriptors, the parts of
//! a socket address socket2 does not give (an IPv6 host with its scope, an
//! AF_UNIX path as the kernel wrote it), the two questions `detach` asks of
//! the process, a connected socket pair, and the flag and errno values.

use std::ffi::{c_int, c_short, c_void, CStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use socket2::{Domain, SockAddr, Socket, Type};

pub use libc::{EAGAIN, EBADF};

/// A socket's descriptor as the system names it.
pub type RawSock = RawFd;
/// A socket's descriptor, closed when dropped.
pub type OwnedSock = OwnedFd;

/// No socket: skipped by `poll`, as poll(2) skips a negative descriptor.
pub const NO_SOCKET: RawSock = -1;

/// Return what a receive would, leaving it in the socket.
pub const MSG_PEEK: c_int = libc::MSG_PEEK;
/// Do not block, whatever the descriptor's own mode.
pub const MSG_DONTWAIT: c_int = libc::MSG_DONTWAIT;

/// Added to every receive and send: a peer gone away is an EPIPE error, not
/// a SIGPIPE (where there is no such flag, Python ignores SIGPIPE anyway).
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
pub const MSG_NOSIGNAL: c_int = libc::MSG_NOSIGNAL;
#[cfg(any(target_os = "macos", target_os = "ios"))]
pub const MSG_NOSIGNAL: c_int = 0;

/// The flags to pass for a receive or send with `flags` that may not block
/// until `interest`: MSG_DONTWAIT does it here.
pub fn dontwait(_sock: RawSock, flags: c_int, _readable: bool) -> io::Result<c_int> {
    Ok(flags)
}

/// Errors accept() returns when descriptors or memory run out, which the
/// listener stays readable through.
pub fn is_resource_exhaustion(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

pub type PollFd = libc::pollfd;
pub const POLLIN: c_short = libc::POLLIN;
pub const POLLOUT: c_short = libc::POLLOUT;
pub const POLLERR: c_short = libc::POLLERR;
pub const POLLHUP: c_short = libc::POLLHUP;
pub const POLLNVAL: c_short = libc::POLLNVAL;
/// What counts as readable in a reported `revents`.
pub const READABLE: c_short = libc::POLLIN;

pub fn poll_fd(sock: RawSock, events: c_short) -> PollFd {
    libc::pollfd {
        fd: sock,
        events,
        revents: 0,
    }
}

/// poll(2) over `fds` for up to `millis` (-1: no limit).
pub fn poll_fds(fds: &mut [PollFd], millis: c_int) -> io::Result<()> {
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` holds `count` initialised pollfd structures that outlive
    // the call; poll(2) writes only their `revents`.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), count, millis) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `sock`, borrowed.
///
/// # Safety
/// `sock` must stay open while the borrow lives.
pub unsafe fn borrow<'a>(sock: RawSock) -> BorrowedFd<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { BorrowedFd::borrow_raw(sock) }
}

pub fn as_raw(socket: &impl AsRawFd) -> RawSock {
    socket.as_raw_fd()
}

pub fn into_raw(socket: impl IntoRawFd) -> RawSock {
    socket.into_raw_fd()
}

/// The owner of `sock`.
///
/// # Safety
/// `sock` must be open and owned by nothing else.
pub unsafe fn own(sock: RawSock) -> OwnedSock {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(sock) }
}

/// SO_REUSEPORT: sockets of one port share its connections.
pub fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

/// A connected pair of stream sockets, for wake-ups within the process.
pub fn socket_pair() -> io::Result<(Socket, Socket)> {
    Socket::pair(Domain::UNIX, Type::STREAM, None)
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
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn on_main_thread() -> bool {
    // SAFETY: plain system calls without arguments.
    unsafe { libc::gettid() == libc::getpid() }
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
pub fn on_main_thread() -> bool {
    // SAFETY: no arguments; always safe.
    unsafe { libc::pthread_main_np() != 0 }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
)))]
pub fn on_main_thread() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_errors_count_as_exhaustion() {
        assert!(is_resource_exhaustion(libc::EMFILE));
        assert!(is_resource_exhaustion(libc::ENFILE));
        assert!(!is_resource_exhaustion(libc::ECONNABORTED));
        assert!(!is_resource_exhaustion(libc::EAGAIN));
    }

    #[test]
    fn unix_paths() {
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
}
