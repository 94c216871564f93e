//! `demo-service`: a stand-in for a real service, deployed by rookery's demos.
//!
//! The embedded demo and the Vagrant cluster ship a build artifact that contains this
//! binary, then start, health-check and restart it in dependency order the way they
//! would a real service. It does the least a service must for that: it answers a health
//! check and reports its version, and it leaves a line for every start so that tests can
//! count restarts per version. It uses the standard library only, plus `libc` for the
//! signal handler.
//!
//! ```text
//! demo-service serve --name NAME --host HOST --version VERSION --state DIR [--listen IP:PORT]
//! demo-service check --name NAME --state DIR [--version VERSION] [--timeout SECS]
//! ```
//!
//! `serve` listens on `--listen` (default `127.0.0.1:0`, an ephemeral port), writes the
//! port to `DIR/NAME.port` (atomically, by rename), appends `NAME HOST VERSION PID
//! UNIX_SECONDS` to `DIR/starts.log`, and answers one HTTP/1.0 request per connection:
//!
//! - `GET /health`: `200` with `{"service":NAME,"host":HOST,"version":VERSION,"pid":PID}`,
//!   or `503` while the file `DIR/NAME.fail` exists (tests create it to fail a host);
//! - `GET /version`: `200` with the version;
//! - anything else: `404`.
//!
//! SIGTERM and SIGINT stop it: it finishes the requests in flight, removes its port file
//! (if no newer instance has replaced it) and exits 0.
//!
//! `check` reads the port file, sends `GET /health` to `127.0.0.1:PORT` and succeeds,
//! silently, if service NAME answers `200` (and, with `--version`, runs that version).
//!
//! Exit codes: 0 success, 1 failure (the reason on stderr, one line), 2 usage error.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
usage: demo-service serve --name NAME --host HOST --version VERSION --state DIR [--listen IP:PORT]
       demo-service check --name NAME --state DIR [--version VERSION] [--timeout SECS]";

/// How long the server waits for a request's line and headers, and for a client to
/// take the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// The largest request head (request line and headers) the server reads.
const MAX_HEAD: usize = 8 * 1024;
/// The largest answer `check` reads.
const MAX_RESPONSE: usize = 64 * 1024;

/// Set by SIGTERM and SIGINT; the accept loop polls it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Why a command did not succeed, which decides the exit code.
#[derive(Debug, PartialEq)]
enum Failure {
    /// `--help`: the usage on stdout, exit 0.
    Help,
    /// The command line is wrong: the message and the usage on stderr, exit 2.
    Usage(String),
    /// The command ran and failed: the message on stderr, exit 1.
    Failed(String),
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("demo-service: {message}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[OsString]) -> Result<(), Failure> {
    let args = args
        .iter()
        .map(|arg| {
            arg.to_str()
                .map(str::to_owned)
                .ok_or_else(|| usage(format!("argument is not UTF-8: {arg:?}")))
        })
        .collect::<Result<Vec<String>, Failure>>()?;
    match args.split_first() {
        Some((command, rest)) if command == "serve" => serve_command(ServeArgs::parse(rest)?),
        Some((command, rest)) if command == "check" => check(&CheckArgs::parse(rest)?),
        Some((command, _)) if command == "-h" || command == "--help" || command == "help" => {
            Err(Failure::Help)
        }
        Some((command, _)) => Err(usage(format!(
            "unknown command {command:?}: expected serve or check"
        ))),
        None => Err(usage("a command is needed: serve or check")),
    }
}

// ---------------------------------------------------------------------------------------
// The command line

/// `--flag VALUE` or `--flag=VALUE` pairs: only `known` flags, each at most once.
struct Flags(HashMap<&'static str, String>);

impl Flags {
    fn parse(args: &[String], known: &[&'static str]) -> Result<Flags, Failure> {
        let mut flags = HashMap::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(Failure::Help);
            }
            let (flag, inline_value) = match arg.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            let Some(&flag) = known.iter().find(|known| **known == flag) else {
                return Err(usage(if arg.starts_with('-') {
                    format!("unknown flag {flag}")
                } else {
                    format!("unexpected argument {arg:?}")
                }));
            };
            let value = match inline_value {
                Some(value) => value,
                None => args
                    .next()
                    .filter(|value| !value.starts_with("--"))
                    .cloned()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))?,
            };
            if flags.insert(flag, value).is_some() {
                return Err(usage(format!("{flag} is given twice")));
            }
        }
        Ok(Flags(flags))
    }

    fn optional(&mut self, flag: &str) -> Option<String> {
        self.0.remove(flag)
    }

    fn required(&mut self, flag: &str) -> Result<String, Failure> {
        self.optional(flag)
            .ok_or_else(|| usage(format!("{flag} is required")))
    }
}

/// A service name names files in the state directory: letters, digits, `.`, `_` and `-`,
/// not starting with `.`.
fn checked_name(name: String) -> Result<String, Failure> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(usage(format!(
            "--name {name:?}: use letters, digits, '.', '_' and '-', not starting with '.'"
        )));
    }
    Ok(name)
}

/// A host or version is a field of the space-separated `starts.log`: no whitespace or
/// control characters.
fn checked_word(flag: &str, value: String) -> Result<String, Failure> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(usage(format!(
            "{flag} {value:?}: must be non-empty, without spaces or control characters"
        )));
    }
    Ok(value)
}

fn checked_dir(dir: String) -> Result<PathBuf, Failure> {
    if dir.is_empty() {
        return Err(usage("--state must not be empty"));
    }
    Ok(PathBuf::from(dir))
}

/// What `serve` runs.
#[derive(Debug)]
struct Service {
    name: String,
    host: String,
    version: String,
    /// The state directory: port files, fail files, `starts.log`.
    state: PathBuf,
    pid: u32,
}

impl Service {
    fn fail_file(&self) -> PathBuf {
        self.state.join(format!("{}.fail", self.name))
    }

    /// The body of a healthy `GET /health`.
    fn health_json(&self) -> String {
        format!(
            "{{\"service\":{},\"host\":{},\"version\":{},\"pid\":{}}}",
            json_quote(&self.name),
            json_quote(&self.host),
            json_quote(&self.version),
            self.pid
        )
    }
}

/// Where a service writes its port, for `check` to find it.
fn port_file(state: &Path, name: &str) -> PathBuf {
    state.join(format!("{name}.port"))
}

struct ServeArgs {
    service: Service,
    listen: SocketAddr,
}

impl ServeArgs {
    fn parse(args: &[String]) -> Result<ServeArgs, Failure> {
        let mut flags = Flags::parse(
            args,
            &["--name", "--host", "--version", "--state", "--listen"],
        )?;
        let service = Service {
            name: checked_name(flags.required("--name")?)?,
            host: checked_word("--host", flags.required("--host")?)?,
            version: checked_word("--version", flags.required("--version")?)?,
            state: checked_dir(flags.required("--state")?)?,
            pid: std::process::id(),
        };
        let listen = match flags.optional("--listen") {
            None => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            Some(text) => text
                .parse()
                .map_err(|_| usage(format!("--listen {text:?}: expected IP:PORT")))?,
        };
        Ok(ServeArgs { service, listen })
    }
}

struct CheckArgs {
    name: String,
    state: PathBuf,
    version: Option<String>,
    /// For the connection, and again for the answer.
    timeout: Duration,
}

impl CheckArgs {
    fn parse(args: &[String]) -> Result<CheckArgs, Failure> {
        let mut flags = Flags::parse(args, &["--name", "--state", "--version", "--timeout"])?;
        let timeout = match flags.optional("--timeout") {
            None => Duration::from_secs(2),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|secs| *secs > 0.0)
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or_else(|| usage(format!("--timeout {text:?}: expected seconds > 0")))?,
        };
        Ok(CheckArgs {
            name: checked_name(flags.required("--name")?)?,
            state: checked_dir(flags.required("--state")?)?,
            version: match flags.optional("--version") {
                Some(version) => Some(checked_word("--version", version)?),
                None => None,
            },
            timeout,
        })
    }
}

// ---------------------------------------------------------------------------------------
// serve

fn serve_command(ServeArgs { service, listen }: ServeArgs) -> Result<(), Failure> {
    let name = &service.name;
    install_signal_handlers()
        .map_err(|e| Failure::Failed(format!("{name}: cannot handle signals: {e}")))?;
    let listener = TcpListener::bind(listen)
        .map_err(|e| Failure::Failed(format!("{name}: cannot listen on {listen}: {e}")))?;
    let addr = announce(&listener, &service)?;
    eprintln!(
        "demo-service {name} {} on {} listening on {addr}",
        service.version, service.host
    );
    let served = serve(listener, &service, &STOP);
    retire(&service, addr.port());
    eprintln!(
        "demo-service {name} {} on {} stopped",
        service.version, service.host
    );
    served
}

/// Makes a bound service findable: creates the state directory, writes the port file
/// for `check` and appends a line to `starts.log` for tests. Returns the bound address.
fn announce(listener: &TcpListener, service: &Service) -> Result<SocketAddr, Failure> {
    let name = &service.name;
    let fail = |what: &str, path: &Path, e: io::Error| {
        Failure::Failed(format!("{name}: cannot {what} {}: {e}", path.display()))
    };
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Failed(format!("{name}: no local address: {e}")))?;
    fs::create_dir_all(&service.state).map_err(|e| fail("create", &service.state, e))?;

    let port_file = port_file(&service.state, name);
    let temporary = service.state.join(format!(".{name}.port.tmp"));
    fs::write(&temporary, format!("{}\n", addr.port()))
        .map_err(|e| fail("write", &temporary, e))?;
    fs::rename(&temporary, &port_file).map_err(|e| fail("replace", &port_file, e))?;

    let log = service.state.join("starts.log");
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let line = format!(
        "{name} {} {} {} {seconds}\n",
        service.host, service.version, service.pid
    );
    // One write to an O_APPEND file: concurrent starts never interleave their lines.
    let written = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut file| file.write(line.as_bytes()));
    match written {
        Ok(n) if n == line.len() => Ok(addr),
        Ok(n) => Err(fail(
            "append to",
            &log,
            io::Error::other(format!("short write ({n} of {} bytes)", line.len())),
        )),
        Err(e) => Err(fail("append to", &log, e)),
    }
}

/// Answers requests on `listener`, a thread per connection, until `stop` is set; then
/// waits for the requests in flight (each bounded by [`REQUEST_TIMEOUT`]) and returns.
fn serve(listener: TcpListener, service: &Service, stop: &AtomicBool) -> Result<(), Failure> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::Failed(format!("{}: cannot poll the listener: {e}", service.name)))?;
    thread::scope(|scope| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let spawned = thread::Builder::new()
                        .spawn_scoped(scope, move || respond(stream, service));
                    if let Err(e) = spawned {
                        eprintln!("{}: cannot answer a connection: {e}", service.name);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept, ...
                    eprintln!("{}: accept failed: {e}", service.name);
                    thread::sleep(POLL);
                }
            }
        }
    });
    Ok(())
}

/// Reads one request and answers it. A client that goes away just misses its answer.
fn respond(mut stream: TcpStream, service: &Service) {
    // Whether an accepted socket inherits O_NONBLOCK from the listener depends on the OS.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let head = read_head(&mut stream);
    if head.is_empty() {
        return; // connected and closed: a port probe
    }
    let (status, content_type, body) = route(&head, service);
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).is_ok() {
        // Closing a socket with unread input (a body we ignored) resets the connection,
        // and the client may lose the answer: end our side, then read what is left.
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = io::copy(&mut (&stream).take(MAX_RESPONSE as u64), &mut io::sink());
    }
}

/// The request line and headers: up to the blank line, the end of the stream, a read
/// error or timeout, or [`MAX_HEAD`] bytes, whichever comes first. Bodies are not read.
fn read_head(stream: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut chunk = [0; 1024];
    let complete = |head: &[u8]| {
        head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
    };
    while head.len() < MAX_HEAD && !complete(&head) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    head
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// The answer to a request: status, content type and body.
fn route(head: &[u8], service: &Service) -> (&'static str, &'static str, String) {
    let head = String::from_utf8_lossy(head);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return ("400 Bad Request", TEXT, "bad request".to_owned());
    };
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    match (method, path) {
        ("GET", "/health") => {
            let fail_file = service.fail_file();
            if fail_file.exists() {
                let body = format!("failing: {} exists", fail_file.display());
                ("503 Service Unavailable", TEXT, body)
            } else {
                ("200 OK", JSON, service.health_json())
            }
        }
        ("GET", "/version") => ("200 OK", TEXT, service.version.clone()),
        _ => ("404 Not Found", TEXT, "not found".to_owned()),
    }
}

/// Removes the port file if it is still ours: a newer instance may have replaced it.
fn retire(service: &Service, port: u16) {
    let path = port_file(&service.state, &service.name);
    let ours = fs::read_to_string(&path).is_ok_and(|text| text.trim() == port.to_string());
    if ours && let Err(e) = fs::remove_file(&path) {
        eprintln!("{}: cannot remove {}: {e}", service.name, path.display());
    }
}

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGTERM and SIGINT set [`STOP`] instead of killing the process, so that `serve`
/// returns, removes its port file and exits 0.
fn install_signal_handlers() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `action` is zeroed (a valid `sigaction`), then given an empty mask and
        // the handler; the handler only stores to an atomic, which is async-signal-safe.
        let status = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// check

/// Succeeds if service `name` answers its health check (in the version asked for).
fn check(args: &CheckArgs) -> Result<(), Failure> {
    let name = &args.name;
    let fail = |message: String| Failure::Failed(format!("{name}: {message}"));
    let path = port_file(&args.state, name);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(fail(format!("not running (no {})", path.display())));
        }
        Err(e) => return Err(fail(format!("cannot read {}: {e}", path.display()))),
    };
    let port: u16 = text.trim().parse().map_err(|_| {
        fail(format!(
            "{} holds {:?}, not a port",
            path.display(),
            excerpt(&text)
        ))
    })?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, args.timeout).map_err(|e| {
        let hint = match e.kind() {
            ErrorKind::ConnectionRefused => format!(" (stale {}?)", path.display()),
            _ => String::new(),
        };
        fail(format!("cannot connect to {addr}: {e}{hint}"))
    })?;
    let response = get(stream, "/health", args.timeout)
        .map_err(|e| fail(format!("GET /health on {addr}: {e}")))?;

    if response.status != 200 {
        return Err(fail(format!(
            "unhealthy: {} {}: {}",
            response.status,
            response.reason,
            excerpt(&response.body)
        )));
    }
    let service = json_string(&response.body, "service");
    if service.as_deref() != Some(name.as_str()) {
        return Err(fail(format!(
            "{addr} answers as service {}, not {name} (stale {}?)",
            service.as_deref().unwrap_or("(none)"),
            path.display()
        )));
    }
    if let Some(expected) = &args.version {
        match json_string(&response.body, "version") {
            Some(seen) if seen == *expected => {}
            Some(seen) => return Err(fail(format!("runs {seen}, expected {expected}"))),
            None => {
                return Err(fail(format!(
                    "no version in the health answer: {}",
                    excerpt(&response.body)
                )));
            }
        }
    }
    Ok(())
}

/// An HTTP answer as `check` sees it.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: String,
    body: String,
}

/// One HTTP/1.0 GET on a connected stream; the answer must come within `timeout`.
fn get(mut stream: TcpStream, path: &str, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let timed_out = || format!("no complete answer within {timeout:?}");
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(timed_out)
    };
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(|e| format!("cannot set a timeout: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("cannot send the request: {e}"))?;

    let mut raw = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(|e| format!("cannot set a timeout: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if raw.len() + n > MAX_RESPONSE => {
                return Err(format!("answer larger than {MAX_RESPONSE} bytes"));
            }
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(timed_out());
            }
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| format!("not an HTTP answer: {:?}", excerpt(&text)))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(protocol), Some(code)) if protocol.starts_with("HTTP/") => code.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("bad status line {:?}", excerpt(status_line)))?;
    Ok(Response {
        status,
        reason: parts.next().unwrap_or("").trim().to_owned(),
        body: body.to_owned(),
    })
}

/// Text from elsewhere, made fit for a one-line message: control characters become
/// spaces, and at most 200 characters are kept.
fn excerpt(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    line.trim().to_owned()
}

// ---------------------------------------------------------------------------------------
// Just enough JSON for the health answer

fn json_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The string value of `key` in a flat JSON object such as [`Service::health_json`]
/// writes; `None` if there is no such key with a string value.
fn json_string(json: &str, key: &str) -> Option<String> {
    let quoted_key = json_quote(key);
    let mut rest = json;
    while let Some(at) = rest.find(&quoted_key) {
        rest = &rest[at + quoted_key.len()..];
        // The same text may end a string value; only a key is followed by `:`.
        let value = rest.trim_start().strip_prefix(':').map(str::trim_start);
        if let Some(value) = value {
            return value.strip_prefix('"').and_then(json_string_body);
        }
    }
    None
}

/// A JSON string's contents, from just after its opening quote.
fn json_string_body(text: &str) -> Option<String> {
    let mut value = String::new();
    let mut chars = text.chars();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => value.push(match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                }
                _ => return None,
            }),
            c => value.push(c),
        }
    }
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let n = COUNT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("demo-service-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Sets the flag when dropped, also while a failing test unwinds, so that the server
    /// thread ends and the scope around it can too.
    struct StopOnDrop<'a>(&'a AtomicBool);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    fn service(name: &str, version: &str, state: &Path) -> Service {
        Service {
            name: name.to_owned(),
            host: "east-1".to_owned(),
            version: version.to_owned(),
            // Not created yet: `announce` must create it.
            state: state.join("state"),
            pid: 4242,
        }
    }

    /// Runs `test` while `service` serves on an ephemeral port, announced as `serve`
    /// announces it; then stops the server and checks that it stopped cleanly.
    fn with_server(service: &Service, stop: &AtomicBool, test: impl FnOnce(SocketAddr)) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = announce(&listener, service).unwrap();
        thread::scope(|scope| {
            let server = scope.spawn(|| serve(listener, service, stop));
            let stop_on_drop = StopOnDrop(stop);
            test(addr);
            drop(stop_on_drop);
            assert_eq!(server.join().unwrap(), Ok(()));
        });
        retire(service, addr.port());
    }

    fn check_args(name: &str, state: &Path, version: Option<&str>) -> CheckArgs {
        CheckArgs {
            name: name.to_owned(),
            state: state.to_owned(),
            version: version.map(str::to_owned),
            timeout: Duration::from_secs(2),
        }
    }

    /// The raw answer to one request.
    fn raw_request(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn health_answers_200_with_the_service_as_json() {
        let dir = TempDir::new();
        let service = service("api", "v1", &dir.0);
        let stop = AtomicBool::new(false);
        with_server(&service, &stop, |addr| {
            let port = fs::read_to_string(port_file(&service.state, "api")).unwrap();
            assert_eq!(port, format!("{}\n", addr.port()));

            let answer = raw_request(addr, "GET /health HTTP/1.0\r\n\r\n");
            let json = r#"{"service":"api","host":"east-1","version":"v1","pid":4242}"#;
            assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
            assert!(answer.contains(&format!("\r\nContent-Length: {}\r\n", json.len())));
            assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
            assert!(answer.ends_with(&format!("\r\n\r\n{json}")), "{answer}");

            let answer = raw_request(addr, "GET /version HTTP/1.0\r\nHost: x\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
            assert!(answer.ends_with("\r\n\r\nv1"), "{answer}");

            let answer = raw_request(addr, "GET /nope HTTP/1.0\r\n\r\n");
            assert!(answer.starts_with("HTTP/1.0 404 Not Found\r\n"), "{answer}");
            let answer = raw_request(addr, "POST /health HTTP/1.0\r\n\r\nbody");
            assert!(answer.starts_with("HTTP/1.0 404 Not Found\r\n"), "{answer}");
            let answer = raw_request(addr, "nonsense\r\n\r\n");
            assert!(
                answer.starts_with("HTTP/1.0 400 Bad Request\r\n"),
                "{answer}"
            );

            assert_eq!(
                check(&check_args("api", &service.state, Some("v1"))),
                Ok(())
            );
            assert_eq!(check(&check_args("api", &service.state, None)), Ok(()));
        });

        // Stopped: the port file is gone, the start is logged.
        assert!(!port_file(&service.state, "api").exists());
        let log = fs::read_to_string(service.state.join("starts.log")).unwrap();
        let fields: Vec<&str> = log.split_whitespace().collect();
        assert_eq!(fields[..4], ["api", "east-1", "v1", "4242"], "{log}");
        assert!(fields[4].parse::<u64>().unwrap() > 1_600_000_000, "{log}");
        assert!(log.ends_with('\n') && log.lines().count() == 1, "{log}");
    }

    #[test]
    fn health_answers_503_while_the_fail_file_exists() {
        let dir = TempDir::new();
        let service = service("store", "v1", &dir.0);
        let stop = AtomicBool::new(false);
        with_server(&service, &stop, |addr| {
            let fail_file = service.fail_file();
            fs::write(&fail_file, "").unwrap();
            let answer = raw_request(addr, "GET /health HTTP/1.0\r\n\r\n");
            let body = format!("failing: {} exists", fail_file.display());
            assert!(
                answer.starts_with("HTTP/1.0 503 Service Unavailable\r\n"),
                "{answer}"
            );
            assert!(answer.ends_with(&format!("\r\n\r\n{body}")), "{answer}");
            assert_eq!(
                check(&check_args("store", &service.state, None)),
                Err(Failure::Failed(format!(
                    "store: unhealthy: 503 Service Unavailable: {body}"
                )))
            );

            fs::remove_file(&fail_file).unwrap();
            assert_eq!(check(&check_args("store", &service.state, None)), Ok(()));
        });
    }

    #[test]
    fn check_detects_another_version_or_service() {
        let dir = TempDir::new();
        let service = service("api", "v1", &dir.0);
        let stop = AtomicBool::new(false);
        with_server(&service, &stop, |addr| {
            assert_eq!(
                check(&check_args("api", &service.state, Some("v2"))),
                Err(Failure::Failed("api: runs v1, expected v2".to_owned()))
            );
            // A port file that leads to another service.
            fs::write(
                port_file(&service.state, "web"),
                format!("{}\n", addr.port()),
            )
            .unwrap();
            let Err(Failure::Failed(message)) = check(&check_args("web", &service.state, None))
            else {
                panic!("web passed its check on api's port");
            };
            assert!(message.starts_with("web: 127.0.0.1:"), "{message}");
            assert!(
                message.contains("answers as service api, not web"),
                "{message}"
            );
        });
    }

    #[test]
    fn check_reports_a_missing_or_stale_port_file() {
        let dir = TempDir::new();
        let path = dir.0.join("api.port");
        assert_eq!(
            check(&check_args("api", &dir.0, None)),
            Err(Failure::Failed(format!(
                "api: not running (no {})",
                path.display()
            )))
        );

        fs::write(&path, "not a port\n").unwrap();
        let Err(Failure::Failed(message)) = check(&check_args("api", &dir.0, None)) else {
            panic!("a bad port file passed");
        };
        assert!(
            message.ends_with("holds \"not a port\", not a port"),
            "{message}"
        );

        // A port nobody listens on: the local end of a live connection. It stays taken
        // while the connection lives, so no other test can listen on it meanwhile.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let port = client.local_addr().unwrap().port();
        fs::write(&path, format!("{port}\n")).unwrap();
        let Err(Failure::Failed(message)) = check(&check_args("api", &dir.0, None)) else {
            panic!("a stale port file passed");
        };
        assert!(
            message.starts_with("api: cannot connect to 127.0.0.1:"),
            "{message}"
        );
    }

    #[test]
    fn check_times_out_on_a_silent_server() {
        let dir = TempDir::new();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        fs::write(dir.0.join("api.port"), format!("{port}\n")).unwrap();
        let mut args = check_args("api", &dir.0, None);
        args.timeout = Duration::from_millis(100);
        // The connection completes in the backlog; nobody ever answers.
        let Err(Failure::Failed(message)) = check(&args) else {
            panic!("a silent server passed");
        };
        assert!(
            message.ends_with("no complete answer within 100ms"),
            "{message}"
        );
    }

    #[test]
    fn sigterm_stops_the_server() {
        let dir = TempDir::new();
        let service = service("web", "v3", &dir.0);
        install_signal_handlers().unwrap();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        thread::scope(|scope| {
            let server = scope.spawn(|| serve(listener, &service, &STOP));
            // SAFETY: raising a signal whose handler is installed just runs the handler.
            assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
            assert_eq!(server.join().unwrap(), Ok(()));
        });
    }

    #[test]
    fn usage_errors() {
        let failure = |words: &[&str]| run(&args(words)).unwrap_err();
        assert_eq!(failure(&[]), usage("a command is needed: serve or check"));
        assert_eq!(
            failure(&["start"]),
            usage("unknown command \"start\": expected serve or check")
        );
        assert_eq!(failure(&["serve", "--help"]), Failure::Help);
        assert_eq!(
            failure(&["check", "--state", "/s"]),
            usage("--name is required")
        );
        assert_eq!(
            failure(&["check", "--name", "a", "--name=b", "--state", "/s"]),
            usage("--name is given twice")
        );
        assert_eq!(
            failure(&["check", "--name", "--state", "/s"]),
            usage("--name needs a value")
        );
        assert_eq!(
            failure(&["check", "--name", "a", "--state", "/s", "--port", "1"]),
            usage("unknown flag --port")
        );
        assert_eq!(
            failure(&["check", "--name", "a", "--state", "/s", "extra"]),
            usage("unexpected argument \"extra\"")
        );
        assert!(matches!(
            failure(&["check", "--name", "../a", "--state", "/s"]),
            Failure::Usage(m) if m.starts_with("--name \"../a\":")
        ));
        assert!(matches!(
            failure(&["check", "--name", "a", "--state", "/s", "--timeout", "0"]),
            Failure::Usage(m) if m.starts_with("--timeout \"0\":")
        ));
        assert!(matches!(
            failure(&["serve", "--name", "a", "--host", "h", "--version", "1 2", "--state", "/s"]),
            Failure::Usage(m) if m.starts_with("--version \"1 2\":")
        ));
        assert!(matches!(
            failure(&[
                "serve", "--name", "a", "--host", "h", "--version", "1", "--state", "/s",
                "--listen", "localhost:80"
            ]),
            Failure::Usage(m) if m.starts_with("--listen \"localhost:80\":")
        ));
    }

    #[test]
    fn json_round_trips_odd_values() {
        let mut service = service("a", "1", Path::new("/"));
        service.host = r#"h"version":"x\"#.to_owned();
        service.version = "v\"2\\\u{1}".to_owned();
        let json = service.health_json();
        assert_eq!(
            json_string(&json, "host").as_deref(),
            Some(service.host.as_str())
        );
        assert_eq!(
            json_string(&json, "version").as_deref(),
            Some(service.version.as_str())
        );
        assert_eq!(json_string(&json, "missing"), None);
        assert_eq!(json_string(r#"{"version":12}"#, "version"), None);
        assert_eq!(json_string(r#"{"version":"unterminated"#, "version"), None);
    }
}
