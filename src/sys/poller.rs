//! Readiness of many sockets at once, level-triggered.  By default the
//! system's own: epoll (`epoll.rs`) on Linux, the `polling` crate's kqueue
//! on macOS and IOCP on Windows.  `SOCKETSERVER_RS_POLLER` (read once)
//! picks another: `polling` the crate on any system (on Linux, its epoll),
//! `poll` poll(2) over a table (`poll_set.rs`), the portable sibling of
//! kqueue and IOCP, so that a Linux CI runs the suite on a backend other
//! than epoll.  Registrations may change from any thread while another
//! waits; the change applies to that wait.

use crate::locks::Lock;
use std::io;
use std::mem::ManuallyDrop;
use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::Duration;

use polling::{Event, Events, PollMode};

#[cfg(any(target_os = "linux", target_os = "android"))]
use super::epoll::Epoll;
use super::poll_set::PollSet;
use super::{borrow, RawSock};

/// One socket's readiness as reported by a `Poller`: the token it was
/// registered with, and what it is ready for.  An error or a hang-up counts
/// as both, so that the next read or write reports it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PollEvent {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
}

/// Most events taken from the system per wait.
const POLL_BATCH: NonZeroUsize = NonZeroUsize::new(1024).unwrap();

/// The environment variable that picks the backend.
const BACKEND_VAR: &str = "SOCKETSERVER_RS_POLLER";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Epoll,
    Polling,
    Poll,
}

/// The system's own backend.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SYSTEM: Kind = Kind::Epoll;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SYSTEM: Kind = Kind::Polling;

/// The backend the environment asks for, read once per process.
fn chosen() -> io::Result<Kind> {
    static CHOSEN: OnceLock<Result<Kind, String>> = OnceLock::new();
    let chosen =
        CHOSEN.get_or_init(
            || match std::env::var_os(BACKEND_VAR).as_deref().map(|v| v.to_str()) {
                None | Some(Some("" | "system")) => Ok(SYSTEM),
                Some(Some("polling")) => Ok(Kind::Polling),
                Some(Some("poll")) => Ok(Kind::Poll),
                Some(value) => Err(format!(
                    "{BACKEND_VAR} must be 'system', 'polling' or 'poll', not '{}'",
                    value.unwrap_or("(not UTF-8)")
                )),
            },
        );
    chosen
        .clone()
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))
}

pub struct Poller(Backend);

// One per message loop: the size of the IOCP poller does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Epoll(Epoll),
    Polling {
        /// Dropped only by the process that made it (see `Drop`).
        poller: ManuallyDrop<polling::Poller>,
        pid: u32,
        /// The buffer a wait fills, kept for the next one.
        events: Lock<Events>,
    },
    Poll(PollSet),
}

fn key(token: u64) -> io::Result<usize> {
    usize::try_from(token).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Poller {
    /// The poller of the backend the environment asks for.
    pub fn new() -> io::Result<Self> {
        Self::of_kind(chosen()?)
    }

    fn of_kind(kind: Kind) -> io::Result<Self> {
        Ok(Self(match kind {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Kind::Epoll => Backend::Epoll(Epoll::new()?),
            Kind::Polling => Backend::Polling {
                poller: ManuallyDrop::new(polling::Poller::new()?),
                pid: std::process::id(),
                events: Lock::new(Events::with_capacity(POLL_BATCH)),
            },
            Kind::Poll => Backend::Poll(PollSet::new()?),
        }))
    }

    /// Watch `sock` for reading and/or writing, reported as `token`; `delete`
    /// it before it is closed.
    pub fn add(&self, sock: RawSock, token: u64, read: bool, write: bool) -> io::Result<()> {
        match &self.0 {
            Backend::Polling { poller, .. } => {
                let event = Event::new(key(token)?, read, write);
                // SAFETY: every caller deletes the socket from the poller
                // before its owner closes it.
                unsafe { poller.add_with_mode(sock, event, PollMode::Level) }
            }
            Backend::Poll(set) => set.add(sock, token, read, write),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Backend::Epoll(epoll) => epoll.add(sock, token, read, write),
        }
    }

    /// Change what `sock` is watched for.
    pub fn modify(&self, sock: RawSock, token: u64, read: bool, write: bool) -> io::Result<()> {
        match &self.0 {
            Backend::Polling { poller, .. } => {
                let event = Event::new(key(token)?, read, write);
                // SAFETY: a watched socket is open (see `add`).
                let source = unsafe { borrow(sock) };
                poller.modify_with_mode(source, event, PollMode::Level)
            }
            Backend::Poll(set) => set.modify(sock, token, read, write),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Backend::Epoll(epoll) => epoll.modify(sock, token, read, write),
        }
    }

    /// Stop watching `sock` (before it is closed).
    pub fn delete(&self, sock: RawSock) -> io::Result<()> {
        match &self.0 {
            // SAFETY: a watched socket is open (see `add`).
            Backend::Polling { poller, .. } => poller.delete(unsafe { borrow(sock) }),
            Backend::Poll(set) => set.delete(sock),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Backend::Epoll(epoll) => epoll.delete(sock),
        }
    }

    /// Wait up to `timeout` (None: no limit) and append what is ready to
    /// `found`.  A signal does not end the system backend's wait; it ends
    /// the poll backend's with an `Interrupted` error.
    pub fn wait(&self, found: &mut Vec<PollEvent>, timeout: Option<Duration>) -> io::Result<()> {
        let (poller, events) = match &self.0 {
            Backend::Polling { poller, events, .. } => (poller, events),
            Backend::Poll(set) => return set.wait(found, timeout),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Backend::Epoll(epoll) => return epoll.wait(found, timeout),
        };
        // Another thread waiting already holds the buffer: use one of our own.
        let mut spare;
        let mut held = events.try_lock();
        let events = match held.as_deref_mut() {
            Some(events) => events,
            None => {
                spare = Events::with_capacity(POLL_BATCH);
                &mut spare
            }
        };
        events.clear();
        poller.wait(events, timeout)?;
        found.extend(events.iter().map(|event| PollEvent {
            token: event.key as u64,
            readable: event.readable,
            writable: event.writable,
        }));
        Ok(())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        if let Backend::Polling { poller, pid, .. } = &mut self.0 {
            // A forked child shares the parent's epoll instance, from which
            // the crate's drop would unregister its own wake-up and timer:
            // the child leaves them, and its copies of the descriptors close
            // when it exits.
            if *pid == std::process::id() {
                // SAFETY: dropped once, here, and never used again.
                unsafe { ManuallyDrop::drop(poller) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use socket2::Socket;

    use super::super::{as_raw, socket_pair};
    use super::*;

    fn pair() -> (Socket, Socket) {
        let (a, b) = socket_pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn reports_tokens_and_forgets_deleted_sockets(kind: Kind) {
        let poller = Poller::of_kind(kind).unwrap();
        let wait = |events: &mut Vec<PollEvent>| {
            poller
                .wait(events, Some(Duration::from_millis(10)))
                .unwrap()
        };
        let (a, b) = pair();
        poller.add(as_raw(&a), 7, true, false).unwrap();
        let mut events = Vec::new();
        wait(&mut events);
        assert!(events.is_empty(), "{events:?}");
        b.send(b"x").unwrap();
        wait(&mut events);
        let seven = PollEvent {
            token: 7,
            readable: true,
            writable: false,
        };
        assert_eq!(events, [seven]);
        events.clear();
        // Level-triggered: still readable, reported again.
        wait(&mut events);
        assert_eq!(events, [seven]);
        events.clear();
        poller.add(as_raw(&b), 9, false, true).unwrap();
        wait(&mut events);
        events.sort_by_key(|event| event.token);
        assert_eq!(events.len(), 2);
        assert!(events[1].token == 9 && events[1].writable && !events[1].readable);
        events.clear();
        poller.modify(as_raw(&a), 7, false, false).unwrap();
        poller.delete(as_raw(&b)).unwrap();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "{events:?}");
        poller.delete(as_raw(&a)).unwrap();
    }

    fn wakes_on_changes_from_another_thread(kind: Kind) {
        let poller = std::sync::Arc::new(Poller::of_kind(kind).unwrap());
        let (a, _b) = pair();
        let sock = as_raw(&a);
        let changer = {
            let poller = poller.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                poller.add(sock, 3, false, true).unwrap();
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
    fn system_backend() {
        reports_tokens_and_forgets_deleted_sockets(SYSTEM);
        wakes_on_changes_from_another_thread(SYSTEM);
    }

    #[test]
    fn polling_backend() {
        reports_tokens_and_forgets_deleted_sockets(Kind::Polling);
        wakes_on_changes_from_another_thread(Kind::Polling);
    }

    #[test]
    fn poll_backend() {
        reports_tokens_and_forgets_deleted_sockets(Kind::Poll);
        wakes_on_changes_from_another_thread(Kind::Poll);
    }
}
