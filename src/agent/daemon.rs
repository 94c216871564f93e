//! Fork-and-seed: the agent reports over SSH as soon as its copy is verified, then
//! keeps seeding in the background with nothing attached to the session.
//!
//! The process forks before any thread or runtime exists. The child calls `setsid`,
//! points stdin at /dev/null and stdout/stderr at a log file, and does all the work;
//! it writes its JSON event lines into a pipe. The parent relays those lines to its
//! own stdout and exits when the pipe closes, which the child does right after the
//! result line. The SSH command therefore returns with the result while the child
//! seeds for the window and then exits; nothing is left running after that.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Which side of the fork this process is.
pub enum Side {
    /// The original process: relays the child's lines; returns whether a result
    /// line said `"ok": true`.
    Parent { ok: bool, saw_result: bool },
    /// The background process, with the write end of the pipe.
    Child(File),
}

/// Forks. Must be called while the process is single-threaded.
pub fn fork_with_pipe(log: &Path) -> std::io::Result<Side> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log_file = OpenOptions::new().create(true).append(true).open(log)?;
    let (read, write) = crate::os::cloexec_pipe()?;
    let _ = std::io::stdout().flush();
    // SAFETY: single-threaded at this point (see above), so fork is sound.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            drop(read);
            let null = File::open("/dev/null")?;
            // SAFETY: plain descriptor plumbing in the new process.
            unsafe {
                libc::setsid();
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(log_file.as_raw_fd(), 1);
                libc::dup2(log_file.as_raw_fd(), 2);
            }
            Ok(Side::Child(write))
        }
        _child => {
            drop(write);
            drop(log_file);
            let mut ok = false;
            let mut saw_result = false;
            let stdout = std::io::stdout();
            for line in BufReader::new(read).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["event"] == "result"
                {
                    saw_result = true;
                    ok = v["ok"] == true;
                }
                let mut out = stdout.lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            Ok(Side::Parent { ok, saw_result })
        }
    }
}
