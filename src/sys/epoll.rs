//! epoll through rustix, for Linux: one system call per wait, where the
//! `polling` crate adds four (it re-arms a timer and its own wake-up on
//! every wait), which the message loop, waiting once per message or so,
//! would pay for.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::Timespec;

use super::{borrow, poll_millis, PollEvent, RawSock};

/// Most events taken from the kernel per wait.
const POLL_BATCH: usize = 1024;

pub struct Epoll {
    fd: OwnedFd,
}

fn flags(read: bool, write: bool) -> EventFlags {
    let mut flags = EventFlags::empty();
    if read {
        flags |= EventFlags::IN;
    }
    if write {
        flags |= EventFlags::OUT;
    }
    flags
}

/// A watched socket, borrowed: open as long as it is watched (see `Poller::add`).
fn source<'a>(sock: RawSock) -> BorrowedFd<'a> {
    // SAFETY: callers delete a socket from the poller before its owner
    // closes it.
    unsafe { borrow(sock) }
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            fd: epoll::create(CreateFlags::CLOEXEC)?,
        })
    }

    pub fn add(&self, sock: RawSock, token: u64, read: bool, write: bool) -> io::Result<()> {
        let data = EventData::new_u64(token);
        Ok(epoll::add(
            &self.fd,
            source(sock),
            data,
            flags(read, write),
        )?)
    }

    pub fn modify(&self, sock: RawSock, token: u64, read: bool, write: bool) -> io::Result<()> {
        let data = EventData::new_u64(token);
        Ok(epoll::modify(
            &self.fd,
            source(sock),
            data,
            flags(read, write),
        )?)
    }

    pub fn delete(&self, sock: RawSock) -> io::Result<()> {
        Ok(epoll::delete(&self.fd, source(sock))?)
    }

    pub fn wait(&self, found: &mut Vec<PollEvent>, timeout: Option<Duration>) -> io::Result<()> {
        // Whole milliseconds, rounded up as for poll(2).
        let timeout = timeout.map(|_| {
            let millis = i64::from(poll_millis(timeout));
            Timespec {
                tv_sec: millis / 1000,
                tv_nsec: millis % 1000 * 1_000_000,
            }
        });
        let mut raw = [MaybeUninit::<epoll::Event>::uninit(); POLL_BATCH];
        let (events, _) = epoll::wait(&self.fd, &mut raw, timeout.as_ref())?;
        let trouble = EventFlags::ERR | EventFlags::HUP;
        found.extend(events.iter().map(|event| {
            // Copied out: the kernel's struct is packed.
            let (data, flags) = (event.data, event.flags);
            PollEvent {
                token: data.u64(),
                readable: flags.intersects(EventFlags::IN | trouble),
                writable: flags.intersects(EventFlags::OUT | trouble),
            }
        }));
        Ok(())
    }
}
