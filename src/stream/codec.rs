//! The length-prefixed message format, without any I/O: a message is a
//! 4-byte big-endian payload length, then the payload.  This file holds
//! every rule of it: the header, the size limit and its default, how a body
//! is read in steps, and the error texts.  The Rust transport and the Python
//! fallback in `messages.py` (through the functions at the end) both use it,
//! and only move bytes themselves.

use std::fmt;

use pyo3::exceptions::{PyEOFError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Bytes in a message header.
pub const HEADER_LEN: usize = 4;

/// The longest payload accepted unless the caller says otherwise (16 MiB).
pub const DEFAULT_MAX_SIZE: usize = 16 * 1024 * 1024;

/// A body is received in steps that start at this size and double as bytes
/// arrive, so memory follows what the peer actually sent rather than the
/// length it claimed.
const BODY_STEP: usize = 64 * 1024;

/// What can be wrong with a message or with the limit it is read against.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A payload of this many bytes cannot be described by a header.
    TooLong(usize),
    /// The header announces more than the limit allows.
    Oversized { len: usize, max_size: usize },
    /// A limit below zero.
    NegativeLimit,
    /// A header of this many bytes, not `HEADER_LEN`.
    HeaderSize(usize),
    /// The peer closed after this many bytes of a header.
    TruncatedHeader(usize),
    /// The peer closed after `got` of the `len` bytes of a payload.
    TruncatedBody { got: usize, len: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::TooLong(len) => write!(
                f,
                "message of {len} bytes does not fit a 4-byte length header (at most {} bytes)",
                u32::MAX
            ),
            FrameError::Oversized { len, max_size } => {
                write!(
                    f,
                    "message length {len} exceeds max_message_size {max_size} \
                     (max_size of recv_message()); the connection cannot be read further"
                )?;
                match header_as_text(len) {
                    Some(text) => write!(
                        f,
                        ". Its 4 length bytes read as text, b'{text}': the peer is likely \
                         not sending length-prefixed messages (an HTTP request, say)"
                    ),
                    None => Ok(()),
                }
            }
            FrameError::NegativeLimit => {
                f.write_str("max_message_size (max_size) must be non-negative")
            }
            FrameError::HeaderSize(got) => {
                write!(f, "a message header is {HEADER_LEN} bytes, not {got}")
            }
            FrameError::TruncatedHeader(got) => write!(
                f,
                "connection closed in the middle of a message header \
                 (got {got} of {HEADER_LEN} bytes)"
            ),
            FrameError::TruncatedBody { got, len } => write!(
                f,
                "connection closed in the middle of a message (got {got} of {len} bytes)"
            ),
        }
    }
}

/// The header that announced `len`, as the inside of a Python bytes literal,
/// when all its bytes are printable ASCII: a peer speaking a text protocol.
fn header_as_text(len: usize) -> Option<String> {
    let header = u32::try_from(len).ok()?.to_be_bytes();
    let mut text = String::new();
    for byte in header {
        match byte {
            b'\'' | b'\\' => text.extend(['\\', char::from(byte)]),
            b'\r' => text.push_str("\\r"),
            b'\n' => text.push_str("\\n"),
            b'\t' => text.push_str("\\t"),
            0x20..=0x7e => text.push(char::from(byte)),
            _ => return None,
        }
    }
    Some(text)
}

/// A message cut short is an `EOFError` (as `asyncio.IncompleteReadError`,
/// a subclass, is); a length or limit out of bounds a `ValueError`.
impl From<FrameError> for PyErr {
    fn from(err: FrameError) -> PyErr {
        match err {
            FrameError::TruncatedHeader(_) | FrameError::TruncatedBody { .. } => {
                PyEOFError::new_err(err.to_string())
            }
            _ => PyValueError::new_err(err.to_string()),
        }
    }
}

/// A `max_size` argument: any non-negative int.
pub fn max_size_arg(max_size: i64) -> Result<usize, FrameError> {
    if max_size < 0 {
        return Err(FrameError::NegativeLimit);
    }
    Ok(usize::try_from(max_size).unwrap_or(usize::MAX))
}

/// The header for a payload of `len` bytes.
pub fn encode_header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| FrameError::TooLong(len))
}

/// The payload length `header` announces, refused when over `max_size`
/// (before any of the payload is read).  A header shorter than
/// `HEADER_LEN` is one the peer cut short.
pub fn decode_header(header: &[u8], max_size: usize) -> Result<usize, FrameError> {
    let header: [u8; HEADER_LEN] = match header.try_into() {
        Ok(header) => header,
        Err(_) if header.len() < HEADER_LEN => {
            return Err(FrameError::TruncatedHeader(header.len()))
        }
        Err(_) => return Err(FrameError::HeaderSize(header.len())),
    };
    // Lossless: usize has at least 32 bits on every supported platform.
    let len = u32::from_be_bytes(header) as usize;
    if len > max_size {
        return Err(FrameError::Oversized { len, max_size });
    }
    Ok(len)
}

/// How many bytes of a `len`-byte body to read next, `got` having arrived.
pub fn body_step(got: usize, len: usize) -> usize {
    len.saturating_sub(got).min(got.max(BODY_STEP))
}

// ---------------------------------------------------------------------------
// The same rules for the Python fallback
// ---------------------------------------------------------------------------

/// The header (4 bytes) of a payload of `length` bytes; ValueError when
/// that does not fit in 4 bytes.
#[pyfunction(name = "encode_header")]
fn py_encode_header(py: Python<'_>, length: u64) -> PyResult<Bound<'_, PyBytes>> {
    let header = encode_header(usize::try_from(length).unwrap_or(usize::MAX))?;
    Ok(PyBytes::new(py, &header))
}

/// The payload length a header announces.  EOFError when it is shorter
/// than 4 bytes (the peer closed in its middle); ValueError when the
/// length exceeds max_size or max_size is negative.
#[pyfunction(name = "decode_header")]
fn py_decode_header(header: &[u8], max_size: i64) -> PyResult<usize> {
    Ok(decode_header(header, max_size_arg(max_size)?)?)
}

/// ValueError when max_size is negative.
#[pyfunction]
fn check_max_size(max_size: i64) -> PyResult<()> {
    max_size_arg(max_size)?;
    Ok(())
}

/// How many bytes to read next of a payload of length bytes, once received
/// of them have arrived: steps that start at 64 KiB and double, so memory
/// follows what the peer sent rather than the length it claimed.
#[pyfunction]
fn body_read_size(received: usize, length: usize) -> usize {
    body_step(received, length)
}

/// The EOFError for a payload cut short after received of length bytes.
#[pyfunction]
fn truncated_body(py: Python<'_>, received: usize, length: usize) -> Bound<'_, PyAny> {
    PyErr::from(FrameError::TruncatedBody {
        got: received,
        len: length,
    })
    .into_value(py)
    .into_bound(py)
    .into_any()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DEFAULT_MAX_MESSAGE_SIZE", DEFAULT_MAX_SIZE)?;
    m.add("MESSAGE_HEADER_SIZE", HEADER_LEN)?;
    m.add_function(wrap_pyfunction!(py_encode_header, m)?)?;
    m.add_function(wrap_pyfunction!(py_decode_header, m)?)?;
    m.add_function(wrap_pyfunction!(check_max_size, m)?)?;
    m.add_function(wrap_pyfunction!(body_read_size, m)?)?;
    m.add_function(wrap_pyfunction!(truncated_body, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        for len in [0, 1, 255, 256, 4096, 5 << 20, u32::MAX as usize] {
            let header = encode_header(len).unwrap();
            assert_eq!(decode_header(&header, usize::MAX), Ok(len));
        }
    }

    #[test]
    fn header_is_big_endian() {
        assert_eq!(encode_header(0x0102_0304).unwrap(), [1, 2, 3, 4]);
        assert_eq!(decode_header(&[0, 0, 1, 0], usize::MAX), Ok(256));
        assert_eq!(decode_header(&[0xff; 4], usize::MAX), Ok(u32::MAX as usize));
    }

    #[test]
    fn header_refuses_what_does_not_fit() {
        let err = encode_header(u32::MAX as usize + 1).unwrap_err();
        assert!(err.to_string().contains("4294967296"), "{err}");
    }

    #[test]
    fn size_limit_is_inclusive_and_names_both_numbers() {
        assert_eq!(decode_header(&[0; 4], 0), Ok(0));
        assert_eq!(decode_header(&[0, 0, 0, 16], 16), Ok(16));
        let err = decode_header(&4_000_000_000u32.to_be_bytes(), 16).unwrap_err();
        assert_eq!(
            err,
            FrameError::Oversized {
                len: 4_000_000_000,
                max_size: 16
            }
        );
        let text = err.to_string();
        assert!(text.starts_with("message length 4000000000 exceeds max_message_size 16"));
        assert!(!text.contains("as text"), "{text}");
    }

    #[test]
    fn a_text_header_is_shown_as_text() {
        let err = decode_header(b"GET ", DEFAULT_MAX_SIZE).unwrap_err();
        assert!(err.to_string().ends_with(
            ". Its 4 length bytes read as text, b'GET ': the peer is likely \
             not sending length-prefixed messages (an HTTP request, say)"
        ));
        let err = decode_header(b"a'\r\n", 0).unwrap_err();
        assert!(err.to_string().contains(r"b'a\'\r\n'"), "{err}");
    }

    #[test]
    fn short_and_long_headers() {
        assert_eq!(decode_header(&[0], 10), Err(FrameError::TruncatedHeader(1)));
        assert_eq!(
            FrameError::TruncatedHeader(1).to_string(),
            "connection closed in the middle of a message header (got 1 of 4 bytes)"
        );
        assert_eq!(decode_header(&[0; 5], 10), Err(FrameError::HeaderSize(5)));
    }

    #[test]
    fn limits() {
        assert_eq!(max_size_arg(-1), Err(FrameError::NegativeLimit));
        assert_eq!(max_size_arg(0), Ok(0));
    }

    #[test]
    fn body_steps_double_up_to_the_length() {
        assert_eq!(body_step(0, 10), 10);
        assert_eq!(body_step(0, 1 << 20), BODY_STEP);
        assert_eq!(body_step(BODY_STEP, 1 << 20), BODY_STEP);
        assert_eq!(body_step(2 * BODY_STEP, 1 << 20), 2 * BODY_STEP);
        assert_eq!(body_step(1 << 19, (1 << 19) + 3), 3);
        assert_eq!(body_step(10, 10), 0);
    }
}
