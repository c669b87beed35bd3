//! What no crate offers on Windows: WSAPoll on a few sockets, a
//! non-blocking receive or send on a socket of any mode (Winsock has no
//! MSG_DONTWAIT), the IPv6 host as getnameinfo writes it, a connected
//! socket pair over the loopback (Windows has no socketpair), and the flag
//! and error values.  Built and cross-checked; not run on Windows itself.

use std::ffi::{c_int, c_void, CStr};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::windows::io::{
    AsRawSocket, BorrowedSocket, FromRawSocket, IntoRawSocket, OwnedSocket, RawSocket,
};
use std::ptr::NonNull;
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use windows_sys::Win32::Networking::WinSock;

/// A socket's handle as the system names it.
pub type RawSock = RawSocket;
/// A socket's handle, closed when dropped.
pub type OwnedSock = OwnedSocket;

/// No socket: skipped by `poll`, as WSAPoll skips INVALID_SOCKET.
pub const NO_SOCKET: RawSock = WinSock::INVALID_SOCKET as RawSock;

/// The errno Python gives a call that would block on Windows (its
/// `BlockingIOError` is WSAEWOULDBLOCK there).
pub const EAGAIN: i32 = WinSock::WSAEWOULDBLOCK;
/// The C runtime's EBADF, which Python's `errno.EBADF` is on Windows too.
pub const EBADF: i32 = 9;

pub const MSG_PEEK: c_int = WinSock::MSG_PEEK;
/// Winsock has no such flag: this bit, unused by Winsock, asks `dontwait`
/// to check readiness first, and never reaches the system.
pub const MSG_DONTWAIT: c_int = 0x4000_0000;
/// Windows raises no signal for a peer gone away.
pub const MSG_NOSIGNAL: c_int = 0;

/// The flags to pass for a receive (`readable`) or send with `flags`: with
/// MSG_DONTWAIT, `WouldBlock` unless the socket is ready now.  A socket in
/// blocking mode that another thread drains between the check and the call
/// then blocks, as its mode says.
pub fn dontwait(sock: RawSock, flags: c_int, readable: bool) -> io::Result<c_int> {
    if flags & MSG_DONTWAIT == 0 {
        return Ok(flags);
    }
    let mut fds = [poll_fd(sock, if readable { POLLIN } else { POLLOUT })];
    poll_fds(&mut fds, 0)?;
    if fds[0].revents == 0 {
        return Err(io::Error::from_raw_os_error(EAGAIN));
    }
    Ok(flags & !MSG_DONTWAIT)
}

/// Errors accept() returns when sockets or memory run out.
pub fn is_resource_exhaustion(errno: i32) -> bool {
    matches!(errno, WinSock::WSAEMFILE | WinSock::WSAENOBUFS)
}

pub type PollFd = WinSock::WSAPOLLFD;
pub const POLLIN: i16 = WinSock::POLLIN;
pub const POLLOUT: i16 = WinSock::POLLOUT;
pub const POLLERR: i16 = WinSock::POLLERR;
pub const POLLHUP: i16 = WinSock::POLLHUP;
pub const POLLNVAL: i16 = WinSock::POLLNVAL;
/// What counts as readable in a reported `revents`: WSAPoll reports a peer
/// that closed as POLLHUP alone, where a receive returns the end of stream.
pub const READABLE: i16 = WinSock::POLLIN | WinSock::POLLHUP | WinSock::POLLERR;

pub fn poll_fd(sock: RawSock, events: i16) -> PollFd {
    PollFd {
        fd: sock as WinSock::SOCKET,
        events,
        revents: 0,
    }
}

/// WSAPoll over `fds` for up to `millis` (-1: no limit).  WSAPoll refuses
/// a set without a valid socket, which poll(2) waits out: so do we.
pub fn poll_fds(fds: &mut [PollFd], millis: c_int) -> io::Result<()> {
    if fds.iter().all(|fd| fd.fd == WinSock::INVALID_SOCKET) {
        match u64::try_from(millis) {
            Ok(millis) => std::thread::sleep(Duration::from_millis(millis)),
            Err(_) => loop {
                std::thread::park();
            },
        }
        return Ok(());
    }
    let count = u32::try_from(fds.len()).unwrap_or(u32::MAX);
    // SAFETY: `fds` holds `count` initialised WSAPOLLFD structures that
    // outlive the call; WSAPoll writes only their `revents`.
    let ret = unsafe { WinSock::WSAPoll(fds.as_mut_ptr(), count, millis) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `sock`, borrowed.
///
/// # Safety
/// `sock` must stay open while the borrow lives.
pub unsafe fn borrow<'a>(sock: RawSock) -> BorrowedSocket<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { BorrowedSocket::borrow_raw(sock) }
}

pub fn as_raw(socket: &impl AsRawSocket) -> RawSock {
    socket.as_raw_socket()
}

pub fn into_raw(socket: impl IntoRawSocket) -> RawSock {
    socket.into_raw_socket()
}

/// The owner of `sock`.
///
/// # Safety
/// `sock` must be open and owned by nothing else.
pub unsafe fn own(sock: RawSock) -> OwnedSock {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedSocket::from_raw_socket(sock) }
}

/// Windows has no SO_REUSEPORT (Python's socket module has no such name
/// there, so the server never asks).
pub fn set_reuse_port(_socket: &Socket) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// A connected pair of stream sockets over the loopback, as Python's
/// `socket.socketpair()` makes one on Windows: the accepted end is checked
/// to be the one that connected.
pub fn socket_pair() -> io::Result<(Socket, Socket)> {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    listener.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    listener.listen(1)?;
    let client = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    client.connect(&listener.local_addr()?)?;
    let (server, peer) = listener.accept()?;
    if peer.as_socket() != client.local_addr()?.as_socket() {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "a stranger connected to the socket pair's listener",
        ));
    }
    Ok((server, client))
}

/// The host of an IPv6 address as Python's `makeipaddr` gives it:
/// getnameinfo(NI_NUMERICHOST), with `%scope` for a link-local address.
/// `Err` holds getnameinfo's own error code.
pub fn numeric_host(address: &SockAddr) -> Result<String, c_int> {
    let mut text = [0u8; 64];
    // SAFETY: a valid sockaddr of the stated length and an output buffer of
    // the stated size.
    let rc = unsafe {
        WinSock::getnameinfo(
            address.as_ptr().cast(),
            address.len(),
            text.as_mut_ptr(),
            text.len() as u32,
            std::ptr::null_mut(),
            0,
            WinSock::NI_NUMERICHOST as i32,
        )
    };
    if rc != 0 {
        return Err(rc);
    }
    let text = CStr::from_bytes_until_nul(&text).map_err(|_| -1)?;
    Ok(text.to_string_lossy().into_owned())
}

/// Python's socket module has no AF_UNIX on Windows.
pub fn unix_path(_address: &SockAddr) -> Option<&[u8]> {
    None
}

/// Not looked up on Windows: there a thread re-entering a finalizing
/// interpreter ends with `_endthreadex`, which unwinds nothing, so
/// `detach` has nothing to guard against.
pub fn find_symbol(_name: &CStr) -> Option<NonNull<c_void>> {
    None
}

/// Windows does not tell which thread is the main one.
pub fn on_main_thread() -> bool {
    false
}
