//! Entering an existing network namespace from the calling thread (what
//! `podnet pod exec` does before it execs the user's command).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Moves the calling thread into the network namespace whose file is `path`
/// (`/var/run/netns/NAME`, `/proc/PID/ns/net`). Only this thread moves;
/// processes it spawns or execs afterwards start in that namespace. Needs
/// `CAP_SYS_ADMIN`. Errors name the step that failed and the path.
pub fn enter_netns_path(path: &Path) -> io::Result<()> {
    let file = File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("open network namespace {}: {e}", path.display()),
        )
    })?;
    // SAFETY: `file` owns an open descriptor that stays valid for the whole
    // call (it is dropped after); setns(2) only reads it and does not keep it.
    // CLONE_NEWNET makes the kernel check that it is a network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => " (entering a namespace needs root / CAP_SYS_ADMIN)",
            Some(libc::EINVAL) => " (the file is not a network namespace)",
            _ => "",
        };
        return Err(io::Error::new(
            e.kind(),
            format!("setns({}, CLONE_NEWNET): {e}{hint}", path.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_names_the_path() {
        let err = enter_netns_path(Path::new("/nonexistent/netns/x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/netns/x"), "{err}");
    }

    #[test]
    fn a_regular_file_is_not_a_namespace() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = enter_netns_path(file.path()).unwrap_err();
        assert!(err.to_string().contains("setns("), "{err}");
    }
}
