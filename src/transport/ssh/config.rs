//! The OpenSSH client config (`~/.ssh/config`), read the way `ssh` reads it
//! (ssh_config(5)), for the keywords rookery uses: HostName, User, Port, IdentityFile,
//! ProxyJump, UserKnownHostsFile, HostKeyAlias.
//!
//! - Lines are `Keyword value` or `Keyword=value`; keywords are case-insensitive;
//!   values may be double-quoted; `#` starts a comment. Unknown keywords are skipped.
//! - Settings before the first `Host` apply to every host.
//! - A `Host` line holds patterns (`*`, `?`, `!negation`), matched case-sensitively
//!   against the name as given (the inventory's address): the block applies when a
//!   pattern matches and no negated one does.
//! - For each keyword the first value obtained wins, across blocks and within one;
//!   IdentityFile accumulates instead, as in OpenSSH.
//! - `%h` in HostName is the name as given, `%%` a percent sign.
//! - `Match` blocks are not evaluated: their settings never apply (`Match all`
//!   excepted, which is `Host *`). `Include` is not followed.

use std::path::PathBuf;

/// A line of an ssh config that cannot be read, and where: `FILE:LINE: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}: {problem}")]
pub struct ConfigError {
    /// The config's name, as given to [`SshConfig::parse`].
    pub origin: String,
    /// Counted from 1.
    pub line: usize,
    pub problem: LineError,
}

/// An error equals the message it prints.
impl PartialEq<&str> for ConfigError {
    fn eq(&self, other: &&str) -> bool {
        self.to_string().as_str() == *other
    }
}

/// What is wrong with one line of an ssh config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("`{0}` needs an argument")]
    NeedsArgument(String),
    #[error("{0} needs a value")]
    NeedsValue(String),
    #[error("Port must be 1 to 65535, found `{0}`")]
    Port(String),
    #[error("a quoted argument is not closed")]
    OpenQuote,
    #[error("HostName `{value}`: unknown token %{token} (HostName takes %h and %%)")]
    UnknownToken { value: String, token: char },
    #[error("HostName `{0}` ends with a lone %")]
    LonePercent(String),
}

/// What the ssh config says about one host, before the inventory's settings and
/// OpenSSH's defaults are laid over it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// HostName with `%h` expanded.
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Every IdentityFile of every matching block, in order.
    pub identity_files: Vec<PathBuf>,
    pub proxy_jump: Option<String>,
    /// UserKnownHostsFile (several files allowed); `none` is the empty list.
    pub user_known_hosts_files: Option<Vec<PathBuf>>,
    pub host_key_alias: Option<String>,
}

/// A parsed ssh config.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
struct Block {
    applies: Applies,
    settings: Vec<Setting>,
}

#[derive(Debug, Clone)]
enum Applies {
    /// Before the first `Host`, or `Match all`.
    Always,
    /// A `Match` block rookery does not evaluate.
    Never,
    Host(Vec<Pattern>),
}

#[derive(Debug, Clone)]
struct Pattern {
    glob: String,
    negated: bool,
}

#[derive(Debug, Clone)]
enum Setting {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(PathBuf),
    ProxyJump(String),
    UserKnownHostsFiles(Vec<PathBuf>),
    HostKeyAlias(String),
}

impl SshConfig {
    /// Parses the text of a config; `origin` names it in errors (`FILE:LINE: ...`).
    pub fn parse(text: &str, origin: &str) -> Result<SshConfig, ConfigError> {
        let mut blocks = vec![Block {
            applies: Applies::Always,
            settings: Vec::new(),
        }];
        for (i, raw) in text.lines().enumerate() {
            let at = |problem: LineError| ConfigError {
                origin: origin.to_string(),
                line: i + 1,
                problem,
            };
            let Some((keyword, args)) = split_line(raw).map_err(at)? else {
                continue;
            };
            let lower = keyword.to_ascii_lowercase();
            if lower == "host" || lower == "match" {
                let applies = block_start(&keyword, &args).map_err(at)?;
                blocks.push(Block {
                    applies,
                    settings: Vec::new(),
                });
                continue;
            }
            if let Some(s) = setting(&lower, &keyword, &args).map_err(at)? {
                blocks.last_mut().expect("one block").settings.push(s);
            }
        }
        Ok(SshConfig { blocks })
    }

    /// The settings for `name` (the host as given, as in `ssh NAME`).
    pub fn query(&self, name: &str) -> HostConfig {
        let mut hc = HostConfig::default();
        for b in self.blocks.iter().filter(|b| b.applies_to(name)) {
            for s in &b.settings {
                hc.take(s, name);
            }
        }
        hc
    }
}

impl Block {
    fn applies_to(&self, name: &str) -> bool {
        match &self.applies {
            Applies::Always => true,
            Applies::Never => false,
            Applies::Host(patterns) => {
                let mut matched = false;
                for p in patterns {
                    if glob_matches(&p.glob, name) {
                        if p.negated {
                            return false;
                        }
                        matched = true;
                    }
                }
                matched
            }
        }
    }
}

impl HostConfig {
    /// Takes one setting of a matching block: the first value obtained wins.
    fn take(&mut self, s: &Setting, name: &str) {
        fn first<T: Clone>(slot: &mut Option<T>, v: &T) {
            if slot.is_none() {
                *slot = Some(v.clone());
            }
        }
        match s {
            Setting::HostName(h) => {
                if self.hostname.is_none() {
                    self.hostname = Some(expand_hostname(h, name));
                }
            }
            Setting::User(u) => first(&mut self.user, u),
            Setting::Port(p) => first(&mut self.port, p),
            Setting::IdentityFile(f) => self.identity_files.push(f.clone()),
            Setting::ProxyJump(j) => first(&mut self.proxy_jump, j),
            Setting::UserKnownHostsFiles(f) => first(&mut self.user_known_hosts_files, f),
            Setting::HostKeyAlias(a) => first(&mut self.host_key_alias, a),
        }
    }
}

/// `Host` patterns or a `Match` line: what the block that starts here applies to.
fn block_start(keyword: &str, args: &[String]) -> Result<Applies, LineError> {
    if args.is_empty() {
        return Err(LineError::NeedsArgument(keyword.to_string()));
    }
    if keyword.eq_ignore_ascii_case("match") {
        let all = args.len() == 1 && args[0].eq_ignore_ascii_case("all");
        return Ok(if all { Applies::Always } else { Applies::Never });
    }
    let patterns = args
        .iter()
        .map(|a| match a.strip_prefix('!') {
            Some(g) => Pattern {
                glob: g.to_string(),
                negated: true,
            },
            None => Pattern {
                glob: a.clone(),
                negated: false,
            },
        })
        .collect();
    Ok(Applies::Host(patterns))
}

/// One keyword line; `None` for keywords rookery does not use.
fn setting(lower: &str, keyword: &str, args: &[String]) -> Result<Option<Setting>, LineError> {
    let wanted = matches!(
        lower,
        "hostname"
            | "user"
            | "port"
            | "identityfile"
            | "proxyjump"
            | "userknownhostsfile"
            | "hostkeyalias"
    );
    if !wanted {
        return Ok(None);
    }
    let Some(value) = args.first() else {
        return Err(LineError::NeedsValue(keyword.to_string()));
    };
    Ok(Some(match lower {
        "hostname" => {
            check_hostname_tokens(value)?;
            Setting::HostName(value.clone())
        }
        "user" => Setting::User(value.clone()),
        "port" => match value.parse::<u16>() {
            Ok(p) if p > 0 => Setting::Port(p),
            _ => return Err(LineError::Port(value.clone())),
        },
        "identityfile" => Setting::IdentityFile(expand_home(value)),
        "proxyjump" => Setting::ProxyJump(value.clone()),
        "userknownhostsfile" if value == "none" => Setting::UserKnownHostsFiles(Vec::new()),
        "userknownhostsfile" => {
            Setting::UserKnownHostsFiles(args.iter().map(|a| expand_home(a)).collect())
        }
        _ => Setting::HostKeyAlias(value.clone()),
    }))
}

/// Splits a line into its keyword and arguments; `None` for blank lines and comments.
fn split_line(raw: &str) -> Result<Option<(String, Vec<String>)>, LineError> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_string();
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    Ok(Some((keyword, split_args(rest)?)))
}

/// Whitespace-separated arguments; `"..."` keeps spaces; a `#` that starts an
/// argument starts a comment.
fn split_args(mut rest: &str) -> Result<Vec<String>, LineError> {
    let mut args = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with('#') {
            return Ok(args);
        }
        if let Some(q) = rest.strip_prefix('"') {
            let close = q.find('"').ok_or(LineError::OpenQuote)?;
            args.push(q[..close].to_string());
            rest = &q[close + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            args.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
}

/// HostName accepts `%h` and `%%` only, as in OpenSSH.
fn check_hostname_tokens(value: &str) -> Result<(), LineError> {
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('h' | '%') => {}
                Some(t) => {
                    return Err(LineError::UnknownToken {
                        value: value.to_string(),
                        token: t,
                    });
                }
                None => return Err(LineError::LonePercent(value.to_string())),
            }
        }
    }
    Ok(())
}

/// `%h` is the name as given; `%%` is `%`. The tokens were checked when parsing.
fn expand_hostname(value: &str, name: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(name),
            Some(other) => out.push(other),
            None => out.push('%'),
        }
    }
    out
}

fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::home_dir()
    {
        return home.join(rest);
    }
    PathBuf::from(p)
}

/// OpenSSH's `match_pattern`: `*` any run, `?` any one character, the rest literal
/// and case-sensitive: the inventory's own glob.
fn glob_matches(pattern: &str, name: &str) -> bool {
    crate::config::selector::glob(pattern, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str, name: &str) -> HostConfig {
        SshConfig::parse(text, "config").unwrap().query(name)
    }

    #[test]
    fn the_first_value_obtained_wins_across_blocks_and_within_one() {
        let text = "Host web-a\n  HostName 10.0.0.1\n  HostName 10.0.0.9\n  User first\n\nHost *\n  HostName 10.0.0.99\n  User second\n  Port 2200\n";
        let hc = query(text, "web-a");
        assert_eq!(hc.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(hc.user.as_deref(), Some("first"));
        assert_eq!(hc.port, Some(2200));
        // Another name only gets the catch-all.
        assert_eq!(query(text, "web-b").hostname.as_deref(), Some("10.0.0.99"));
    }

    #[test]
    fn settings_before_the_first_host_apply_to_every_host_and_win() {
        let hc = query("User early\nHost x\n  User late\n  Port 23\n", "x");
        assert_eq!(hc.user.as_deref(), Some("early"));
        assert_eq!(hc.port, Some(23));
    }

    #[test]
    fn patterns_have_wildcards_and_negation() {
        let text = "Host web-? !web-b\n  HostName one\nHost *.example.com db*\n  HostName two\n";
        assert_eq!(query(text, "web-a").hostname.as_deref(), Some("one"));
        assert_eq!(query(text, "web-b").hostname, None);
        assert_eq!(query(text, "web-10").hostname, None);
        assert_eq!(
            query(text, "a.example.com").hostname.as_deref(),
            Some("two")
        );
        assert_eq!(query(text, "db").hostname.as_deref(), Some("two"));
        // Host patterns are case-sensitive, as OpenSSH's match_pattern.
        assert_eq!(query(text, "WEB-a").hostname, None);
        // A block of negations only matches nothing.
        assert_eq!(query("Host !x\n  User u\n", "y").user, None);
    }

    #[test]
    fn hostname_expands_percent_h_to_the_name_as_given() {
        let text = "Host *.lan\n  HostName %h.example.com\nHost pct\n  HostName 100%%.x\n";
        assert_eq!(
            query(text, "db.lan").hostname.as_deref(),
            Some("db.lan.example.com")
        );
        assert_eq!(query(text, "pct").hostname.as_deref(), Some("100%.x"));
        let e = SshConfig::parse("Host x\n  HostName %r.example.com\n", "cfg").unwrap_err();
        assert_eq!(
            e,
            "cfg:2: HostName `%r.example.com`: unknown token %r (HostName takes %h and %%)"
        );
    }

    #[test]
    fn lines_take_equals_tabs_quotes_and_comments() {
        let text = "host=x\n\tHostName=\"10.0.0.1\" # trailing\n  USER\tdeploy\n  IdentityFile \"/k/with space\"\n  IdentityFile /k/two\n# Host x\n";
        let hc = query(text, "x");
        assert_eq!(hc.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(hc.user.as_deref(), Some("deploy"));
        assert_eq!(
            hc.identity_files,
            vec![PathBuf::from("/k/with space"), PathBuf::from("/k/two")]
        );
    }

    #[test]
    fn identity_files_accumulate_and_known_hosts_files_are_a_list() {
        let text = "Host a\n  IdentityFile /a\n  UserKnownHostsFile /k1 /k2\nHost *\n  IdentityFile /b\n  UserKnownHostsFile /k3\n  HostKeyAlias alias\n";
        let hc = query(text, "a");
        assert_eq!(
            hc.identity_files,
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(
            hc.user_known_hosts_files,
            Some(vec![PathBuf::from("/k1"), PathBuf::from("/k2")])
        );
        assert_eq!(hc.host_key_alias.as_deref(), Some("alias"));
        assert_eq!(
            query("UserKnownHostsFile none\n", "a").user_known_hosts_files,
            Some(vec![])
        );
    }

    #[test]
    fn match_blocks_never_apply_but_match_all_does() {
        let text = "Match host x\n  User skipped\nMatch all\n  Port 2022\nHost x\n  User taken\n";
        let hc = query(text, "x");
        assert_eq!(hc.user.as_deref(), Some("taken"));
        assert_eq!(hc.port, Some(2022));
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        assert_eq!(
            SshConfig::parse("Host x\n  Port 70000\n", "cfg").unwrap_err(),
            "cfg:2: Port must be 1 to 65535, found `70000`"
        );
        assert_eq!(
            SshConfig::parse("Host\n", "cfg").unwrap_err(),
            "cfg:1: `Host` needs an argument"
        );
        assert_eq!(
            SshConfig::parse("Host x\n  HostName \"open\n", "cfg").unwrap_err(),
            "cfg:2: a quoted argument is not closed"
        );
        // Keywords rookery does not use are skipped, whatever their values.
        assert!(SshConfig::parse("ServerAliveInterval 10\nForwardAgent\n", "cfg").is_ok());
    }
}
