//! runc-shaped log lines: `time="…" level=error msg="…"` or, with `--log-format json`,
//! `{"level":"error","msg":"…","time":"…"}`. containerd's shim shows the user the last
//! `level=error` entry of the log file.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::cli::LogFormat;

pub struct Logger {
    out: Mutex<Box<dyn Write + Send>>,
    format: LogFormat,
    level: LevelFilter,
    to_file: bool,
}

impl Logger {
    /// Installs the logger; with no file, lines go to stderr.
    pub fn install(
        file: Option<&Path>,
        format: LogFormat,
        debug: bool,
    ) -> std::io::Result<&'static Logger> {
        let (out, to_file): (Box<dyn Write + Send>, bool) = match file {
            Some(path) => (
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
                    as Box<dyn Write + Send>,
                true,
            ),
            None => (Box::new(std::io::stderr()), false),
        };
        let logger: &'static Logger = Box::leak(Box::new(Logger {
            out: Mutex::new(out),
            format,
            level: if debug {
                LevelFilter::Debug
            } else {
                LevelFilter::Warn
            },
            to_file,
        }));
        log::set_logger(logger).ok();
        log::set_max_level(logger.level);
        Ok(logger)
    }

    pub fn writes_to_file(&self) -> bool {
        self.to_file
    }

    fn line(&self, level: Level, msg: &str) -> String {
        let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let level = match level {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        match self.format {
            LogFormat::Json => {
                let v = serde_json::json!({"level": level, "msg": msg, "time": time});
                format!("{v}\n")
            }
            LogFormat::Text => {
                let quoted = serde_json::to_string(msg).unwrap_or_default();
                format!("time=\"{time}\" level={level} msg={quoted}\n")
            }
        }
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = self.line(record.level(), &record.args().to_string());
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {
        if let Ok(mut out) = self.out.lock() {
            let _ = out.flush();
        }
    }
}
