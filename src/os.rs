//! What rookery asks of this machine's operating system, shared by the controller and
//! the host agent: whether a process still runs, files replaced atomically, and a pipe
//! that is not inherited. Linux is the host platform; the controller also builds for
//! macOS, where the calls Linux alone has take their macOS form here.

use std::io::Write;
use std::path::Path;

/// Whether process `pid` exists and has not exited. A detached supervisor's parent
/// is init, which may reap it late (a second later in some containers): its zombie
/// still answers signal 0, so the state in `/proc` decides.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if pid == 0 || unsafe { libc::kill(pid as i32, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => !matches!(
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => true, // no procfs: trust the signal
    }
}

/// Writes a temporary file beside `path`, sets its mode, then renames it into place.
pub fn write_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// A pipe whose two ends close on exec: `(read, write)`.
pub fn cloexec_pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    #[cfg(target_os = "linux")]
    // SAFETY: pipe2 fills two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    #[cfg(not(target_os = "linux"))]
    // SAFETY: pipe fills two descriptors, then each gets FD_CLOEXEC (no other thread
    // execs in between: the callers run single-threaded).
    let rc = unsafe {
        let rc = libc::pipe(fds.as_mut_ptr());
        if rc == 0 {
            libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC);
        }
        rc
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn an_exited_process_not_yet_reaped_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not waited for: a zombie that still answers signal 0.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            assert!(Instant::now() < deadline, "a zombie counted as alive");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: signal 0 to our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid as i32, 0) }, 0, "reaped too early");
        child.wait().unwrap();
        assert!(alive(std::process::id()));
    }
}
