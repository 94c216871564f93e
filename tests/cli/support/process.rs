//! Processes the tests start and wait for: the built binary, children killed when the
//! test ends (also when it fails), output read line by line as it comes, process
//! groups and Ctrl-C, free ports, and polling with a deadline.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `rookery` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rookery");

/// Waits until `done` holds, asking every `every`; fails with `what` (said only then)
/// once `within` has passed.
#[track_caller]
pub fn wait_until<S: std::fmt::Display>(
    within: Duration,
    every: Duration,
    mut done: impl FnMut() -> bool,
    what: impl FnOnce() -> S,
) {
    let until = Instant::now() + within;
    while !done() {
        if Instant::now() >= until {
            panic!("{}", what());
        }
        std::thread::sleep(every);
    }
}

/// A free loopback port (bound, then released for the process under test).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port` of 127.0.0.1.
#[track_caller]
pub fn wait_for_port(port: u16) {
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        || format!("nothing listens on port {port}"),
    );
}

/// A child that is killed when dropped, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then what it printed on stdout until it exited.
    pub fn terminate(&mut self) -> String {
        // SAFETY: kill(2) on a child of ours.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let mut out = String::new();
        if let Some(mut s) = self.0.stdout.take() {
            use std::io::Read;
            s.read_to_string(&mut out).unwrap();
        }
        let _ = self.0.wait();
        out
    }
}

/// Starts `cmd`, its stdin closed, its stdout and stderr piped.
pub fn start(cmd: &mut Command) -> Proc {
    Proc(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// `rookery ARGS` in `dir`, started as [`start`] does.
pub fn spawn(dir: &Path, args: &[&str]) -> Proc {
    start(Command::new(BIN).args(args).current_dir(dir))
}

/// Runs `cmd`, which must succeed; its stdout.
#[track_caller]
pub fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `rookery ARGS` in `dir`, which must succeed; its stdout.
#[track_caller]
pub fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a child's output on a thread: every line is kept, and `wait_for` waits until
/// a line containing a text has arrived.
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Lines {
    pub fn read(stream: impl std::io::Read + Send + 'static) -> Lines {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        let thread = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                keep.lock().unwrap().push(line);
            }
        });
        Lines { lines, thread }
    }

    #[track_caller]
    pub fn wait_for(&self, text: &str) {
        wait_until(
            Duration::from_secs(90),
            Duration::from_millis(10),
            || self.lines.lock().unwrap().iter().any(|l| l.contains(text)),
            || format!("no line with {text:?}:\n{}", self.all()),
        );
    }

    pub fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn finish(self) -> String {
        let Lines { lines, thread } = self;
        thread.join().unwrap();
        lines.lock().unwrap().join("\n")
    }
}

/// `cmd` in its own process group, as a terminal runs it: a Ctrl-C there signals the
/// whole group, remote commands run over SSH included.
pub fn spawn_in_group(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Ctrl-C, as a terminal sends it: SIGINT to the process group of `child`.
pub fn ctrl_c(child: &Child) {
    // SAFETY: SIGINT to the process group of a child we started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
}

/// Process `pid`'s fields in /proc/PID/stat after its name (state, parent, ...), or
/// `None` once it is gone.
fn stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit(')').next()?;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Whether `pid` has exited and waits to be reaped (or is gone already).
pub fn is_zombie(pid: u32) -> bool {
    stat(pid).is_none_or(|f| f.first().is_some_and(|s| s.starts_with('Z')))
}

/// The parent of process `pid`.
pub fn parent_of(pid: u32) -> u32 {
    stat(pid).unwrap()[1].parse().unwrap()
}

/// Whether a process whose command line matches `pattern` (`pgrep -f`) runs.
pub fn running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

/// SIGTERM to every process whose command line matches `pattern` (`pkill -f`).
pub fn kill_all(pattern: &str) {
    let _ = Command::new("pkill").args(["-f", pattern]).status();
}
