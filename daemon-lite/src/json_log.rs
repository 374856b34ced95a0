//! Docker's `json-file` log format: one JSON object per line, `{"log": "…\n", "stream":
//! "stdout", "time": "RFC 3339 with nanoseconds"}`, rotated by size into `<file>.1 … .N-1`.
//! The monitor writes it; the daemon reads it for `logs` and `attach` replays.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Docker splits a line longer than this into several entries (the last part carries the `\n`).
pub const MAX_ENTRY: usize = 16 * 1024;

/// Which of the container's outputs an entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream byte of Docker's multiplexed framing.
    pub fn frame_byte(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

/// One log entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    pub time: String,
}

/// Size-based rotation, as `--log-opt max-size=… max-file=…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Bytes after which the file is rotated; 0 = never.
    pub max_size: u64,
    /// Files kept, the live one included (Docker's `max-file`, at least 1).
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_size: 0,
            max_files: 1,
        }
    }
}

/// The path of the `n`th rotated file (`n` ≥ 1; 0 is the live file).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Appends entries to a json-file log, rotating it by size.
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// A line not yet ended by `\n`, per stream.
    partial: [Vec<u8>; 2],
}

impl Writer {
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode_0640()
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Takes output as it arrives: whole lines become entries; the rest waits for its `\n`
    /// (or for [`MAX_ENTRY`] bytes, or for `flush`).
    pub fn write(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let slot = stream as usize;
        while !data.is_empty() {
            let room = MAX_ENTRY - self.partial[slot].len();
            let (take, ends_line) = match data.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (data.len().min(room), false),
            };
            self.partial[slot].extend_from_slice(&data[..take]);
            data = &data[take..];
            if ends_line || self.partial[slot].len() >= MAX_ENTRY {
                let line = std::mem::take(&mut self.partial[slot]);
                self.append(stream, &line)?;
            }
        }
        Ok(())
    }

    /// Writes out unfinished lines (at the container's exit).
    pub fn flush(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.append(stream, &line)?;
            }
        }
        self.file.flush()
    }

    fn append(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream,
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        };
        let mut bytes = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        bytes.push(b'\n');
        if self.rotation.max_size > 0
            && self.size > 0
            && self.size + bytes.len() as u64 > self.rotation.max_size
        {
            self.rotate()?;
        }
        self.file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.max_files.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
        } else {
            let _ = fs::remove_file(rotated(&self.path, keep - 1));
            for n in (1..keep - 1).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode_0640()
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

trait Mode0640 {
    fn mode_0640(&mut self) -> &mut Self;
}

impl Mode0640 for OpenOptions {
    fn mode_0640(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o640)
    }
}

/// Every entry of a log, oldest first, rotated files included. A line that does not parse (a
/// write cut short by a crash) is skipped.
pub fn read_all(path: &Path, max_files: u32) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for n in (0..max_files.max(1)).rev() {
        let file = match File::open(rotated(path, n)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        read_from(BufReader::new(file), &mut entries)?;
    }
    Ok(entries)
}

/// Parses complete lines from `reader` into `out`; returns how many bytes were consumed (a
/// trailing line without `\n` is left for the next read, as a follower needs).
pub fn read_from(mut reader: impl BufRead, out: &mut Vec<Entry>) -> io::Result<u64> {
    let mut consumed = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(consumed);
        }
        consumed += n as u64;
        if let Ok(entry) = serde_json::from_slice::<Entry>(&line) {
            out.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_entries_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut w = Writer::open(&path, Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"one\ntw").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        w.write(Stream::Stdout, b"o\nthree").unwrap();
        let before_flush = read_all(&path, 1).unwrap();
        assert_eq!(
            before_flush
                .iter()
                .map(|e| e.log.as_str())
                .collect::<Vec<_>>(),
            ["one\n", "err\n", "two\n"]
        );
        w.flush().unwrap();
        let all = read_all(&path, 1).unwrap();
        assert_eq!(all.last().unwrap().log, "three");
        assert_eq!(all[1].stream, Stream::Stderr);
        assert!(humantime::parse_rfc3339(&all[0].time).is_ok());
    }

    #[test]
    fn long_lines_are_split_at_16k() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = Writer::open(&path, Rotation::default()).unwrap();
        let mut data = vec![b'x'; MAX_ENTRY + 10];
        data.push(b'\n');
        w.write(Stream::Stdout, &data).unwrap();
        let all = read_all(&path, 1).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].log.len(), MAX_ENTRY);
        assert_eq!(all[1].log, format!("{}\n", "x".repeat(10)));
    }

    #[test]
    fn rotation_keeps_max_files_and_the_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let rotation = Rotation {
            max_size: 300,
            max_files: 3,
        };
        let mut w = Writer::open(&path, rotation).unwrap();
        for i in 0..100 {
            w.write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for n in 0..3 {
            assert!(fs::metadata(rotated(&path, n)).unwrap().len() <= 300);
        }
        let all = read_all(&path, 3).unwrap();
        assert_eq!(all.last().unwrap().log, "line 99\n");
        let numbers: Vec<u32> = all
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert!(numbers.len() < 100);
    }

    #[test]
    fn a_torn_last_line_is_left_for_later() {
        let text = b"{\"log\":\"a\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n{\"log\":\"b";
        let mut out = Vec::new();
        let used = read_from(&text[..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            used as usize,
            text.iter().position(|&b| b == b'\n').unwrap() + 1
        );
    }
}
