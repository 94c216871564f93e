//! The fluent `Test`, in the style of just's: write fixture files into a temporary
//! directory, run `rookery` there, and check status, stdout and stderr. A `Test` does
//! nothing until `run`, so the type is `#[must_use]`: a chain that forgets `.run()` is a
//! warning (an error under `-D warnings`), not a test that checks nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::BIN;

#[must_use = "a Test checks nothing until `.run()`"]
pub struct Test {
    dir: tempfile::TempDir,
    args: Vec<String>,
    status: i32,
    stdout: Option<String>,
    stderr: Option<String>,
    stdout_has: Vec<String>,
    stderr_has: Vec<String>,
}

/// What a passing `run` leaves: its stdout, and the directory to build on.
pub struct Output {
    pub stdout: String,
    pub dir: tempfile::TempDir,
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::tempdir().expect("temp dir"),
            args: Vec::new(),
            status: 0,
            stdout: None,
            stderr: None,
            stdout_has: Vec::new(),
            stderr_has: Vec::new(),
        }
    }

    /// A test that runs in the directory of an earlier one (to build on its files).
    pub fn new_in(dir: tempfile::TempDir) -> Test {
        Test { dir, ..Test::new() }
    }

    /// Writes a fixture file (relative to the test's directory).
    pub fn file(self, path: &str, contents: &str) -> Test {
        self.bytes(path, contents.as_bytes())
    }

    /// Writes a fixture file of raw bytes (text that is not UTF-8, say).
    pub fn bytes(self, path: &str, contents: &[u8]) -> Test {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Test {
        self.args
            .extend(args.into_iter().map(|s| s.as_ref().to_string()));
        self
    }

    pub fn status(mut self, code: i32) -> Test {
        self.status = code;
        self
    }

    /// The exact stdout.
    pub fn stdout(mut self, text: &str) -> Test {
        self.stdout = Some(text.to_string());
        self
    }

    /// The exact stderr.
    pub fn stderr(mut self, text: &str) -> Test {
        self.stderr = Some(text.to_string());
        self
    }

    pub fn stdout_has(mut self, text: &str) -> Test {
        self.stdout_has.push(text.to_string());
        self
    }

    pub fn stderr_has(mut self, text: &str) -> Test {
        self.stderr_has.push(text.to_string());
        self
    }

    /// Runs `rookery` with the arguments in the test's directory and checks what was
    /// asked; a failed check is reported at the test's line, not here.
    #[track_caller]
    pub fn run(self) -> Output {
        let out = Command::new(BIN)
            .args(&self.args)
            .current_dir(self.dir.path())
            .env_remove("ROOKERY_INVENTORY")
            .env("NO_COLOR", "1")
            .output()
            .expect("run rookery");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let context = format!(
            "rookery {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            self.args.join(" ")
        );
        assert_eq!(
            out.status.code(),
            Some(self.status),
            "unexpected exit status\n{context}"
        );
        if let Some(want) = &self.stdout {
            assert_eq!(&stdout, want, "stdout differs\n{context}");
        }
        if let Some(want) = &self.stderr {
            assert_eq!(&stderr, want, "stderr differs\n{context}");
        }
        for want in &self.stdout_has {
            assert!(
                stdout.contains(want.as_str()),
                "stdout lacks {want:?}\n{context}"
            );
        }
        for want in &self.stderr_has {
            assert!(
                stderr.contains(want.as_str()),
                "stderr lacks {want:?}\n{context}"
            );
        }
        Output {
            stdout,
            dir: self.dir,
        }
    }
}

/// The repository root (for the example files).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}
