//! Logging in: the inventory's key, then the keys of ssh-agent (`SSH_AUTH_SOCK`),
//! then the identity files; and, when none is accepted, a message that says what was
//! tried, what could not be used and what to do about it.
//!
//! Passphrase-protected files are used through the agent only: nobody is there to
//! type a passphrase on host 400.

use std::path::Path;
use std::sync::Arc;

use russh::client;
use russh::keys::agent::client::AgentClient;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};

use crate::transport::ssh::handshake::Checker;
use crate::transport::ssh::target::Target;

/// The hint when there was nothing at all to offer.
const NO_KEY: &str = "no key: set `ssh.key` in the inventory, IdentityFile in ~/.ssh/config, or load one into ssh-agent";

/// The inventory's key file cannot be used; `label` names it and its setting.
#[derive(Debug, thiserror::Error)]
pub(super) enum KeyFileError {
    #[error("key file {label} is not a file: point the setting at a private key file")]
    NotAFile { label: String },
    #[error(
        "key file {label} does not exist: fix the path, or remove the setting to use ssh-agent and the ssh config's IdentityFile"
    )]
    Missing { label: String },
    #[error("key file {label} cannot be read: {source}")]
    Unreadable {
        label: String,
        source: std::io::Error,
    },
}

/// Checks, before connecting, that the inventory's key file is there: a path that
/// names nothing is a mistake to fix, not a key to skip.
pub(super) fn check_key_file(t: &Target) -> Result<(), KeyFileError> {
    let (Some(path), Some(label)) = (&t.key, &t.key_label) else {
        return Ok(());
    };
    let label = label.clone();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(KeyFileError::NotAFile { label }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KeyFileError::Missing { label }),
        Err(source) => Err(KeyFileError::Unreadable { label, source }),
    }
}

/// What a login attempt went through, for the message when it fails.
#[derive(Debug, Default)]
struct Tried {
    /// Offered and refused by the server.
    refused: Vec<String>,
    /// What could not be offered, and what to do about it.
    problems: Vec<String>,
}

impl Tried {
    fn message(self, t: &Target) -> String {
        let who = format!("{}@{}:{}", t.user, t.address, t.port);
        match (self.refused.is_empty(), self.problems.is_empty()) {
            (true, true) => format!("{who} refused every key; tried {NO_KEY}"),
            (true, false) => format!("{who}: no key to offer: {}", self.problems.join("; ")),
            (false, true) => format!("{who} refused every key; tried {}", self.refused.join(", ")),
            (false, false) => format!(
                "{who} refused every key; tried {}; could not offer: {}",
                self.refused.join(", "),
                self.problems.join("; ")
            ),
        }
    }
}

/// No key was accepted: who refused, what was tried and what could not be offered
/// ([`Tried::message`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Refused(String);

/// Tries the inventory key, the agent's keys, then the identity files.
pub(super) async fn authenticate(
    handle: &mut client::Handle<Checker>,
    t: &Target,
) -> Result<(), Refused> {
    let mut tried = Tried::default();
    if let Some(k) = &t.key {
        let label = t
            .key_label
            .clone()
            .unwrap_or_else(|| k.display().to_string());
        if offer_file(handle, &t.user, k, &label, &mut tried).await {
            return Ok(());
        }
    }
    if with_agent(handle, &t.user, &mut tried).await {
        return Ok(());
    }
    for k in &t.identities {
        if Some(k) == t.key.as_ref() || !k.exists() {
            continue;
        }
        let label = k.display().to_string();
        if offer_file(handle, &t.user, k, &label, &mut tried).await {
            return Ok(());
        }
    }
    Err(Refused(tried.message(t)))
}

/// Offers one key file; true when the server accepted it. `label` names the file
/// in what could not be offered (with the inventory setting, for the inventory key).
async fn offer_file(
    handle: &mut client::Handle<Checker>,
    user: &str,
    path: &Path,
    label: &str,
    tried: &mut Tried,
) -> bool {
    let key = match russh::keys::load_secret_key(path, None) {
        Ok(k) => k,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            tried.problems.push(format!(
                "key file {label} is passphrase-protected: load it into ssh-agent (ssh-add {})",
                path.display()
            ));
            return false;
        }
        Err(e) => {
            tried
                .problems
                .push(format!("key file {label} cannot be used: {e}"));
            return false;
        }
    };
    let hash = rsa_hash(handle, key.public_key()).await;
    let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
    match handle.authenticate_publickey(user, key).await {
        Ok(r) if r.success() => true,
        Ok(_) => {
            tried.refused.push(format!("{} (refused)", path.display()));
            false
        }
        Err(e) => {
            tried.refused.push(format!("{} ({e})", path.display()));
            false
        }
    }
}

/// Offers every key of ssh-agent, when `SSH_AUTH_SOCK` is set; true when one was
/// accepted.
async fn with_agent(handle: &mut client::Handle<Checker>, user: &str, tried: &mut Tried) -> bool {
    let Some(sock) = std::env::var_os("SSH_AUTH_SOCK") else {
        return false;
    };
    if sock.is_empty() {
        tried.problems.push(EMPTY_SOCK.to_string());
        return false;
    }
    let sock = Path::new(&sock);
    let stream = match tokio::net::UnixStream::connect(sock).await {
        Ok(s) => s,
        Err(e) => {
            tried.problems.push(agent_unreachable(sock, &e));
            return false;
        }
    };
    let mut agent = AgentClient::connect(stream);
    let ids = match agent.request_identities().await {
        Ok(ids) => ids,
        Err(e) => {
            tried.problems.push(format!(
                "SSH_AUTH_SOCK={}: the agent did not list its keys: {e}",
                sock.display()
            ));
            return false;
        }
    };
    let mut offered = 0;
    for id in ids {
        let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
            continue;
        };
        offered += 1;
        let hash = rsa_hash(handle, &key).await;
        if let Ok(r) = handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
            && r.success()
        {
            return true;
        }
    }
    if offered == 0 {
        tried.problems.push(format!(
            "ssh-agent (SSH_AUTH_SOCK={}) holds no keys: add one with ssh-add",
            sock.display()
        ));
    } else {
        tried
            .refused
            .push(format!("ssh-agent ({offered} keys refused)"));
    }
    false
}

const EMPTY_SOCK: &str =
    "SSH_AUTH_SOCK is set but empty: unset it, or start ssh-agent and add a key with ssh-add";

/// Why the agent's socket could not be reached, and what to do.
fn agent_unreachable(sock: &Path, e: &std::io::Error) -> String {
    let sock = sock.display();
    let fix = "start ssh-agent and point SSH_AUTH_SOCK at its socket, or unset SSH_AUTH_SOCK";
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("SSH_AUTH_SOCK={sock}: no agent listens there (connection refused): {fix}")
        }
        std::io::ErrorKind::NotFound => {
            format!("SSH_AUTH_SOCK={sock}: no such socket (the agent is gone?): {fix}")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("SSH_AUTH_SOCK={sock}: permission denied (another user's agent?): {fix}")
        }
        _ => format!("SSH_AUTH_SOCK={sock}: cannot reach the agent ({e}): {fix}"),
    }
}

async fn rsa_hash(
    handle: &client::Handle<Checker>,
    key: &PublicKey,
) -> Option<russh::keys::HashAlg> {
    if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::known_hosts::KnownHosts;

    fn target(key: Option<&Path>) -> Target {
        Target {
            name: "web-1".into(),
            address: "10.0.0.1".into(),
            port: 22,
            user: "deploy".into(),
            key: key.map(Path::to_path_buf),
            key_label: key.map(|k| format!("{} (inventory `defaults.ssh.key`)", k.display())),
            identities: Vec::new(),
            jumps: Vec::new(),
            known: KnownHosts::new(Vec::new()),
            host_key_alias: None,
        }
    }

    #[test]
    fn a_missing_key_file_is_named_with_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("id_x");
        let e = check_key_file(&target(Some(&missing)))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "key file {} (inventory `defaults.ssh.key`) does not exist: fix the path, or remove the setting to use ssh-agent and the ssh config's IdentityFile",
                missing.display()
            )
        );
        let e = check_key_file(&target(Some(dir.path())))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("is not a file: point the setting at a private key file"),
            "{e}"
        );
        std::fs::write(&missing, "").unwrap();
        assert!(check_key_file(&target(Some(&missing))).is_ok());
        assert!(check_key_file(&target(None)).is_ok());
    }

    #[test]
    fn the_message_leads_with_what_could_not_be_offered() {
        let t = target(None);
        assert_eq!(
            Tried::default().message(&t),
            format!("deploy@10.0.0.1:22 refused every key; tried {NO_KEY}")
        );
        let only_problems = Tried {
            refused: vec![],
            problems: vec![EMPTY_SOCK.into()],
        };
        assert_eq!(
            only_problems.message(&t),
            "deploy@10.0.0.1:22: no key to offer: SSH_AUTH_SOCK is set but empty: unset it, or start ssh-agent and add a key with ssh-add"
        );
        let both = Tried {
            refused: vec!["k (refused)".into()],
            problems: vec!["p".into()],
        };
        assert_eq!(
            both.message(&t),
            "deploy@10.0.0.1:22 refused every key; tried k (refused); could not offer: p"
        );
    }

    #[tokio::test]
    async fn an_unreachable_agent_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let e = tokio::net::UnixStream::connect(&sock).await.unwrap_err();
        assert_eq!(
            agent_unreachable(&sock, &e),
            format!(
                "SSH_AUTH_SOCK={}: no such socket (the agent is gone?): start ssh-agent and point SSH_AUTH_SOCK at its socket, or unset SSH_AUTH_SOCK",
                sock.display()
            )
        );
        // A socket file that nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let e = tokio::net::UnixStream::connect(&sock).await.unwrap_err();
        assert!(
            agent_unreachable(&sock, &e)
                .contains("agent.sock: no agent listens there (connection refused): start"),
            "{e}"
        );
    }
}
