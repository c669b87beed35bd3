//! The loop's work between two reports: accepting, reading and decoding,
//! writing replies, and turning what it found into Python events.

use super::*;

impl MessageLoop {
    pub(super) fn lock(&self) -> Guard<'_, State> {
        self.state.lock()
    }

    pub(super) fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            // A full pipe already holds a wake-up.
            let _ = self.wake_write.send(&[1]);
        }
    }

    pub(super) fn unwatch(&self, conn: &Conn) {
        if conn.watching != (false, false) {
            // Failing, the descriptor is not watched: nothing to undo.
            let _ = self.poller.delete(conn.fd);
        }
    }

    /// Watch `conn` for what it needs now.
    pub(super) fn watch(&self, id: u64, conn: &mut Conn, read: bool, write: bool) {
        if conn.watching == (read, write) {
            return;
        }
        let done = match (conn.watching, (read, write)) {
            (_, (false, false)) => self.poller.delete(conn.fd),
            ((false, false), _) => self.poller.add(conn.fd, id, read, write),
            _ => self.poller.modify(conn.fd, id, read, write),
        };
        match done {
            Ok(()) => conn.watching = (read, write),
            Err(err) => {
                if conn.end.is_none() {
                    conn.end = Some(End::Io(err));
                }
            }
        }
    }

    /// After a reply: watch for what is next, and say whether the loop must
    /// look at the connection without readiness (a message is buffered, or
    /// its end is due).
    pub(super) fn settle(&self, state: &mut State, id: u64) -> bool {
        let max_size = self.max_size;
        let Some(conn) = state.conns.get_mut(&id) else {
            return false;
        };
        if conn.unsent() {
            let read = conn.watching.0;
            self.watch(id, conn, read, true);
            return false;
        }
        if conn.hangup || conn.end.is_some() || conn.has_frame(max_size) {
            state.ready.push(id);
            return true;
        }
        self.watch(id, conn, true, false);
        false
    }

    /// One wait, GIL released: what became ready, and what it led to.
    pub(super) fn poll_once(&self, slice: Duration) -> io::Result<Vec<Found>> {
        let mut found = Vec::new();
        let mut events = Vec::new();
        let pending = !self.lock().ready.is_empty();
        let timeout = {
            let state = self.lock();
            let now = Instant::now();
            let mut timeout = match state.accept_paused_until {
                Some(until) => slice.min(until.saturating_duration_since(now)),
                None => slice,
            };
            if self.deadlines.any() {
                timeout = timeout.min(state.next_expiry_check.saturating_duration_since(now));
            }
            timeout
        };
        if pending {
            self.poller.wait(&mut events, Some(Duration::ZERO))?;
        } else {
            self.waiting.store(true, Ordering::SeqCst);
            let ready_now = !self.lock().ready.is_empty();
            let waited = self.poller.wait(
                &mut events,
                Some(if ready_now { Duration::ZERO } else { timeout }),
            );
            self.waiting.store(false, Ordering::SeqCst);
            waited?;
        }
        self.resume_accepting();
        let mut accept_ready = false;
        let mut state = self.lock();
        for event in &events {
            match event.token {
                LISTENER => accept_ready = true,
                SHUTDOWN_WAKE => self.serve_loop.get().drain_wakes(),
                REPLY_WAKE => {
                    let mut sink = [MaybeUninit::<u8>::uninit(); 64];
                    while matches!(
                        sys::recv(sys::as_raw(&self.wake_read), &mut sink, MSG_DONTWAIT),
                        Ok(n) if n > 0
                    ) {}
                }
                id => self.advance(&mut state, id, *event, &mut found),
            }
        }
        let ready = std::mem::take(&mut state.ready);
        for id in ready {
            let event = PollEvent {
                token: id,
                readable: false,
                writable: false,
            };
            self.advance(&mut state, id, event, &mut found);
        }
        self.expire(&mut state, &mut found);
        drop(state);
        if accept_ready {
            self.accept_some(&mut found);
        }
        Ok(found)
    }

    /// Forget the connections past a deadline, reporting why.
    fn expire(&self, state: &mut State, found: &mut Vec<Found>) {
        let now = Instant::now();
        if !self.deadlines.any() || now < state.next_expiry_check {
            return;
        }
        state.next_expiry_check = now + self.deadlines.granularity;
        let expired: Vec<(u64, String)> = state
            .conns
            .iter()
            .filter_map(|(&id, conn)| Some((id, self.deadlines.expired(conn, now)?)))
            .collect();
        for (id, why) in expired {
            let conn = state.conns.remove(&id).expect("found above");
            self.unwatch(&conn);
            found.push(Found::Ended(id, End::Expired(why)));
        }
    }

    pub(super) fn resume_accepting(&self) {
        let mut state = self.lock();
        if let Some(until) = state.accept_paused_until {
            if Instant::now() >= until {
                state.accept_paused_until = None;
                // Should it fail, the next pause retries.
                let _ = self.poller.modify(self.listener, LISTENER, true, false);
            }
        }
    }

    pub(super) fn accept_some(&self, found: &mut Vec<Found>) {
        for taken in 0..ACCEPT_BATCH {
            if taken > 0 && !readable_now(self.listener) {
                break;
            }
            match accept(self.listener, self.nodelay) {
                // SAFETY: just accepted; nothing else owns it.
                Ok((fd, address)) => found.push(Found::Opened(unsafe { sys::own(fd) }, address)),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    let errno = err.raw_os_error().unwrap_or(0);
                    if is_resource_exhaustion(errno) {
                        let mut state = self.lock();
                        state.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                        let _ = self.poller.modify(self.listener, LISTENER, false, false);
                    }
                    found.push(Found::AcceptFailed(errno));
                    break;
                }
            }
        }
    }

    /// Move one connection on: write what is unsent, deliver a buffered
    /// message, read, or report its end.
    pub(super) fn advance(
        &self,
        state: &mut State,
        id: u64,
        event: PollEvent,
        found: &mut Vec<Found>,
    ) {
        let max_size = self.max_size;
        let stats = self.serve_loop.get().stats();
        let Some(conn) = state.conns.get_mut(&id) else {
            return;
        };
        if event.writable && conn.unsent() {
            match conn.flush() {
                Ok(n) => stats.io().sent(n),
                Err(err) => {
                    conn.output.clear();
                    conn.sent = 0;
                    conn.end = Some(End::Io(err));
                }
            }
        }
        if conn.hangup && !conn.busy && !conn.unsent() {
            // The handler ended it: nothing buffered is delivered.
            let conn = state.conns.remove(&id).expect("looked up above");
            self.unwatch(&conn);
            let end = match conn.end {
                Some(End::Io(err)) => End::Io(err),
                _ => End::Eof,
            };
            found.push(Found::Ended(id, end));
            return;
        }
        if conn.busy || conn.unsent() {
            // Nothing more is read meanwhile: back-pressure. Interest in
            // reading is dropped only once the peer sent more (readiness is
            // level-triggered: it would be reported again and again), so
            // that a client waiting for its reply costs no registration.
            let write = conn.unsent();
            let read = conn.watching.0 && !event.readable;
            self.watch(id, conn, read, write);
            return;
        }
        match conn.next_frame(max_size) {
            Ok(Some(message)) => {
                conn.busy = true;
                found.push(Found::Message(id, message));
                return;
            }
            Ok(None) => {}
            Err(err) => {
                conn.end.get_or_insert(End::Frame(err));
            }
        }
        if conn.end.is_none() && event.readable {
            let got = conn.read(max_size, &self.spare);
            stats.io().received(got);
            match conn.next_frame(max_size) {
                Ok(Some(message)) => {
                    conn.busy = true;
                    found.push(Found::Message(id, message));
                    return;
                }
                Ok(None) => {}
                Err(err) => {
                    conn.end.get_or_insert(End::Frame(err));
                }
            }
        }
        if conn.end.is_some() {
            let conn = state.conns.remove(&id).expect("looked up above");
            self.unwatch(&conn);
            found.push(Found::Ended(id, conn.end.expect("checked above")));
            return;
        }
        self.watch(id, conn, true, false);
    }

    /// Turn what the loop found into Python events; register new connections.
    pub(super) fn report<'py>(
        &self,
        py: Python<'py>,
        found: Vec<Found>,
    ) -> PyResult<Bound<'py, PyList>> {
        crate::locks::assert_unlocked("the message loop reports");
        let events = PyList::empty(py);
        let serve_loop = self.serve_loop.get();
        for item in found {
            let event = match item {
                Found::Message(id, payload) if payload.range.len() >= LARGE_MESSAGE => {
                    let message = Message::new(payload, Arc::clone(&self.spare));
                    (MESSAGE, id, Bound::new(py, message)?.into_any())
                }
                Found::Message(id, Payload { buffer, range }) => {
                    let payload = PyBytes::new(py, &buffer[range]).into_any();
                    self.spare.give(buffer);
                    (MESSAGE, id, payload)
                }
                Found::Ended(id, End::Eof) => (CLOSED, id, py.None().into_bound(py)),
                Found::Ended(id, End::Expired(why)) => {
                    (EXPIRED, id, PyString::new(py, &why).into_any())
                }
                Found::Ended(id, End::Frame(err)) => (FAILED, id, end_error(py, PyErr::from(err))),
                Found::Ended(id, End::Io(err)) => (FAILED, id, end_error(py, os_error(err))),
                Found::AcceptFailed(errno) => {
                    serve_loop.accept_failed(py, errno);
                    continue;
                }
                Found::Opened(fd, address) => match self.open(py, fd, &address) {
                    Some(event) => event,
                    None => continue,
                },
            };
            events.append(event)?;
        }
        Ok(events)
    }

    pub(super) fn open<'py>(
        &self,
        py: Python<'py>,
        fd: OwnedSock,
        address: &SockAddr,
    ) -> Option<(u8, u64, Bound<'py, PyAny>)> {
        let serve_loop = self.serve_loop.get();
        let fd = sys::into_raw(fd);
        let request = match wrap_socket(self.socket_class.bind(py), self.socket_kind.bind(py), fd) {
            Ok(request) => request,
            Err(err) => {
                serve_loop.request_lost(py, &err);
                return None;
            }
        };
        let lost = |err: PyErr| {
            serve_loop.request_lost(py, &err);
            if let Err(err) = crate::pycall::call_method0(&request, intern!(py, "close")) {
                err.write_unraisable(py, Some(&request));
            }
        };
        let address = match address_to_py(py, address) {
            Ok(address) => address,
            Err(err) => {
                lost(err);
                return None;
            }
        };
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let mut conn = Conn {
            fd,
            input: Vec::new(),
            start: 0,
            output: Vec::new(),
            sent: 0,
            busy: false,
            end: None,
            watching: (false, false),
            hangup: false,
            progress: Instant::now(),
        };
        self.watch(id, &mut conn, true, false);
        if let Some(End::Io(err)) = conn.end.take() {
            drop(state);
            lost(os_error(err));
            return None;
        }
        state.conns.insert(id, conn);
        drop(state);
        serve_loop.stats().request_taken();
        let payload = PyTuple::new(py, [request, address]).ok()?.into_any();
        Some((OPENED, id, payload))
    }
}
