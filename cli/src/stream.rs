//! Container stdio over the wire: the 8-byte-header frame format of non-tty streams
//! (attach, logs, exec) and the pump that copies a hijacked connection to and from the
//! local terminal.

use std::io::Write;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Upgraded;
use crate::error::{CliError, Result};

/// Which stream a frame belongs to (byte 0 of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
    /// An error the daemon reports in-band; its payload is the message.
    SystemErr,
}

impl StreamKind {
    fn from_byte(byte: u8) -> Option<StreamKind> {
        match byte {
            0 => Some(StreamKind::Stdin),
            1 => Some(StreamKind::Stdout),
            2 => Some(StreamKind::Stderr),
            3 => Some(StreamKind::SystemErr),
            _ => None,
        }
    }
}

const HEADER_LEN: usize = 8;

/// Reassembles frames from reads of any size: a header or payload may be split across
/// reads, and one read may hold many frames.
#[derive(Default)]
pub struct FrameDemuxer {
    pending: Vec<u8>,
}

impl FrameDemuxer {
    pub fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived. Zero-length frames are returned too.
    pub fn next_frame(&mut self) -> Result<Option<(StreamKind, Vec<u8>)>> {
        if self.pending.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = StreamKind::from_byte(self.pending[0]).ok_or_else(|| {
            CliError::Decode(format!(
                "unknown stream type {} in multiplexed stream",
                self.pending[0]
            ))
        })?;
        let len = u32::from_be_bytes([
            self.pending[4],
            self.pending[5],
            self.pending[6],
            self.pending[7],
        ]) as usize;
        if self.pending.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = self.pending[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.pending.drain(..HEADER_LEN + len);
        Ok(Some((kind, payload)))
    }

    /// Bytes of an incomplete frame still waiting for the rest.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

/// Where demultiplexed output goes; the process's stdout/stderr in the binary, buffers
/// in tests.
pub struct OutputSink<O: Write, E: Write> {
    pub stdout: O,
    pub stderr: E,
    demuxer: FrameDemuxer,
    raw: bool,
}

impl<O: Write, E: Write> OutputSink<O, E> {
    /// `raw` is for tty containers, whose output is not framed.
    pub fn new(stdout: O, stderr: E, raw: bool) -> Self {
        OutputSink {
            stdout,
            stderr,
            demuxer: FrameDemuxer::default(),
            raw,
        }
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.raw {
            self.stdout.write_all(data)?;
            self.stdout.flush()?;
            return Ok(());
        }
        self.demuxer.push(data);
        while let Some((kind, payload)) = self.demuxer.next_frame()? {
            match kind {
                StreamKind::Stdout | StreamKind::Stdin => {
                    self.stdout.write_all(&payload)?;
                    self.stdout.flush()?;
                }
                StreamKind::Stderr => {
                    self.stderr.write_all(&payload)?;
                    self.stderr.flush()?;
                }
                StreamKind::SystemErr => {
                    return Err(CliError::message(
                        String::from_utf8_lossy(&payload).trim_end(),
                    ));
                }
            }
        }
        Ok(())
    }
}

pub fn process_sink(raw: bool) -> OutputSink<std::io::Stdout, std::io::Stderr> {
    OutputSink::new(std::io::stdout(), std::io::stderr(), raw)
}

/// Reads the local stdin on a helper thread (stdin cannot be made non-blocking without
/// affecting other processes sharing the terminal); `None` from the channel means EOF.
pub fn spawn_stdin_reader() -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rustix::io::read(rustix::stdio::stdin(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => break,
            }
        }
    });
    rx
}

/// Copies the hijacked connection's output to stdout/stderr and, when `stdin` is given,
/// the local input to the connection, half-closing it at input EOF so the container sees
/// EOF too. Returns when the daemon ends the output.
pub async fn pump(
    connection: Upgraded,
    tty: bool,
    stdin: Option<mpsc::Receiver<Bytes>>,
) -> Result<()> {
    let (mut reader, mut writer) = tokio::io::split(connection);
    let output = async move {
        let mut sink = process_sink(tty);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                // A reset after the container exited is an ordinary end of stream.
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(err) => return Err(CliError::Io(err)),
            };
            sink.write(&buf[..n])?;
        }
    };
    tokio::pin!(output);
    let Some(mut stdin) = stdin else {
        return output.await;
    };
    let input = async move {
        while let Some(chunk) = stdin.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
        // Keep the write half alive: dropping it is fine after shutdown, but holding it
        // avoids surprising the daemon with a reset on some transports.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        result = &mut output => result,
        () = input => output.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 0, 0, 0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn demux_frames_split_at_every_byte() {
        let mut wire = frame(1, b"hello ");
        wire.extend(frame(2, b"oops\n"));
        wire.extend(frame(1, b""));
        wire.extend(frame(1, b"world\n"));
        let mut sink = OutputSink::new(Vec::new(), Vec::new(), false);
        for byte in &wire {
            sink.write(std::slice::from_ref(byte))
                .expect("valid frames");
        }
        assert_eq!(sink.stdout, b"hello world\n");
        assert_eq!(sink.stderr, b"oops\n");
        assert_eq!(sink.demuxer.buffered(), 0);
    }

    #[test]
    fn demux_many_frames_in_one_read_and_zero_length() {
        let mut demuxer = FrameDemuxer::default();
        let mut wire = frame(2, b"");
        wire.extend(frame(1, b"a"));
        wire.extend(&frame(2, b"bc")[..5]);
        demuxer.push(&wire);
        assert_eq!(
            demuxer.next_frame().expect("ok"),
            Some((StreamKind::Stderr, vec![]))
        );
        assert_eq!(
            demuxer.next_frame().expect("ok"),
            Some((StreamKind::Stdout, b"a".to_vec()))
        );
        assert_eq!(demuxer.next_frame().expect("ok"), None);
        demuxer.push(&frame(2, b"bc")[5..]);
        assert_eq!(
            demuxer.next_frame().expect("ok"),
            Some((StreamKind::Stderr, b"bc".to_vec()))
        );
        assert_eq!(demuxer.next_frame().expect("ok"), None);
    }

    #[test]
    fn demux_rejects_unknown_stream_and_reports_system_errors() {
        let mut demuxer = FrameDemuxer::default();
        demuxer.push(&frame(9, b"x"));
        assert!(demuxer.next_frame().is_err());

        let mut sink = OutputSink::new(Vec::new(), Vec::new(), false);
        let err = sink
            .write(&frame(3, b"exec failed\n"))
            .expect_err("system error frame");
        assert_eq!(err.to_string(), "exec failed");
    }

    #[test]
    fn raw_mode_copies_bytes_untouched() {
        let mut sink = OutputSink::new(Vec::new(), Vec::new(), true);
        sink.write(&[1, 0, 0, 0, 0, 0, 0, 1, b'x']).expect("raw");
        assert_eq!(sink.stdout, vec![1, 0, 0, 0, 0, 0, 0, 1, b'x']);
        assert!(sink.stderr.is_empty());
    }
}
