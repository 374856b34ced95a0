//! The messages between the runtime (parent) and the container process it forked while that
//! process sets itself up. A SOCK_SEQPACKET socketpair keeps message boundaries and can carry a
//! descriptor (a pty master). Both ends are close-on-exec: when the child execs the user
//! program, the parent reads end-of-file, which is how it learns the exec happened.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// parent -> child: ids are mapped; go on.
    Continue,
    /// parent -> child: the child is in its cgroup (sent while the child sets up its mounts;
    /// the child waits for it before its cgroup namespace and before exec).
    InCgroup,
    /// child -> parent: set up, waiting to be released.
    Ready,
    /// parent -> child: run the user program now (`run`; `create` releases through the FIFO).
    Start,
    /// child -> parent: setup failed; the text says where.
    Failed(String),
    /// intermediate -> parent: the container's init was forked with this host pid.
    InitPid(i32),
    /// intermediate -> parent: a user namespace was created, write its id maps.
    MapUserNamespace,
    /// parent -> intermediate: the maps are written.
    Mapped,
    /// child -> parent: the pty master rides along (foreground `run`/`exec` with a terminal).
    PtyMaster,
    /// child -> parent: the seccomp notification listener rides along, for `listenerPath`.
    SeccompListener,
    /// parent -> child: the container's state, for the hooks the init runs.
    State(String),
    /// parent -> child: the idmapped mount for `mounts[N]` rides along, detached.
    IdmappedMount(u32),
    /// parent -> child: the `tasks` files of the container's v1 directories ride along, made
    /// while the child set up its mounts; it moves itself into each.
    JoinCgroups,
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Continue => vec![1],
            Message::Ready => vec![2],
            Message::Start => vec![3],
            Message::Failed(text) => {
                let mut v = vec![4];
                v.extend_from_slice(text.as_bytes());
                v
            }
            Message::InitPid(pid) => {
                let mut v = vec![5];
                v.extend_from_slice(&pid.to_le_bytes());
                v
            }
            Message::MapUserNamespace => vec![6],
            Message::Mapped => vec![7],
            Message::PtyMaster => vec![8],
            Message::InCgroup => vec![9],
            Message::SeccompListener => vec![10],
            Message::State(json) => {
                let mut v = vec![11];
                v.extend_from_slice(json.as_bytes());
                v
            }
            Message::IdmappedMount(index) => {
                let mut v = vec![12];
                v.extend_from_slice(&index.to_le_bytes());
                v
            }
            Message::JoinCgroups => vec![13],
        }
    }

    fn decode(bytes: &[u8]) -> io::Result<Message> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sync message");
        let (&tag, rest) = bytes.split_first().ok_or_else(bad)?;
        Ok(match tag {
            1 => Message::Continue,
            2 => Message::Ready,
            3 => Message::Start,
            4 => Message::Failed(String::from_utf8_lossy(rest).into_owned()),
            5 => Message::InitPid(i32::from_le_bytes(rest.try_into().map_err(|_| bad())?)),
            6 => Message::MapUserNamespace,
            7 => Message::Mapped,
            8 => Message::PtyMaster,
            9 => Message::InCgroup,
            10 => Message::SeccompListener,
            11 => Message::State(String::from_utf8_lossy(rest).into_owned()),
            12 => Message::IdmappedMount(u32::from_le_bytes(rest.try_into().map_err(|_| bad())?)),
            13 => Message::JoinCgroups,
            _ => return Err(bad()),
        })
    }
}

/// Largest message: an error text is cut to this.
const MAX_MESSAGE: usize = 16 * 1024;

/// Most descriptors one message carries (a v1 host has about a dozen hierarchies).
const MAX_FDS: usize = 32;

#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair: (parent end, child end).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    pub fn send(&self, msg: &Message) -> io::Result<()> {
        self.send_with_fd(msg, None)
    }

    pub fn send_with_fd(&self, msg: &Message, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        self.send_with_fds(msg, fd.as_slice())
    }

    pub fn send_with_fds(&self, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::other(format!(
                "{} descriptors in one sync message (at most {MAX_FDS})",
                fds.len()
            )));
        }
        let mut bytes = msg.encode();
        bytes.truncate(MAX_MESSAGE);
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            control.push(SendAncillaryMessage::ScmRights(fds));
        }
        loop {
            match rustix::net::sendmsg(
                &self.fd,
                &[IoSlice::new(&bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message, or `None` at end-of-file (the other side exec'd or died).
    pub fn recv(&self) -> io::Result<Option<Message>> {
        Ok(self.recv_with_fd()?.map(|(m, _)| m))
    }

    pub fn recv_with_fd(&self) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
        Ok(self
            .recv_with_fds()?
            .map(|(m, fds)| (m, fds.into_iter().next())))
    }

    pub fn recv_with_fds(&self) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut reset_seen = false;
        let msg = loop {
            match rustix::net::recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(&mut buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(rustix::io::Errno::INTR) => continue,
                // A peer that exits with a message of ours unread resets the socket, and a
                // SEQPACKET socket reports that error before the messages still queued (the
                // child's failure report among them). The error is reported once: read on.
                Err(rustix::io::Errno::CONNRESET) if !reset_seen => reset_seen = true,
                Err(e) => return Err(e.into()),
            }
        };
        let n = msg.bytes;
        if n == 0 {
            return Ok(None);
        }
        let mut received = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                received.extend(fds);
            }
        }
        if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            return Err(io::Error::other(
                "descriptors sent along with a sync message were dropped (RLIMIT_NOFILE too low?)",
            ));
        }
        Ok(Some((Message::decode(&buf[..n])?, received)))
    }

    /// A message if one is already waiting (never blocks).
    pub fn try_recv(&self) -> Option<Message> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let r = rustix::net::recvmsg(
            &self.fd,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        )
        .ok()?;
        Message::decode(&buf[..r.bytes])
            .ok()
            .filter(|_| r.bytes > 0)
    }

    /// Waits for `want`; anything else (a failure report, end-of-file) becomes an error.
    pub fn expect(&self, want: &Message) -> Result<(), String> {
        match self.recv() {
            Ok(Some(m)) if &m == want => Ok(()),
            Ok(Some(Message::Failed(text))) => Err(text),
            Ok(Some(other)) => Err(format!("expected {want:?}, got {other:?}")),
            Ok(None) => Err(format!(
                "the other side went away while waiting for {want:?}"
            )),
            Err(e) => Err(format!("sync socket: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn messages_round_trip() {
        let (a, b) = Channel::pair().unwrap();
        for m in [
            Message::Continue,
            Message::Ready,
            Message::Start,
            Message::Failed("mount /proc: EPERM".into()),
            Message::InitPid(4242),
            Message::MapUserNamespace,
            Message::Mapped,
            Message::InCgroup,
            Message::JoinCgroups,
        ] {
            a.send(&m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn carries_a_descriptor() {
        let (a, b) = Channel::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        a.send_with_fd(&Message::PtyMaster, Some(f.as_fd()))
            .unwrap();
        let (m, fd) = b.recv_with_fd().unwrap().unwrap();
        assert_eq!(m, Message::PtyMaster);
        assert!(fd.is_some());
    }

    #[test]
    fn carries_several_descriptors_in_order() {
        let (a, b) = Channel::pair().unwrap();
        let files: Vec<std::fs::File> = ["/dev/null", "/dev/zero", "/proc/self/stat"]
            .iter()
            .map(|p| std::fs::File::open(p).unwrap())
            .collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        a.send_with_fds(&Message::JoinCgroups, &fds).unwrap();
        let (m, got) = b.recv_with_fds().unwrap().unwrap();
        assert_eq!(m, Message::JoinCgroups);
        assert_eq!(got.len(), 3);
        let target = |fd: &OwnedFd| {
            std::fs::read_link(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(fd)
            ))
            .unwrap()
        };
        assert_eq!(target(&got[0]), std::path::Path::new("/dev/null"));
        assert_eq!(target(&got[1]), std::path::Path::new("/dev/zero"));
        let too_many = vec![files[0].as_fd(); MAX_FDS + 1];
        assert!(a.send_with_fds(&Message::JoinCgroups, &too_many).is_err());
    }

    #[test]
    fn expect_reports_failures() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Message::Failed("boom".into())).unwrap();
        assert_eq!(b.expect(&Message::Ready).unwrap_err(), "boom");
    }
}
