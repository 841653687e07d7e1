//! Pseudo-terminals for commands run with a terminal (`kubectl exec -t`).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// The controlling side of a pseudo-terminal: what the command writes is
/// read here, what is written here is its input.
#[derive(Debug)]
pub struct Terminal(File);

impl Terminal {
    /// A new pseudo-terminal: its controlling side, and the side a
    /// command's stdin, stdout and stderr use.
    pub fn open() -> io::Result<(Terminal, OwnedFd)> {
        let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        Ok((Terminal(File::from(pty.master)), pty.slave))
    }

    /// Another handle on the controlling side (one thread reads it while
    /// another writes).
    pub fn try_clone_file(&self) -> io::Result<File> {
        self.0.try_clone()
    }

    /// Sets the terminal's size in characters; the command gets SIGWINCH.
    pub fn set_size(&self, columns: u16, rows: u16) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which
        // points to a live local for the whole call; the descriptor is open
        // (owned by `self`).
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// For a forked child before exec, whose stdin is a terminal's command
/// side: makes it a session leader with that terminal as its controlling
/// terminal (job control and ^C work, and closing the terminal hangs it
/// up). Only async-signal-safe calls.
pub fn take_controlling_terminal() -> io::Result<()> {
    nix::unistd::setsid().map_err(io::Error::from)?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal the
    // terminal from another session); fd 0 is the terminal, set up as
    // stdin before this runs.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
