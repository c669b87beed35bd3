//! One connection of the message loop: its buffers, the message being
//! assembled, the reply being written, and how it ends.

use super::*;

/// How a connection ends once nothing of it is in flight.
pub(super) enum End {
    Eof,
    /// No progress within a deadline: why.
    Expired(String),
    Frame(FrameError),
    Io(io::Error),
}

/// A message's payload: `buffer[range]`.
pub(super) struct Payload {
    pub(super) buffer: Vec<u8>,
    pub(super) range: std::ops::Range<usize>,
}

pub(super) struct Conn {
    /// The descriptor of the connection's Python socket, which Python
    /// keeps open while the loop knows the connection (see `MessageLoop`).
    pub(super) fd: RawSock,
    /// Bytes received and not yet delivered: `input[start..]`.
    pub(super) input: Vec<u8>,
    pub(super) start: usize,
    /// Reply bytes not yet sent: `output[sent..]`.
    pub(super) output: Vec<u8>,
    pub(super) sent: usize,
    /// A message is with its handler.
    pub(super) busy: bool,
    pub(super) end: Option<End>,
    /// What the poller currently watches the descriptor for.
    pub(super) watching: (bool, bool),
    /// The handler ended the connection: it closes once its reply is out,
    /// and nothing more is read or delivered.
    pub(super) hangup: bool,
    /// When bytes last moved, or the handler last finished a message.
    pub(super) progress: Instant,
}

impl Conn {
    pub(super) fn unread(&self) -> &[u8] {
        &self.input[self.start..]
    }

    pub(super) fn unsent(&self) -> bool {
        self.sent < self.output.len()
    }

    /// The length of the next message if it is all buffered; an error if
    /// its header is refused.
    fn complete_frame(&self, max_size: usize) -> Result<Option<usize>, FrameError> {
        let unread = self.unread();
        if unread.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = decode_header(&unread[..HEADER_LEN], max_size)?;
        Ok((unread.len() >= HEADER_LEN + len).then_some(len))
    }

    /// The next complete message, if one is buffered, as `buffer[range]`;
    /// an error if the next header is refused.
    pub(super) fn next_frame(&mut self, max_size: usize) -> Result<Option<Payload>, FrameError> {
        let Some(len) = self.complete_frame(max_size)? else {
            return Ok(None);
        };
        let begin = self.start + HEADER_LEN;
        let end = begin + len;
        if end == self.input.len() {
            // It ends what was received: the buffer itself goes, uncopied.
            self.start = 0;
            let buffer = std::mem::take(&mut self.input);
            return Ok(Some(Payload {
                buffer,
                range: begin..end,
            }));
        }
        self.start = end;
        let buffer = self.input[begin..end].to_vec();
        Ok(Some(Payload {
            buffer,
            range: 0..len,
        }))
    }

    /// How many bytes to read next: the rest of the message being
    /// assembled (in steps that grow with what arrived, so memory follows
    /// what the peer sent rather than the length it claimed), else a step.
    pub(super) fn read_size(&self, max_size: usize) -> usize {
        let unread = self.unread();
        if unread.len() >= HEADER_LEN {
            if let Ok(len) = decode_header(&unread[..HEADER_LEN], max_size) {
                let missing = (HEADER_LEN + len).saturating_sub(unread.len());
                return missing.clamp(1, unread.len().max(READ_STEP));
            }
        }
        READ_STEP
    }

    /// Read without blocking until a message is complete, the socket is
    /// empty, or it ends. A connection with nothing buffered holds no
    /// buffer: it takes one from `spare` (or a new one) to read into.
    pub(super) fn read(&mut self, max_size: usize, spare: &SpareBuffers) -> usize {
        let mut got = 0;
        if self.input.capacity() == 0 {
            self.input = spare.take();
        }
        loop {
            if self.has_frame(max_size) {
                return got;
            }
            if self.start > 0 && self.start * 2 >= self.input.len() {
                self.input.drain(..self.start);
                self.start = 0;
            }
            self.input.reserve(self.read_size(max_size));
            // All the room there is: it is allocated already.
            let fd = self.fd;
            let room = self.input.spare_capacity_mut();
            match sys::recv(fd, room, MSG_DONTWAIT) {
                Ok(0) => {
                    self.end = Some(match self.unread().len() {
                        0 => End::Eof,
                        n if n < HEADER_LEN => End::Frame(FrameError::TruncatedHeader(n)),
                        n => End::Frame(FrameError::TruncatedBody {
                            got: n - HEADER_LEN,
                            len: decode_header(&self.unread()[..HEADER_LEN], usize::MAX)
                                .unwrap_or(0),
                        }),
                    });
                    return got;
                }
                Ok(n) => {
                    // SAFETY: recv(2) initialised the first `n` spare bytes.
                    unsafe { self.input.set_len(self.input.len() + n) };
                    got += n;
                    self.progress = Instant::now();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return got,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.end = Some(End::Io(err));
                    return got;
                }
            }
        }
    }

    /// Whether a message is complete or the next header refused: either
    /// way there is something to report without reading.
    pub(super) fn has_frame(&self, max_size: usize) -> bool {
        self.complete_frame(max_size)
            .map_or(true, |len| len.is_some())
    }

    /// Send what is unsent without blocking; how many bytes left.
    pub(super) fn flush(&mut self) -> io::Result<usize> {
        let mut total = 0;
        while self.unsent() {
            let part = [IoSlice::new(&self.output[self.sent..])];
            match sys::send_vectored(self.fd, &part, MSG_DONTWAIT) {
                Ok(n) => {
                    self.sent += n;
                    total += n;
                    self.progress = Instant::now();
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if !self.unsent() {
            self.output.clear();
            self.sent = 0;
        }
        Ok(total)
    }
}
