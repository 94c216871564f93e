//! Host key trust: OpenSSH's `known_hosts` files, read and (with accept-new) appended.
//!
//! russh ships a checker, but it stops at the first line it cannot parse, splits on
//! single spaces only, and knows neither wildcards, negation, `@revoked` nor
//! `@cert-authority`. An operator's known_hosts has all of these, so rookery reads it
//! the way `ssh` does:
//!
//! - host patterns: comma lists, `*` and `?` wildcards, `!negation`, hashed entries
//!   (`|1|salt|hmac`), and `[host]:port` for ports other than 22;
//! - `@revoked` keys are refused outright; `@cert-authority` lines are skipped (rookery
//!   does not accept host certificates);
//! - a host whose recorded key of the same type differs is a hard error naming the
//!   file and line, never a prompt; a host recorded only with other key types is
//!   unknown (as with `ssh`), and the connection prefers the recorded types so that
//!   case rarely arises.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};
use russh::keys::PublicKey;

/// What checking a presented key against the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line records exactly this key for the host.
    Trusted { file: PathBuf, line: usize },
    /// A line records another key of the same type for the host.
    Changed { file: PathBuf, line: usize },
    /// The key is listed as `@revoked`.
    Revoked { file: PathBuf, line: usize },
    /// No line records a key of this type for the host.
    Unknown,
}

/// One `known_hosts` entry that applies to a host.
#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    line: usize,
    revoked: bool,
    key: PublicKey,
}

/// The known_hosts files of one connection target: read in order; new keys are
/// appended to the first.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    files: Vec<PathBuf>,
}

/// The name a host is recorded under: `host`, or `[host]:port` off port 22.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

impl KnownHosts {
    pub fn new(files: Vec<PathBuf>) -> KnownHosts {
        KnownHosts { files }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Key algorithms recorded for the host, so the connection can ask for them first.
    pub fn algorithms(&self, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
        let mut algs = Vec::new();
        for e in self.entries(host, port) {
            if !e.revoked && !algs.contains(&e.key.algorithm()) {
                algs.push(e.key.algorithm());
            }
        }
        algs
    }

    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let entries = self.entries(host, port);
        // A revoked key is refused even if another line trusts it.
        if let Some(e) = entries
            .iter()
            .find(|e| e.revoked && e.key.key_data() == key.key_data())
        {
            return Verdict::Revoked {
                file: e.file.clone(),
                line: e.line,
            };
        }
        let trusted = entries.iter().filter(|e| !e.revoked);
        let mut changed = None;
        for e in trusted {
            if e.key.key_data() == key.key_data() {
                return Verdict::Trusted {
                    file: e.file.clone(),
                    line: e.line,
                };
            }
            if e.key.algorithm() == key.algorithm() && changed.is_none() {
                changed = Some(Verdict::Changed {
                    file: e.file.clone(),
                    line: e.line,
                });
            }
        }
        changed.unwrap_or(Verdict::Unknown)
    }

    /// Records a key for the host in the first file (accept-new), as `ssh` does.
    ///
    /// Connections to many hosts learn at once, from this process and maybe others:
    /// the file is held with an exclusive `flock` while it is read and appended to,
    /// and the line goes out in one write, so lines never interleave. The files are
    /// checked again under the lock: what another connection recorded meanwhile
    /// decides (the same key is not written twice; another key is `Changed`).
    /// Returns the verdict that then holds for the key.
    pub fn learn(&self, host: &str, port: u16, key: &PublicKey) -> std::io::Result<Verdict> {
        let file = self.files.first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no known_hosts file")
        })?;
        if let Some(dir) = file.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let openssh = key
            .to_openssh()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        // Drop the comment of the presented key; keep `type base64`.
        let mut parts = openssh.split_whitespace();
        let (alg, b64) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(file)?;
        // SAFETY: flock on a descriptor this function owns; closing it unlocks.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut text)?;
        let verdict = self.check(host, port, key);
        if verdict != Verdict::Unknown {
            return Ok(verdict);
        }
        let nl = if text.last().is_some_and(|&c| c != b'\n') {
            "\n"
        } else {
            ""
        };
        let line = format!("{nl}{} {alg} {b64}\n", lookup_name(host, port));
        f.write_all(line.as_bytes())?;
        let lines = text.iter().filter(|&&c| c == b'\n').count() + 1 + usize::from(!nl.is_empty());
        Ok(Verdict::Trusted {
            file: file.clone(),
            line: lines,
        })
    }

    fn entries(&self, host: &str, port: u16) -> Vec<Entry> {
        let name = lookup_name(host, port);
        let mut out = Vec::new();
        for file in &self.files {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for (i, raw) in text.lines().enumerate() {
                if let Some((revoked, patterns, key)) = parse_line(raw)
                    && host_matches(patterns, &name)
                    && let Ok(key) = PublicKey::from_openssh(key)
                {
                    out.push(Entry {
                        file: file.clone(),
                        line: i + 1,
                        revoked,
                        key,
                    });
                }
            }
        }
        out
    }
}

/// Splits a line into (revoked, host patterns, `type base64`); `None` for blank lines,
/// comments, `@cert-authority` and malformed lines.
fn parse_line(raw: &str) -> Option<(bool, &str, &str)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut rest = line;
    let mut revoked = false;
    if let Some(r) = rest.strip_prefix('@') {
        let (marker, after) = r.split_once(char::is_whitespace)?;
        match marker {
            "revoked" => revoked = true,
            _ => return None,
        }
        rest = after.trim_start();
    }
    let (patterns, after) = rest.split_once(char::is_whitespace)?;
    let after = after.trim_start();
    let (alg, after) = after.split_once(char::is_whitespace)?;
    let b64 = after.split_whitespace().next()?;
    // `type base64` as one slice of the line, for the OpenSSH key parser.
    let start = alg.as_ptr() as usize - line.as_ptr() as usize;
    let end = b64.as_ptr() as usize - line.as_ptr() as usize + b64.len();
    Some((revoked, patterns, &line[start..end]))
}

/// OpenSSH's rule: some positive pattern matches and no negated pattern does.
fn host_matches(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(neg) = p.strip_prefix('!') {
            if glob_matches(neg, name) {
                return false;
            }
        } else if p.starts_with("|1|") {
            matched |= hashed_matches(p, name);
        } else if glob_matches(p, name) {
            matched = true;
        }
    }
    matched
}

fn hashed_matches(entry: &str, name: &str) -> bool {
    use data_encoding::BASE64;
    let mut parts = entry.split('|').skip(2);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` wildcards, case-insensitive like OpenSSH host matching. (The
/// inventory's glob, which backtracks only to the last `*`: a hostile line of many
/// stars costs at most pattern x name steps, not exponential time.)
fn glob_matches(pattern: &str, name: &str) -> bool {
    crate::config::selector::glob(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase())
}

/// The default files, as `ssh` reads them.
pub fn default_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = std::env::home_dir() {
        files.push(home.join(".ssh/known_hosts"));
        files.push(home.join(".ssh/known_hosts2"));
    }
    files.push(Path::new("/etc/ssh/ssh_known_hosts").to_path_buf());
    files.push(Path::new("/etc/ssh/ssh_known_hosts2").to_path_buf());
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEY1ZMEDxEuCxav1ECWexej9TsRu2xdJNzNlJNZQS0ym";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDfk5RCqwKRBDcNPfwBUfQCTJFS2YGfXYvpEp3SK5zpl";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn file(text: &str) -> (tempfile::TempDir, KnownHosts) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("known_hosts");
        std::fs::write(&f, text).unwrap();
        (dir, KnownHosts::new(vec![f]))
    }

    #[test]
    fn plain_and_bracketed_ports() {
        let (_d, kh) = file(&format!(
            "# c\n\n10.0.0.5 {ED_A}\n[10.0.0.6]:2222\t {ED_A} me@x\n"
        ));
        assert!(matches!(
            kh.check("10.0.0.5", 22, &key(ED_A)),
            Verdict::Trusted { line: 3, .. }
        ));
        assert_eq!(kh.check("10.0.0.5", 2222, &key(ED_A)), Verdict::Unknown);
        assert!(matches!(
            kh.check("10.0.0.6", 2222, &key(ED_A)),
            Verdict::Trusted { line: 4, .. }
        ));
        assert_eq!(kh.check("10.0.0.6", 22, &key(ED_A)), Verdict::Unknown);
    }

    #[test]
    fn a_different_key_of_the_same_type_is_changed_and_names_the_line() {
        let (_d, kh) = file(&format!("other {ED_B}\nweb-1,10.0.0.5 {ED_B}\n"));
        match kh.check("web-1", 22, &key(ED_A)) {
            Verdict::Changed { file, line } => {
                assert_eq!(line, 2);
                assert!(file.ends_with("known_hosts"));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn wildcards_and_negation() {
        let (_d, kh) = file(&format!("*.east.example,!bad.east.example {ED_A}\n"));
        assert!(matches!(
            kh.check("a.east.example", 22, &key(ED_A)),
            Verdict::Trusted { .. }
        ));
        assert!(matches!(
            kh.check("A.EAST.example", 22, &key(ED_A)),
            Verdict::Trusted { .. }
        ));
        assert_eq!(
            kh.check("bad.east.example", 22, &key(ED_A)),
            Verdict::Unknown
        );
        assert_eq!(kh.check("a.west.example", 22, &key(ED_A)), Verdict::Unknown);
    }

    #[test]
    fn hashed_entries_match_their_host_only() {
        // `ssh-keygen -H` output for "[127.0.0.2]:2222" with this salt.
        use data_encoding::BASE64;
        let salt = b"0123456789abcdefghij";
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"[127.0.0.2]:2222");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} {ED_A}\n",
            BASE64.encode(salt),
            BASE64.encode(&hash)
        );
        let (_d, kh) = file(&line);
        assert!(matches!(
            kh.check("127.0.0.2", 2222, &key(ED_A)),
            Verdict::Trusted { .. }
        ));
        assert_eq!(kh.check("127.0.0.3", 2222, &key(ED_A)), Verdict::Unknown);
    }

    #[test]
    fn revoked_wins_and_cert_authority_and_junk_are_skipped() {
        let (_d, kh) = file(&format!(
            "garbage\nweb-1 ssh-ed25519 notbase64\n@cert-authority * {ED_B}\nweb-1 {ED_A}\n@revoked * {ED_A}\n"
        ));
        assert!(matches!(
            kh.check("web-1", 22, &key(ED_A)),
            Verdict::Revoked { line: 5, .. }
        ));
        assert_eq!(kh.check("web-2", 22, &key(ED_B)), Verdict::Unknown);
    }

    #[test]
    fn learn_appends_a_line_that_is_then_trusted() {
        let (d, kh) = file(&format!("x {ED_B}")); // no final newline
        let learned = kh.learn("127.0.0.9", 2200, &key(ED_A)).unwrap();
        assert_eq!(
            learned,
            Verdict::Trusted {
                file: d.path().join("known_hosts"),
                line: 2
            }
        );
        let text = std::fs::read_to_string(d.path().join("known_hosts")).unwrap();
        assert!(
            text.ends_with(&format!("\n[127.0.0.9]:2200 {ED_A}\n")),
            "{text}"
        );
        assert!(matches!(
            kh.check("127.0.0.9", 2200, &key(ED_A)),
            Verdict::Trusted { line: 2, .. }
        ));
        assert_eq!(
            kh.algorithms("127.0.0.9", 2200),
            vec![key(ED_A).algorithm()]
        );
        // Learning it again adds nothing; another key recorded meanwhile (by another
        // connection) is a change, not a second line.
        kh.learn("127.0.0.9", 2200, &key(ED_A)).unwrap();
        assert!(matches!(
            kh.learn("127.0.0.9", 2200, &key(ED_B)).unwrap(),
            Verdict::Changed { line: 2, .. }
        ));
        let again = std::fs::read_to_string(d.path().join("known_hosts")).unwrap();
        assert_eq!(again, text);
    }

    /// Found by CI: two connections learning at once wrote
    /// `[h3]:2222[h2]:2222  ssh-ed25519ssh-ed25519 ...`, one write per piece.
    #[test]
    fn hosts_learned_at_once_get_a_whole_line_each() {
        let (d, kh) = file("");
        let kh = std::sync::Arc::new(kh);
        let start = std::sync::Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16u16)
            .map(|i| {
                let (kh, start) = (kh.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let k = key(if i % 2 == 0 { ED_A } else { ED_B });
                    kh.learn(&format!("10.0.0.{i}"), 2222, &k).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(d.path().join("known_hosts")).unwrap();
        assert_eq!(text.lines().count(), 16, "{text}");
        for i in 0..16u16 {
            let k = key(if i % 2 == 0 { ED_A } else { ED_B });
            assert!(
                matches!(
                    kh.check(&format!("10.0.0.{i}"), 2222, &k),
                    Verdict::Trusted { .. }
                ),
                "10.0.0.{i} was not learned:\n{text}"
            );
        }
    }
}
