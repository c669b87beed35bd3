//! Socket creation and options (socket2), accept and recvfrom on borrowed
//! descriptors, and socket addresses turned into the objects Python's socket
//! module returns for them.

use std::io;
use std::mem::MaybeUninit;

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use socket2::SockAddr;

use crate::errors::os_error;
use crate::sys::{self, with_socket, RawSock};

/// Set SO_REUSEADDR / SO_REUSEPORT on a socket before it is bound.
#[pyfunction]
pub fn set_reuse(fd: RawSock, address: bool, port: bool) -> PyResult<()> {
    with_socket(fd, |socket| {
        if address {
            socket.set_reuse_address(true)?;
        }
        if port {
            sys::set_reuse_port(socket)?;
        }
        Ok(())
    })
    .map_err(os_error)
}

/// Accept one connection (close-on-exec, blocking, like Python's accept());
/// `nodelay` sets TCP_NODELAY on it.
pub fn accept(fd: RawSock, nodelay: bool) -> io::Result<(RawSock, SockAddr)> {
    let (socket, address) = with_socket(fd, |listener| listener.accept())?;
    if nodelay {
        // Only a latency matter: a failure leaves the connection usable.
        let _ = socket.set_tcp_nodelay(true);
    }
    Ok((sys::into_raw(socket), address))
}

/// Receive one datagram without blocking; its length and sender.
pub fn recv_from(fd: RawSock, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, SockAddr)> {
    sys::recv_from(fd, buf, sys::MSG_DONTWAIT)
}

/// The Python form of a socket address, exactly as `socket.accept()` and
/// `socket.recvfrom()` build it.
pub fn address_to_py<'py>(py: Python<'py>, address: &SockAddr) -> PyResult<Bound<'py, PyAny>> {
    if address.len() == 0 {
        return Ok(py.None().into_bound(py));
    }
    if let Some(v4) = address.as_socket_ipv4() {
        return Ok((v4.ip().to_string(), v4.port())
            .into_pyobject(py)?
            .into_any());
    }
    if let Some(v6) = address.as_socket_ipv6() {
        let host = sys::numeric_host(address)
            .map_err(|rc| PyOSError::new_err(format!("getnameinfo failed ({rc})")))?;
        // socket2 leaves the flow label in network byte order.
        return Ok(
            (host, v6.port(), u32::from_be(v6.flowinfo()), v6.scope_id())
                .into_pyobject(py)?
                .into_any(),
        );
    }
    if let Some(path) = sys::unix_path(address) {
        if !path.is_empty() && path[0] == 0 {
            return Ok(PyBytes::new(py, path).into_any());
        }
        let end = memchr::memchr(0, path).unwrap_or(path.len());
        return fs_decode(py, &path[..end]);
    }
    Err(PyOSError::new_err(format!(
        "unsupported address family {}",
        i32::from(address.family())
    )))
}

/// `os.fsdecode` of a path, as Python decodes AF_UNIX addresses.
fn fs_decode<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the pointer and length describe a live slice; the result is a
    // new reference or NULL with an exception set.
    unsafe {
        let ptr = pyo3::ffi::PyUnicode_DecodeFSDefaultAndSize(
            bytes.as_ptr().cast(),
            bytes.len() as pyo3::ffi::Py_ssize_t,
        );
        Ok(Bound::from_owned_ptr_or_err(py, ptr)?
            .cast_into::<PyString>()?
            .into_any())
    }
}

/// `(family, type, proto)` of a Python socket, as `wrap_socket` takes them.
pub fn socket_kind(socket: &Bound<'_, PyAny>) -> PyResult<Py<PyTuple>> {
    let py = socket.py();
    Ok(PyTuple::new(
        py,
        [
            socket.getattr(intern!(py, "family"))?,
            socket.getattr(intern!(py, "type"))?,
            socket.getattr(intern!(py, "proto"))?,
        ],
    )?
    .unbind())
}

/// A new `socket.socket` of the listener's family, type and protocol owning
/// `fd`; on failure the descriptor is closed, so nothing leaks.
pub fn wrap_socket<'py>(
    socket_class: &Bound<'py, PyAny>,
    kind: &Bound<'py, PyTuple>,
    fd: RawSock,
) -> PyResult<Bound<'py, PyAny>> {
    let (family, sock_type, proto) = (kind.get_item(0)?, kind.get_item(1)?, kind.get_item(2)?);
    match crate::pycall::call(socket_class, (family, sock_type, proto, fd)) {
        Ok(sock) => Ok(sock),
        Err(err) => {
            // SAFETY: fd was just accepted and nothing else owns it yet;
            // dropping its owner closes it.
            drop(unsafe { sys::own(fd) });
            Err(err)
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_reuse, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;
    use std::net::{SocketAddr, TcpStream, UdpSocket};

    use socket2::{Domain, Socket, Type};

    use super::{accept, recv_from};
    use crate::sys::{as_raw, own, with_socket};

    #[test]
    fn accept_hands_over_a_connection_with_tcp_nodelay() {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(8).unwrap();
        let address = listener.local_addr().unwrap().as_socket().unwrap();
        let client = TcpStream::connect(address).unwrap();
        let (fd, peer) = accept(as_raw(&listener), true).unwrap();
        assert_eq!(peer.as_socket().unwrap(), client.local_addr().unwrap());
        assert!(with_socket(fd, |conn| conn.tcp_nodelay()).unwrap());
        // SAFETY: the descriptor was accepted above and is owned here.
        drop(unsafe { own(fd) });
    }

    #[test]
    fn recv_from_reports_the_sender_and_never_blocks() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buffer = [MaybeUninit::<u8>::uninit(); 16];
        let err = recv_from(as_raw(&server), &mut buffer).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        client
            .send_to(b"ping", server.local_addr().unwrap())
            .unwrap();
        let (len, sender) = recv_from(as_raw(&server), &mut buffer).unwrap();
        assert_eq!(len, 4);
        assert_eq!(sender.as_socket().unwrap(), client.local_addr().unwrap());
    }
}
