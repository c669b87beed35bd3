//! The portable poller: a table of registrations and poll(2) (WSAPoll on
//! Windows) over it, with a socket pair that restarts a wait when the
//! table changes.

use crate::locks::{Guard, Lock};
use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use socket2::Socket;

use super::os::{self, PollFd};
use super::{as_raw, poll_millis, socket_pair, PollEvent, RawSock};

pub struct PollSet {
    /// Socket → (token, events asked for).
    table: Lock<HashMap<RawSock, (u64, i16)>>,
    wake: (Socket, Socket),
}

impl PollSet {
    pub fn new() -> io::Result<Self> {
        let (reader, writer) = socket_pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok(Self {
            table: Lock::new(HashMap::new()),
            wake: (reader, writer),
        })
    }

    fn table(&self) -> Guard<'_, HashMap<RawSock, (u64, i16)>> {
        self.table.lock()
    }

    fn set(&self, sock: RawSock, entry: Option<(u64, i16)>) {
        let mut table = self.table();
        match entry {
            Some(entry) => table.insert(sock, entry),
            None => table.remove(&sock),
        };
        drop(table);
        // A full pipe already holds a wake-up.
        let _ = self.wake.1.send(&[1]);
    }

    fn events(read: bool, write: bool) -> i16 {
        (if read { os::POLLIN } else { 0 }) | (if write { os::POLLOUT } else { 0 })
    }

    pub fn add(&self, sock: RawSock, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.set(sock, Some((token, Self::events(read, write))));
        Ok(())
    }

    pub fn modify(&self, sock: RawSock, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.add(sock, token, read, write)
    }

    pub fn delete(&self, sock: RawSock) -> io::Result<()> {
        self.set(sock, None);
        Ok(())
    }

    pub fn wait(&self, events: &mut Vec<PollEvent>, timeout: Option<Duration>) -> io::Result<()> {
        let (mut fds, tokens): (Vec<PollFd>, Vec<u64>) = self
            .table()
            .iter()
            .filter(|(_, &(_, interest))| interest != 0)
            .map(|(&sock, &(token, interest))| (os::poll_fd(sock, interest), token))
            .unzip();
        fds.push(os::poll_fd(as_raw(&self.wake.0), os::POLLIN));
        os::poll_fds(&mut fds, poll_millis(timeout))?;
        let trouble = os::POLLERR | os::POLLHUP | os::POLLNVAL;
        for (fd, &token) in fds.iter().zip(&tokens) {
            if fd.revents != 0 {
                events.push(PollEvent {
                    token,
                    readable: fd.revents & (os::POLLIN | trouble) != 0,
                    writable: fd.revents & (os::POLLOUT | trouble) != 0,
                });
            }
        }
        let mut sink = [MaybeUninit::<u8>::uninit(); 64];
        while matches!(self.wake.0.recv(&mut sink), Ok(n) if n > 0) {}
        Ok(())
    }
}
