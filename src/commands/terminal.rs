//! The controller's terminal for `bai exec -t`: raw mode for as long as the remote command runs, restored
//! on every way out (the guard's `Drop` runs on return, on error and on unwinding), and its size.

use std::io;

/// The terminal in raw mode until dropped: every key goes to the remote command as it is typed (Ctrl-C
/// included, which the remote terminal turns into its SIGINT), nothing echoed here.
pub struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    pub fn enter(fd: i32) -> io::Result<RawMode> {
        // SAFETY: termios is plain data, filled by tcgetattr before it is read.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a termios; fails cleanly (ENOTTY) on a descriptor that is no terminal.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: as above; TCSANOW applies it at once.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The terminal's size on `fd`: columns, rows; `None` when it is no terminal.
pub fn size(fd: i32) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data, filled by the ioctl when it succeeds.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer given.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}
