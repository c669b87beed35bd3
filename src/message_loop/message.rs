//! Read buffers kept for reuse, and the payload of a large message handed
//! to Python as it is, to become bytes on the thread that handles it.

use super::*;
use pyo3::exceptions::PyRuntimeError;

/// Read buffers of delivered messages, for the next reads: a connection
/// with nothing buffered holds none.
#[derive(Default)]
pub(super) struct SpareBuffers(Lock<Vec<Vec<u8>>>);

impl SpareBuffers {
    fn lock(&self) -> Guard<'_, Vec<Vec<u8>>> {
        self.0.lock()
    }

    /// A buffer to read into: a kept one, else a new (empty) one.
    pub(super) fn take(&self) -> Vec<u8> {
        self.lock().pop().unwrap_or_default()
    }

    /// Keep `buffer` for a later read if it is of a reusable size.
    pub(super) fn give(&self, mut buffer: Vec<u8>) {
        if !(READ_STEP..=SPARE_CAPACITY).contains(&buffer.capacity()) {
            return;
        }
        let mut spare = self.lock();
        if spare.len() < SPARE_BUFFERS {
            buffer.clear();
            spare.push(buffer);
        }
    }
}

/// A message of `LARGE_MESSAGE` bytes or more, as the loop reports it:
/// `take()` makes its bytes on the handler's thread, so that they are
/// allocated and freed there (a pool worker's own heap) rather than on the
/// serving thread, whose heap would otherwise grow and shrink with every
/// batch of large messages.
#[pyclass(frozen, module = "socketserver_rs._core")]
pub struct Message {
    payload: Lock<Option<Payload>>,
    spare: Arc<SpareBuffers>,
}

impl Message {
    pub(super) fn new(payload: Payload, spare: Arc<SpareBuffers>) -> Self {
        Self {
            payload: Lock::new(Some(payload)),
            spare,
        }
    }
}

#[pymethods]
impl Message {
    /// The payload as bytes; RuntimeError if it was taken already.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let payload = self
            .payload
            .lock()
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the message was taken already"))?;
        let bytes = PyBytes::new(py, &payload.buffer[payload.range]);
        self.spare.give(payload.buffer);
        Ok(bytes)
    }

    fn __len__(&self) -> usize {
        self.payload
            .lock()
            .as_ref()
            .map_or(0, |payload| payload.range.len())
    }
}
