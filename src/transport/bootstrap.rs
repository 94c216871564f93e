//! Bootstrap: hosts need nothing but sshd. Before rookery runs `rookery agent ...` on
//! a host, it makes sure the host has this very binary.
//!
//! The check is by checksum (`sha256sum` on the host against the SHA-256 of the
//! running binary), so a host with a stale or half-written copy gets the new one, and
//! a host that has it is not sent 20 MB again. The upload goes to a temporary file
//! next to the target (SFTP), then one rename puts it in place, so an agent starting
//! at that moment runs the old binary or the new one, never a torn one. After an
//! upload, `rookery --version` runs on the host: a binary that cannot run there (a
//! `noexec` mount) fails here, at the bootstrap stage, not later in the fetch.
//!
//! Each host gets the agent for its platform, read from its `uname -sm` in the same
//! round trip: the running binary for hosts like the controller, static agents from
//! the agent directory ([`AGENTS_ENV`]) for the others. A host whose platform has no
//! agent fails at bootstrap with the platform and where to put one.
//!
//! The check can also run as a [`guard`] at the head of the command that needs the
//! binary (distribute's fetch), so that the usual case, a host that has this build,
//! costs no round trip of its own.

use std::sync::Arc;

use serde::Serialize;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::config::template::shell_quote;
use crate::transport::{Connection, HostError, Stage};

/// The rookery binaries a run can install, one per host platform, read once per run.
#[derive(Debug, Clone)]
pub struct Binary {
    agents: Arc<Vec<Agent>>,
    /// Where agents for other platforms are looked for, for the error that names it.
    dir: Option<std::path::PathBuf>,
}

/// A rookery binary for one host platform.
#[derive(Debug, Clone)]
pub struct Agent {
    /// `ARCH-OS` as [`platform`] reads `uname -sm`: `x86_64-linux`, `aarch64-linux`.
    pub platform: String,
    pub data: Arc<Vec<u8>>,
    pub sha256: String,
}

/// The environment variable naming the directory of agents for host platforms.
pub const AGENTS_ENV: &str = "ROOKERY_AGENTS";

impl Binary {
    /// The `rookery-ARCH-OS` files of the agent directory (the directory
    /// `$ROOKERY_AGENTS` names, or `agents/` beside the running binary), and the
    /// running binary for hosts of its own platform when the directory has none for it.
    pub fn current() -> anyhow::Result<Binary> {
        use anyhow::Context;
        let exe = std::env::current_exe().context("finding the rookery binary")?;
        let dir = std::env::var_os(AGENTS_ENV)
            .map(std::path::PathBuf::from)
            .or_else(|| exe.parent().map(|d| d.join("agents")));
        let mut agents = Vec::new();
        if let Some(d) = &dir {
            for platform in ["x86_64-linux", "aarch64-linux"] {
                let file = d.join(format!("rookery-{platform}"));
                if !file.exists() {
                    continue;
                }
                let data =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                agents.push(Agent::new(platform.to_string(), data));
            }
        }
        // The running binary serves its own platform when the directory has no static
        // agent for it (a static one runs on any C library; this one needs the
        // controller's).
        let own = own_platform();
        if own.ends_with("-linux") && !agents.iter().any(|a| a.platform == own) {
            let data = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
            agents.push(Agent::new(own, data));
        }
        Ok(Binary {
            agents: Arc::new(agents),
            dir,
        })
    }

    /// `data` as the binary for hosts of the controller's own platform.
    pub fn new(data: Vec<u8>) -> Binary {
        Binary {
            agents: Arc::new(vec![Agent::new(own_platform(), data)]),
            dir: None,
        }
    }

    /// The agent for hosts of `platform`.
    pub fn agent(&self, platform: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.platform == platform)
    }

    /// Why a host of `platform` cannot get an agent, and where to put one.
    fn missing(&self, platform: &str) -> String {
        let have: Vec<&str> = self.agents.iter().map(|a| a.platform.as_str()).collect();
        let place = match &self.dir {
            Some(d) => format!("{}/rookery-{platform}", d.display()),
            None => format!("rookery-{platform} in the directory ${AGENTS_ENV} names"),
        };
        format!(
            "no rookery agent for this host's platform `{platform}` (have: {}): build one \
             with `scripts/build-agents` and put it at {place} (docs/ssh.md#agents-per-platform)",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )
    }
}

impl Agent {
    fn new(platform: String, data: Vec<u8>) -> Agent {
        let sha256 = hex(&sha2::Sha256::digest(&data));
        Agent {
            platform,
            data: Arc::new(data),
            sha256,
        }
    }
}

/// The controller's own platform, named as [`platform`] names a host's.
fn own_platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// A host's platform from its `uname -sm` (`Linux aarch64` is `aarch64-linux`);
/// the spellings of one architecture (`arm64`, `amd64`) are one platform.
pub fn platform(uname_sm: &str) -> String {
    let mut words = uname_sm.split_whitespace();
    let os = words.next().unwrap_or("unknown").to_ascii_lowercase();
    let arch = match words.next().unwrap_or("unknown") {
        "arm64" | "aarch64" => "aarch64",
        "amd64" | "x86_64" | "x86-64" => "x86_64",
        other => other,
    };
    let os = if os == "darwin" { "macos".into() } else { os };
    format!("{arch}-{os}")
}

/// A shell command printing the host's `uname -sm`.
const UNAME: &str = "uname -sm";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the bootstrap did on one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The host already had this binary.
    Present,
    /// The binary was missing or different and was uploaded.
    Uploaded,
}

/// A shell command printing the SHA-256 of the file at `quoted` (shell-quoted), or
/// nothing when it is missing. The digest is cached beside it in `<path>.sha256`
/// with the file's size, inode and change time (`stat -c '%s %i %z'`, nanoseconds),
/// and recomputed when any of these differ: a write, a rename over it or a chmod
/// changes the change time, which no user can set. Hashing the 23 MB binary on every
/// host took 0.3 to 0.5 s of each deploy's start on a loaded machine; the cached
/// answer is one `stat`.
fn quick_sum_command(quoted: &str) -> String {
    format!(
        "p={quoted}; c=\"$p.sha256\"; \
         st=$(stat -c '%s %i %z' -- \"$p\" 2>/dev/null) || exit 0; \
         if [ -f \"$c\" ] && [ \"$(sed -n 2p \"$c\")\" = \"$st\" ]; then sed -n 1p \"$c\"; exit 0; fi; \
         sum=$(sha256sum -- \"$p\" | cut -d ' ' -f 1); \
         printf '%s\\n%s\\n' \"$sum\" \"$st\" > \"$c\" 2>/dev/null; \
         echo \"$sum\""
    )
}

/// The event a [`guard`] prints, as `{"event":"needs_binary"}`, when it stops.
pub const NEEDS_BINARY: &str = "needs_binary";

/// A shell snippet for the start of a command that runs the binary at `path`: when
/// that file is missing or is not the agent for the host's platform (`uname -sm`),
/// it prints a [`NEEDS_BINARY`] event and ends the command (status 0); the caller then
/// [`install`]s and runs it again. A deploy whose hosts already have this build (all
/// but the first after an upgrade) so makes one round trip per host instead of a
/// check, then the command.
pub fn guard(path: &str, bin: &Binary) -> String {
    let mut arms = String::new();
    for a in bin.agents.iter() {
        for spelling in uname_spellings(&a.platform) {
            arms.push_str(&format!(
                "{}) w={};; ",
                shell_quote(&spelling),
                shell_quote(&a.sha256)
            ));
        }
    }
    format!(
        "s=$({}); case \"$({UNAME})\" in {arms}*) w=none;; esac; \
         if [ \"$s\" != \"$w\" ]; then echo '{{\"event\":\"{NEEDS_BINARY}\"}}'; exit 0; fi",
        quick_sum_command(&shell_quote(path)),
    )
}

/// The `uname -sm` lines of a host of `platform`.
fn uname_spellings(platform: &str) -> Vec<String> {
    let Some((arch, os)) = platform.split_once('-') else {
        return Vec::new();
    };
    let os = match os {
        "linux" => "Linux",
        "macos" => "Darwin",
        "freebsd" => "FreeBSD",
        _ => return Vec::new(),
    };
    let arches: &[&str] = match arch {
        "aarch64" => &["aarch64", "arm64"],
        "x86_64" => &["x86_64", "amd64"],
        _ => &[],
    };
    arches.iter().map(|a| format!("{os} {a}")).collect()
}

/// Ensures `path` on the host holds the agent for its platform; uploads it when it
/// does not.
pub async fn ensure<C: Connection>(
    conn: &C,
    host: &str,
    path: &str,
    bin: &Binary,
    cancel: &CancellationToken,
) -> Result<Outcome, HostError> {
    let err = |m: String| HostError::new(host, Stage::Bootstrap, m);
    let quoted = shell_quote(path);
    let mut lines = Vec::new();
    let check = conn
        .exec(
            &format!("{UNAME}; {}", quick_sum_command(&quoted)),
            &mut |line| lines.push(line.to_string()),
            cancel,
        )
        .await
        .map_err(|e| err(format!("checking {path}: {e}")))?;
    if !check.success() {
        return Err(err(format!("checking {path}: {}", check.describe())));
    }
    let platform = platform(lines.first().map_or("", String::as_str));
    let sum = lines
        .get(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    let agent = bin
        .agent(&platform)
        .ok_or_else(|| err(bin.missing(&platform)))?;
    if sum == agent.sha256 {
        return Ok(Outcome::Present);
    }
    upload(conn, host, path, agent, cancel).await
}

/// Uploads `bin` to `path` on the host (atomically) and checks that it runs there.
/// `work` (an [`ensure`] or an [`install`]), given up after `limit` (the inventory's
/// `transport.ssh.command_timeout`) with an error that names the host and the setting.
pub async fn within<T>(
    limit: Option<std::time::Duration>,
    host: &str,
    work: impl std::future::Future<Output = Result<T, HostError>>,
) -> Result<T, HostError> {
    let Some(limit) = limit else {
        return work.await;
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(HostError::new(
            host,
            Stage::Bootstrap,
            format!(
                "putting the rookery binary in place took longer than {} (transport.ssh.command_timeout)",
                crate::config::units::format_duration(limit)
            ),
        ))
    })
}

/// Uploads the agent for the host's platform to `path` (atomically) and checks that
/// it runs there.
pub async fn install<C: Connection>(
    conn: &C,
    host: &str,
    path: &str,
    bin: &Binary,
    cancel: &CancellationToken,
) -> Result<Outcome, HostError> {
    let err = |m: String| HostError::new(host, Stage::Bootstrap, m);
    let mut uname = String::new();
    let run = conn
        .exec(
            UNAME,
            &mut |l| {
                if uname.is_empty() {
                    uname = l.to_string();
                }
            },
            cancel,
        )
        .await
        .map_err(|e| err(format!("reading the host's platform: {e}")))?;
    if !run.success() {
        return Err(err(format!(
            "reading the host's platform (`{UNAME}`): {}",
            run.describe()
        )));
    }
    let platform = platform(&uname);
    let agent = bin
        .agent(&platform)
        .ok_or_else(|| err(bin.missing(&platform)))?;
    upload(conn, host, path, agent, cancel).await
}

/// Uploads `agent` to `path` (atomically) and checks that it runs there.
async fn upload<C: Connection>(
    conn: &C,
    host: &str,
    path: &str,
    agent: &Agent,
    cancel: &CancellationToken,
) -> Result<Outcome, HostError> {
    let err = |m: String| HostError::new(host, Stage::Bootstrap, m);
    let quoted = shell_quote(path);
    conn.upload(&agent.data, path, 0o755)
        .await
        .map_err(|e| err(format!("uploading the rookery binary to {path}: {e}")))?;
    let mut said = String::new();
    let run = conn
        .exec(
            &format!("{quoted} --version"),
            &mut |l| {
                if said.is_empty() {
                    said = l.trim().to_string();
                }
            },
            cancel,
        )
        .await
        .map_err(|e| err(format!("running {path}: {e}")))?;
    if !run.success() {
        return Err(err(format!(
            "the uploaded binary ({}) does not run on this host (a noexec mount?): {}",
            agent.platform,
            run.describe()
        )));
    }
    // An agent of another release would misread the controller's requests.
    let want = concat!("rookery ", env!("CARGO_PKG_VERSION"));
    if said.starts_with("rookery ") && said != want {
        return Err(err(format!(
            "the agent for {} is `{said}`, the controller `{want}`: build the agents from \
             the controller's release (scripts/build-agents)",
            agent.platform
        )));
    }
    tracing::debug!(host, platform = %agent.platform, "agent installed");
    Ok(Outcome::Uploaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::local::LocalConnection;

    /// A stand-in rookery binary that says this release's version; `n` tells builds
    /// apart.
    fn build(n: u32) -> Vec<u8> {
        format!(
            "#!/bin/sh\n# build {n}\necho rookery {}\n",
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn uploads_once_then_finds_it_present() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin/rookery");
        let path = path.to_str().unwrap();
        let bin = Binary::new(build(0));
        let cancel = CancellationToken::new();
        let check = |bin: &Binary| {
            let bin = bin.clone();
            let cancel = cancel.clone();
            async move {
                ensure(&LocalConnection, "h", path, &bin, &cancel)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(check(&bin).await, Outcome::Uploaded);
        assert_eq!(check(&bin).await, Outcome::Present);
        // A different build replaces it.
        let newer = Binary::new(build(1));
        assert_eq!(check(&newer).await, Outcome::Uploaded);
        let newer_agent = newer.agent(&own_platform()).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), *newer_agent.data);
        // Checked again: now the digest is cached beside it.
        assert_eq!(check(&newer).await, Outcome::Present);
        let cache = std::fs::read_to_string(format!("{path}.sha256")).unwrap();
        assert_eq!(cache.lines().next(), Some(newer_agent.sha256.as_str()));
        // A change in place, of the same size, is still seen (the change time moves),
        // and the right build goes back.
        std::fs::write(path, build(2)).unwrap();
        assert_eq!(check(&newer).await, Outcome::Uploaded);
        assert_eq!(std::fs::read(path).unwrap(), *newer_agent.data);
        assert_eq!(check(&newer).await, Outcome::Present);
    }

    #[tokio::test]
    async fn the_guard_stops_a_command_until_the_binary_is_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rookery");
        let path = path.to_str().unwrap();
        let bin = Binary::new(b"#!/bin/sh\necho ran \"$@\"\n".to_vec());
        let cancel = CancellationToken::new();
        let run = || async {
            let mut out = Vec::new();
            let command = format!("{}; {} hello", guard(path, &bin), shell_quote(path));
            let f = LocalConnection
                .exec(&command, &mut |l| out.push(l.to_string()), &cancel)
                .await
                .unwrap();
            assert!(f.success(), "{}", f.describe());
            out
        };
        assert_eq!(run().await, [r#"{"event":"needs_binary"}"#]);
        assert_eq!(
            install(&LocalConnection, "h", path, &bin, &cancel)
                .await
                .unwrap(),
            Outcome::Uploaded
        );
        assert_eq!(run().await, ["ran hello"]);
        // Another build: stopped again.
        std::fs::write(path, b"#!/bin/sh\necho old\n").unwrap();
        assert_eq!(run().await, [r#"{"event":"needs_binary"}"#]);
    }

    /// What bootstrapping host `host` with `data` as this platform's binary fails with.
    async fn bootstrap_error(host: &str, data: &[u8]) -> HostError {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rookery");
        let bin = Binary::new(data.to_vec());
        let cancel = CancellationToken::new();
        let e = ensure(
            &LocalConnection,
            host,
            path.to_str().unwrap(),
            &bin,
            &cancel,
        )
        .await
        .unwrap_err();
        assert_eq!(e.stage, Stage::Bootstrap);
        e
    }

    #[tokio::test]
    async fn a_binary_that_does_not_run_fails_the_bootstrap_stage() {
        let e = bootstrap_error("web-3", b"\x7fELF not really").await;
        let want = format!(
            "web-3: bootstrap: the uploaded binary ({}) does not run",
            own_platform()
        );
        assert!(e.to_string().starts_with(&want), "{e}");
    }

    #[test]
    fn platforms_from_uname() {
        assert_eq!(platform("Linux x86_64"), "x86_64-linux");
        assert_eq!(platform("Linux aarch64\n"), "aarch64-linux");
        assert_eq!(platform("Darwin arm64"), "aarch64-macos");
        assert_eq!(platform("FreeBSD amd64"), "x86_64-freebsd");
        assert_eq!(platform("Linux riscv64"), "riscv64-linux");
        assert_eq!(platform(""), "unknown-unknown");
        for p in ["x86_64-linux", "aarch64-linux"] {
            for u in uname_spellings(p) {
                assert_eq!(platform(&u), p);
            }
        }
    }

    /// A host whose platform has no agent fails at bootstrap, with its platform and
    /// the file to put in place; the guard does not let it run another platform's
    /// agent that happens to be there.
    #[tokio::test]
    async fn a_platform_without_an_agent_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rookery");
        let path = path.to_str().unwrap();
        let data = b"#!/bin/sh\necho ran\n".to_vec();
        let other = Binary {
            agents: Arc::new(vec![Agent::new("aarch64-linux".into(), data.clone())]),
            dir: Some("/opt/rookery/agents".into()),
        };
        let cancel = CancellationToken::new();
        let e = ensure(&LocalConnection, "arm-1", path, &other, &cancel)
            .await
            .unwrap_err();
        assert_eq!(e.stage, Stage::Bootstrap);
        let own = own_platform();
        assert!(
            e.to_string().contains(&format!(
                "no rookery agent for this host's platform `{own}` (have: aarch64-linux)"
            )) && e
                .to_string()
                .contains(&format!("/opt/rookery/agents/rookery-{own}")),
            "{e}"
        );
        let e = install(&LocalConnection, "arm-1", path, &other, &cancel)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no rookery agent"), "{e}");
        // The other platform's agent in place does not pass this host's guard.
        std::fs::write(path, &data).unwrap();
        let mut out = Vec::new();
        let command = format!("{}; echo ran", guard(path, &other));
        LocalConnection
            .exec(&command, &mut |l| out.push(l.to_string()), &cancel)
            .await
            .unwrap();
        assert_eq!(out, [r#"{"event":"needs_binary"}"#]);
    }

    /// An agent of another release is refused at bootstrap, named with both versions.
    #[tokio::test]
    async fn an_agent_of_another_release_is_refused() {
        let e = bootstrap_error("h", b"#!/bin/sh\necho rookery 0.0.1\n").await;
        let want = format!(
            "is `rookery 0.0.1`, the controller `rookery {}`",
            env!("CARGO_PKG_VERSION")
        );
        assert!(e.to_string().contains(&want), "{e}");
    }
}
