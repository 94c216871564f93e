//! A file of withdrawn hosts, followed: `rookery tracker --withdrawn FILE` withdraws
//! every host named in it, one name per line, including lines appended while it runs.
//!
//! This is how a tracker on the origin host learns what the embedded tracker is told
//! directly: the controller appends the name of a host whose agent failed to start
//! (`printf '%s\n' NAME >> FILE` over the origin host's connection), and that host's
//! successors stop waiting for it at once instead of after the start-up grace. An
//! operator running a tracker on its own can do the same by hand.
//!
//! Bounded: at most [`MAX_READ`] bytes are read per look, a line longer than
//! [`MAX_LINE`] is skipped, and only whole lines count (a name being written is read
//! at the next look).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::tracker::server::Tracker;

/// How often the file is looked at.
const EVERY: Duration = Duration::from_millis(200);
/// Bytes read at most per look.
const MAX_READ: usize = 64 << 10;
/// The longest line taken as a host name.
const MAX_LINE: usize = 255;

/// Follows `path` until `cancel`, withdrawing each host named in it from `tracker`.
pub async fn follow(tracker: Tracker, path: PathBuf, cancel: CancellationToken) {
    let mut reader = Reader::default();
    loop {
        for name in reader.new_names(&path) {
            tracing::info!(host = %name, "withdrawn (named in {})", path.display());
            tracker.withdraw(&name);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Where in the file the last look ended, and the part of a line not yet complete.
#[derive(Default)]
struct Reader {
    offset: u64,
    partial: Vec<u8>,
    /// The partial line grew past [`MAX_LINE`]: drop the rest of it.
    skipping: bool,
}

impl Reader {
    /// The names on the lines completed since the last look. A file that is missing
    /// or shorter than before (replaced) is read again from the start.
    fn new_names(&mut self, path: &Path) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            *self = Reader::default();
        }
        let mut buf = Vec::new();
        let read = f
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| f.take(MAX_READ as u64).read_to_end(&mut buf));
        if read.is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.lines(&buf)
    }

    /// Splits `buf` into names, keeping an unfinished last line for later.
    fn lines(&mut self, buf: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for &b in buf {
            if b != b'\n' {
                if self.partial.len() < MAX_LINE {
                    self.partial.push(b);
                } else {
                    self.skipping = true;
                }
                continue;
            }
            let line = std::mem::take(&mut self.partial);
            if !std::mem::take(&mut self.skipping) {
                let name = String::from_utf8_lossy(&line).trim().to_string();
                if !name.is_empty() {
                    names.push(name);
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_once_each_and_a_replaced_file_again() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("withdrawn");
        let mut r = Reader::default();
        assert!(r.new_names(&f).is_empty(), "no file yet");
        std::fs::write(&f, "a\n b \n\nc").unwrap();
        assert_eq!(r.new_names(&f), ["a", "b"]);
        assert!(r.new_names(&f).is_empty(), "nothing new");
        let mut file = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        std::io::Write::write_all(&mut file, b"3\nd\n").unwrap();
        assert_eq!(r.new_names(&f), ["c3", "d"]);
        // A long line is skipped whole; the next one counts.
        let long = "x".repeat(MAX_LINE + 10);
        std::io::Write::write_all(&mut file, format!("{long}\ne\n").as_bytes()).unwrap();
        assert_eq!(r.new_names(&f), ["e"]);
        // Replaced by a shorter file: read from the start.
        std::fs::write(&f, "f\n").unwrap();
        assert_eq!(r.new_names(&f), ["f"]);
    }
}
