//! Command templates: the `start`, `stop`, `health` and hook commands of a playbook.
//!
//! A template may use `{placeholder}`s that rookery fills in per host. Placeholders are
//! checked when the playbook loads (an unknown one is a configuration error, not a
//! surprise on host 400), and every value is shell-quoted when filled in, so a path
//! with a space or a `;` can never become a second command. `{{` and `}}` are literal
//! braces.

use crate::config::diagnostic::Invalid;
use std::collections::BTreeMap;

use serde::Serialize;

/// The placeholders a command may use.
pub const PLACEHOLDERS: &[&str] = &[
    "host",        // inventory name of the host
    "address",     // its address
    "dc",          // its datacenter
    "rack",        // its rack (`dc/rack`)
    "service",     // the service being restarted
    "version",     // the version being deployed
    "release",     // absolute path of that version's release directory on the host
    "current",     // absolute path of the `current` symlink on the host
    "destination", // the artifact's destination root on the host
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(&'static str),
}

/// A checked command template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.source
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, Invalid> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "unclosed `{{` in `{source}` (write `{{{{` for a literal brace)"
                        )
                        .into());
                    };
                    let name = &rest[..end];
                    let Some(known) = PLACEHOLDERS.iter().find(|p| **p == name) else {
                        let hint = crate::config::diagnostic::suggestion(
                            name,
                            PLACEHOLDERS.iter().copied(),
                        );
                        return Err(format!(
                            "unknown placeholder `{{{name}}}`{hint}; known: {}",
                            PLACEHOLDERS
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                        .into());
                    };
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Var(known));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "stray `}}` in `{source}` (write `}}}}` for a literal brace)"
                    )
                    .into());
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The shell command with every placeholder replaced by its quoted value. A value
    /// missing from `vars` is an empty quoted string.
    pub fn render(&self, vars: &BTreeMap<&str, String>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => {
                    out.push_str(&shell_quote(vars.get(v).map(String::as_str).unwrap_or("")))
                }
            }
        }
        out
    }
}

/// Quotes a value for POSIX `sh`: safe words stay as they are, anything else goes in
/// single quotes with embedded quotes written as `'\''`.
pub fn shell_quote(value: &str) -> String {
    let safe = !value.is_empty()
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '/' | '.' | '_' | '-' | ':' | '=' | '@' | ',' | '+')
        });
    if safe {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_quoted() {
        let t = Template::parse("cd {release} && ./run --name {host} {{literal}}").unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("release", "/srv/app/releases/v 1".to_string());
        vars.insert("host", "web-1; rm -rf /".to_string());
        assert_eq!(
            t.render(&vars),
            "cd '/srv/app/releases/v 1' && ./run --name 'web-1; rm -rf /' {literal}"
        );
    }

    #[test]
    fn bad_templates_are_named() {
        assert_eq!(
            Template::parse("run {relase}").unwrap_err(),
            "unknown placeholder `{relase}` (did you mean `release`?); known: {host}, {address}, {dc}, {rack}, {service}, {version}, {release}, {current}, {destination}"
        );
        assert!(
            Template::parse("run {release")
                .unwrap_err()
                .starts_with("unclosed `{`")
        );
        assert!(
            Template::parse("run }")
                .unwrap_err()
                .starts_with("stray `}`")
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("plain-word_1.2"), "plain-word_1.2");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }
}
