//! The local terminal: detecting one, raw mode for `-t` sessions, and its size.

use rustix::termios::{self, OptionalActions, Termios};

pub fn stdin_is_terminal() -> bool {
    termios::isatty(rustix::stdio::stdin())
}

pub fn stdout_is_terminal() -> bool {
    termios::isatty(rustix::stdio::stdout())
}

/// Puts stdin's terminal in raw mode (keys go to the container unprocessed, no local
/// echo) and restores the saved settings when dropped, on every exit path of the session.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    pub fn enable() -> std::io::Result<RawTerminal> {
        let stdin = rustix::stdio::stdin();
        let saved = termios::tcgetattr(stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin, OptionalActions::Now, &raw)?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Turns off echo on stdin's terminal (a password prompt) until dropped; nothing when stdin is
/// not a terminal.
pub struct EchoOff {
    saved: Option<Termios>,
}

impl EchoOff {
    pub fn stdin() -> EchoOff {
        let stdin = rustix::stdio::stdin();
        let saved = termios::tcgetattr(stdin).ok();
        if let Some(saved) = &saved {
            let mut quiet = saved.clone();
            quiet.local_modes.remove(termios::LocalModes::ECHO);
            let _ = termios::tcsetattr(stdin, OptionalActions::Now, &quiet);
        }
        EchoOff { saved }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(rustix::stdio::stdin(), OptionalActions::Now, saved);
        }
    }
}

/// (rows, columns) of the terminal on stdout, or stdin when stdout is redirected.
pub fn window_size() -> Option<(u16, u16)> {
    let size = termios::tcgetwinsize(rustix::stdio::stdout())
        .or_else(|_| termios::tcgetwinsize(rustix::stdio::stdin()))
        .ok()?;
    if size.ws_row == 0 || size.ws_col == 0 {
        return None;
    }
    Some((size.ws_row, size.ws_col))
}

/// Terminal width for progress bars; 0 when not a terminal.
pub fn width() -> u16 {
    window_size().map(|(_, cols)| cols).unwrap_or(0)
}
