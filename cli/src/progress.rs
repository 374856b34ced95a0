//! Rendering of the JSON-lines progress streams of pull, push, load and import, as the
//! docker CLI's `jsonmessage.DisplayJSONMessagesStream` does: on a terminal one line per
//! layer updated in place with cursor movement; otherwise plain lines, bars left out.

use std::collections::HashMap;
use std::io::Write;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CliError, Result};
use crate::units::human_size;

#[derive(Debug, Default, Deserialize)]
pub struct JsonMessage {
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub from: String,
    #[serde(default, rename = "progressDetail")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(default)]
    pub progress: String,
    #[serde(default)]
    pub error: String,
    #[serde(default, rename = "errorDetail")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(default)]
    pub aux: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ProgressDetail {
    #[serde(default)]
    pub current: i64,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub units: String,
    #[serde(default, rename = "hidecounts")]
    pub hide_counts: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: String,
}

impl ProgressDetail {
    /// The bar and counts, like `[=====>    ]  1.5MB/3MB`; the bar only on wide terminals.
    pub fn render(&self, width: u16, now_unix: i64) -> String {
        if self.current <= 0 && self.total <= 0 {
            return String::new();
        }
        if self.total <= 0 {
            return if self.units.is_empty() {
                format!("{:>8}", human_size(self.current as f64))
            } else {
                format!("{} {}", self.current, self.units)
            };
        }
        let percentage =
            ((self.current as f64 / self.total as f64 * 100.0) as i64 / 2).clamp(0, 50) as usize;
        let mut bar = String::new();
        if width > 110 {
            bar = format!(
                "[{}>{}] ",
                "=".repeat(percentage),
                " ".repeat(50 - percentage)
            );
        }
        let numbers = if self.hide_counts {
            String::new()
        } else if self.units.is_empty() {
            let current = human_size(self.current as f64);
            if self.current > self.total {
                format!("{current:>8}")
            } else {
                format!("{current:>8}/{}", human_size(self.total as f64))
            }
        } else if self.current > self.total {
            format!("{} {}", self.current, self.units)
        } else {
            format!("{}/{} {}", self.current, self.total, self.units)
        };
        let mut time_left = String::new();
        if self.current > 0 && self.start > 0 && percentage < 50 && width > 50 {
            let elapsed = (now_unix - self.start).max(0) as f64;
            let left = (elapsed / self.current as f64 * (self.total - self.current) as f64) as u64;
            time_left = format!(" {}", go_duration(left));
        }
        format!("{bar}{numbers}{time_left}")
    }
}

/// Go's `time.Duration.String()` for whole seconds: `45s`, `2m5s`, `1h0m3s`.
fn go_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Stateful renderer: remembers which line each layer id is on.
pub struct ProgressRenderer<W: Write> {
    out: W,
    terminal: bool,
    width: u16,
    lines: HashMap<String, usize>,
    partial: Vec<u8>,
    /// `aux` payloads (e.g. push digests, load results) for the caller.
    pub aux: Vec<Value>,
}

impl<W: Write> ProgressRenderer<W> {
    pub fn new(out: W, terminal: bool, width: u16) -> Self {
        ProgressRenderer {
            out,
            terminal,
            width,
            lines: HashMap::new(),
            partial: Vec::new(),
            aux: Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Feeds raw bytes of the stream; complete lines are rendered. An `error` message ends
    /// rendering with that error, as docker does.
    pub fn feed(&mut self, data: &[u8], now_unix: i64) -> Result<()> {
        self.partial.extend_from_slice(data);
        while let Some(newline) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=newline).collect();
            self.render_line(&line, now_unix)?;
        }
        Ok(())
    }

    /// Renders what is left after the stream ended without a final newline.
    pub fn finish(&mut self, now_unix: i64) -> Result<()> {
        let rest = std::mem::take(&mut self.partial);
        self.render_line(&rest, now_unix)?;
        self.out.flush()?;
        Ok(())
    }

    fn render_line(&mut self, line: &[u8], now_unix: i64) -> Result<()> {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        let message: JsonMessage = serde_json::from_str(text)?;
        self.display(message, now_unix)
    }

    pub fn display(&mut self, message: JsonMessage, now_unix: i64) -> Result<()> {
        if let Some(aux) = message.aux {
            self.aux.push(aux);
            return Ok(());
        }
        let has_progress = message.progress_detail.is_some() || !message.progress.is_empty();
        let mut lines_below = 0;
        if !message.id.is_empty() && has_progress {
            let line = match self.lines.get(&message.id) {
                Some(&line) => line,
                None => {
                    let line = self.lines.len();
                    self.lines.insert(message.id.clone(), line);
                    if self.terminal {
                        self.out.write_all(b"\n")?;
                    }
                    line
                }
            };
            lines_below = self.lines.len() - line;
            if self.terminal {
                write!(self.out, "\x1b[{lines_below}A")?;
            }
        } else {
            // Output that is not a layer line ends the block of lines being updated.
            self.lines.clear();
        }
        let result = self.display_message(&message, now_unix);
        if !message.id.is_empty() && self.terminal && lines_below > 0 {
            write!(self.out, "\x1b[{lines_below}B")?;
        }
        self.out.flush()?;
        result
    }

    fn display_message(&mut self, message: &JsonMessage, now_unix: i64) -> Result<()> {
        if !message.error.is_empty()
            || message
                .error_detail
                .as_ref()
                .is_some_and(|d| !d.message.is_empty())
        {
            let text = match &message.error_detail {
                Some(detail) if !detail.message.is_empty() => detail.message.clone(),
                _ => message.error.clone(),
            };
            return Err(CliError::Message(text));
        }
        let bar = match &message.progress_detail {
            Some(detail) => detail.render(self.width, now_unix),
            None => message.progress.clone(),
        };
        let in_place = self.terminal
            && message.stream.is_empty()
            && (message.progress_detail.is_some() || !message.progress.is_empty());
        let end = if in_place {
            self.out.write_all(b"\x1b[2K\r")?;
            "\r"
        } else {
            if !bar.is_empty() {
                // Bars only make sense on a terminal.
                return Ok(());
            }
            ""
        };
        if !message.id.is_empty() {
            write!(self.out, "{}: ", message.id)?;
        }
        if !message.from.is_empty() {
            write!(self.out, "(from {}) ", message.from)?;
        }
        if in_place {
            write!(self.out, "{} {}{}", message.status, bar, end)?;
        } else if !message.stream.is_empty() {
            write!(self.out, "{}{}", message.stream, end)?;
        } else {
            writeln!(self.out, "{}{}", message.status, end)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PULL: &str = concat!(
        r#"{"status":"Pulling from library/busybox","id":"latest"}"#,
        "\r\n",
        r#"{"status":"Pulling fs layer","progressDetail":{},"id":"a1"}"#,
        "\r\n",
        r#"{"status":"Pulling fs layer","progressDetail":{},"id":"b2"}"#,
        "\r\n",
        r#"{"status":"Downloading","progressDetail":{"current":1000000,"total":2000000},"progress":"[==>  ]","id":"a1"}"#,
        "\r\n",
        r#"{"status":"Pull complete","progressDetail":{},"id":"a1"}"#,
        "\r\n",
        r#"{"status":"Pull complete","progressDetail":{},"id":"b2"}"#,
        "\r\n",
        r#"{"status":"Digest: sha256:abc"}"#,
        "\r\n",
        r#"{"status":"Status: Downloaded newer image for busybox:latest"}"#,
        "\r\n",
    );

    #[test]
    fn plain_output_drops_bars_and_keeps_statuses() {
        let mut renderer = ProgressRenderer::new(Vec::new(), false, 0);
        // Fed in awkward pieces to exercise line reassembly.
        for chunk in PULL.as_bytes().chunks(7) {
            renderer.feed(chunk, 0).expect("valid stream");
        }
        renderer.finish(0).expect("valid stream");
        let text = String::from_utf8(renderer.into_inner()).expect("utf8");
        assert_eq!(
            text,
            "latest: Pulling from library/busybox\n\
             a1: Pulling fs layer\n\
             b2: Pulling fs layer\n\
             a1: Pull complete\n\
             b2: Pull complete\n\
             Digest: sha256:abc\n\
             Status: Downloaded newer image for busybox:latest\n"
        );
    }

    #[test]
    fn terminal_output_updates_layer_lines_in_place() {
        let mut renderer = ProgressRenderer::new(Vec::new(), true, 80);
        renderer.feed(PULL.as_bytes(), 0).expect("valid stream");
        let text = String::from_utf8(renderer.into_inner()).expect("utf8");
        let expected = concat!(
            "latest: Pulling from library/busybox\n",
            // a1 gets line 0: newline, up 1, draw, down 1.
            "\n\x1b[1A\x1b[2K\ra1: Pulling fs layer \r\x1b[1B",
            "\n\x1b[1A\x1b[2K\rb2: Pulling fs layer \r\x1b[1B",
            // a1 is two lines up now.
            "\x1b[2A\x1b[2K\ra1: Downloading      1MB/2MB\r\x1b[2B",
            "\x1b[2A\x1b[2K\ra1: Pull complete \r\x1b[2B",
            "\x1b[1A\x1b[2K\rb2: Pull complete \r\x1b[1B",
            "Digest: sha256:abc\n",
            "Status: Downloaded newer image for busybox:latest\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn error_message_ends_the_stream() {
        let mut renderer = ProgressRenderer::new(Vec::new(), false, 0);
        let stream = concat!(
            r#"{"status":"Pulling from library/nope","id":"latest"}"#,
            "\n",
            r#"{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}"#,
            "\n",
        );
        let err = renderer.feed(stream.as_bytes(), 0).expect_err("error line");
        assert_eq!(err.to_string(), "manifest unknown");
    }

    #[test]
    fn aux_messages_are_collected_not_printed() {
        let mut renderer = ProgressRenderer::new(Vec::new(), false, 0);
        renderer
            .feed(b"{\"aux\":{\"Tag\":\"latest\",\"Digest\":\"sha256:1\",\"Size\":5}}\n{\"stream\":\"Loaded image: x:1\\n\"}\n", 0)
            .expect("valid");
        assert_eq!(renderer.aux.len(), 1);
        assert_eq!(
            String::from_utf8(renderer.into_inner()).expect("utf8"),
            "Loaded image: x:1\n"
        );
    }

    #[test]
    fn bar_on_wide_terminals() {
        let detail = ProgressDetail {
            current: 50,
            total: 100,
            start: 0,
            units: String::new(),
            hide_counts: false,
        };
        assert_eq!(
            detail.render(120, 0),
            format!("[{}>{}]      50B/100B", "=".repeat(25), " ".repeat(25))
        );
        let timed = ProgressDetail {
            start: 100,
            ..detail
        };
        assert_eq!(timed.render(80, 110), "     50B/100B 10s");
    }
}
