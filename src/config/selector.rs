//! Host patterns, as in Ansible's `--limit`: one grammar for `--limit`, for group
//! members in the inventory and for a service's `hosts:` in a playbook.
//!
//! A pattern is a list of terms, as Ansible reads them: plain terms are unioned, then
//! `&term` intersects and `!term` removes, whatever their order
//! (`dc:east,&label:tier=web,!web-3`). Terms are separated by `,`; `&` also starts a
//! term where it stands (`dc:east&rack:east/e2`), and so do Ansible's `:&` and `:!`
//! (`web:&east`, `web:!web-3`). A term is
//! `host:GLOB`, `rack:GLOB` (`dc/rack`, or a bare rack name in any DC), `dc:GLOB`,
//! `group:NAME`, `label:KEY=VALUE`, or a bare word: a glob over host names, or the one
//! host, group, DC or `dc/rack` of that name.

use crate::config::diagnostic::Invalid;
use std::collections::BTreeSet;

use crate::config::diagnostic::suggestion;

/// What a pattern is matched against. The inventory implements it; its loader also
/// implements it over half-resolved groups to resolve groups made of groups.
pub trait Universe {
    fn host_names(&self) -> Box<dyn Iterator<Item = (usize, &str)> + '_>;
    /// (rack id, "dc/rack", hosts)
    fn racks(&self) -> Box<dyn Iterator<Item = (&str, &str, &[usize])> + '_>;
    /// (dc name, hosts)
    fn datacenters(&self) -> Box<dyn Iterator<Item = (&str, Vec<usize>)> + '_>;
    fn group(&self, name: &str) -> Option<Result<Vec<usize>, Invalid>>;
    fn group_names(&self) -> Vec<&str>;
    fn label(&self, host: usize, key: &str) -> Option<&str>;
    fn host_count(&self) -> usize;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Union,
    Intersect,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Host(String),
    Rack(String),
    Dc(String),
    Group(String),
    Label(String, String),
    Bare(String),
}

/// A parsed host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    terms: Vec<(Op, Atom)>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, Invalid> {
        let mut terms = Vec::new();
        for raw in split_terms(text) {
            let raw = raw.trim();
            if raw.is_empty() {
                return Err(format!("pattern `{text}` has an empty term").into());
            }
            let (op, rest) = match raw.as_bytes()[0] {
                b'!' => (Op::Remove, &raw[1..]),
                b'&' => (Op::Intersect, &raw[1..]),
                _ => (Op::Union, raw),
            };
            if rest.is_empty() {
                return Err(format!("pattern `{text}` has an empty term").into());
            }
            let atom = match rest.split_once(':') {
                Some(("host", v)) => Atom::Host(v.to_string()),
                Some(("rack", v)) => Atom::Rack(v.to_string()),
                Some(("dc", v)) => Atom::Dc(v.to_string()),
                Some(("group", v)) => Atom::Group(v.to_string()),
                Some(("label", v)) => match v.split_once('=') {
                    Some((k, val)) if !k.is_empty() => Atom::Label(k.to_string(), val.to_string()),
                    _ => {
                        return Err(
                            format!("`{rest}`: a label term is written `label:KEY=VALUE`").into(),
                        );
                    }
                },
                Some((kind, _)) => {
                    let hint = suggestion(kind, ["host", "rack", "dc", "group", "label"]);
                    return Err(format!("`{rest}`: unknown kind `{kind}:`{hint}").into());
                }
                None => Atom::Bare(rest.to_string()),
            };
            terms.push((op, atom));
        }
        Ok(Pattern {
            text: text.to_string(),
            terms,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The items of a list (a playbook's `hosts:`) read as one pattern, as Ansible
    /// reads them: an exclusion or intersection applies to the union of the other
    /// items, not to every host on its own.
    pub fn combine<'a>(items: impl IntoIterator<Item = &'a Pattern>) -> Pattern {
        let (mut text, mut terms) = (Vec::new(), Vec::new());
        for p in items {
            text.push(p.text.as_str());
            terms.extend(p.terms.iter().cloned());
        }
        Pattern {
            text: text.join(","),
            terms,
        }
    }

    /// Group names this pattern refers to (to order group resolution).
    pub fn group_refs<'a>(&'a self, u: &'a dyn Universe) -> Vec<&'a str> {
        let groups = u.group_names();
        self.terms
            .iter()
            .filter_map(|(_, a)| match a {
                Atom::Group(g) => Some(g.as_str()),
                Atom::Bare(b) if groups.contains(&b.as_str()) => Some(b.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The hosts the pattern selects, in id order. A term that matches nothing is an
    /// error: a typo in `--limit` must never silently select no host (or every host).
    pub fn select(&self, u: &dyn Universe) -> Result<Vec<usize>, Invalid> {
        let mut acc: Option<BTreeSet<usize>> = None;
        let mut filters = Vec::new();
        for (op, atom) in &self.terms {
            let hosts = resolve(atom, u)?;
            match op {
                Op::Union => acc.get_or_insert_with(BTreeSet::new).extend(hosts),
                _ => filters.push((*op, hosts)),
            }
        }
        let mut set = acc.unwrap_or_else(|| (0..u.host_count()).collect());
        for (op, hosts) in filters {
            let other: BTreeSet<usize> = hosts.into_iter().collect();
            match op {
                Op::Intersect => set.retain(|h| other.contains(h)),
                Op::Remove => set.retain(|h| !other.contains(h)),
                Op::Union => unreachable!(),
            }
        }
        Ok(set.into_iter().collect())
    }
}

fn resolve(atom: &Atom, u: &dyn Universe) -> Result<Vec<usize>, Invalid> {
    let found: Vec<usize> = match atom {
        Atom::Host(g) => hosts_matching(g, u),
        Atom::Rack(g) => racks_matching(g, u),
        Atom::Dc(g) => u
            .datacenters()
            .filter(|(n, _)| glob(g, n))
            .flat_map(|(_, h)| h)
            .collect(),
        Atom::Group(name) => match u.group(name) {
            Some(r) => r?,
            None => {
                let hint = suggestion(name, u.group_names());
                return Err(format!("unknown group `{name}`{hint}").into());
            }
        },
        Atom::Label(k, v) => (0..u.host_count())
            .filter(|&h| u.label(h, k) == Some(v.as_str()))
            .collect(),
        Atom::Bare(word) if is_glob(word) => hosts_matching(word, u),
        Atom::Bare(word) => return resolve_word(word, u),
    };
    if found.is_empty() {
        return Err(format!("`{}` matches no host", describe(atom)).into());
    }
    Ok(found)
}

/// A bare word names exactly one thing; a name used by two kinds must be qualified.
fn resolve_word(word: &str, u: &dyn Universe) -> Result<Vec<usize>, Invalid> {
    let mut hits: Vec<(&str, Vec<usize>)> = Vec::new();
    if let Some((id, _)) = u.host_names().find(|(_, n)| *n == word) {
        hits.push(("host", vec![id]));
    }
    if let Some(g) = u.group(word) {
        hits.push(("group", g?));
    }
    if let Some((_, h)) = u.datacenters().find(|(n, _)| *n == word) {
        hits.push(("dc", h));
    }
    if let Some((_, _, h)) = u.racks().find(|(_, full, _)| *full == word) {
        hits.push(("rack", h.to_vec()));
    }
    match hits.len() {
        1 => {
            let (_, hosts) = hits.pop().expect("one hit");
            if hosts.is_empty() {
                return Err(format!("`{word}` matches no host").into());
            }
            Ok(hosts)
        }
        0 if u.racks().any(|(name, _, _)| name == word) => Err(format!(
            "`{word}` is a rack name; write `rack:{word}` (in every datacenter) or `DC/{word}`"
        )
        .into()),
        0 => {
            let mut names: Vec<String> = u.host_names().map(|(_, n)| n.to_string()).collect();
            names.extend(u.group_names().into_iter().map(str::to_string));
            names.extend(u.datacenters().map(|(n, _)| n.to_string()));
            names.extend(u.racks().map(|(_, full, _)| full.to_string()));
            let hint = suggestion(word, names.iter().map(String::as_str));
            Err(format!("`{word}` is not a host, group, DC or rack{hint}").into())
        }
        _ => {
            let kinds: Vec<String> = hits.iter().map(|(k, _)| format!("`{k}:{word}`")).collect();
            Err(format!("`{word}` is ambiguous: write {}", kinds.join(" or ")).into())
        }
    }
}

/// The terms of a pattern: split at `,`, and before an `&` (outside a glob's
/// `[...]`) or a `:&` / `:!`, the separator `:` dropped.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    for piece in text.split(',') {
        let bytes = piece.as_bytes();
        let (mut start, mut depth) = (0, 0usize);
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b'&' | b'!' if depth == 0 && !piece[start..i].trim().is_empty() => {
                    let colon = bytes[i - 1] == b':';
                    if b == b'&' || colon {
                        let end = if colon { i - 1 } else { i };
                        terms.push(&piece[start..end]);
                        start = i;
                    }
                }
                _ => {}
            }
        }
        terms.push(&piece[start..]);
    }
    terms
}

fn hosts_matching(g: &str, u: &dyn Universe) -> Vec<usize> {
    u.host_names()
        .filter(|(_, n)| glob(g, n))
        .map(|(i, _)| i)
        .collect()
}

fn racks_matching(g: &str, u: &dyn Universe) -> Vec<usize> {
    u.racks()
        .filter(|(name, full, _)| {
            if g.contains('/') {
                glob(g, full)
            } else {
                glob(g, name)
            }
        })
        .flat_map(|(_, _, h)| h.iter().copied())
        .collect()
}

fn describe(atom: &Atom) -> String {
    match atom {
        Atom::Host(g) => format!("host:{g}"),
        Atom::Rack(g) => format!("rack:{g}"),
        Atom::Dc(g) => format!("dc:{g}"),
        Atom::Group(g) => format!("group:{g}"),
        Atom::Label(k, v) => format!("label:{k}={v}"),
        Atom::Bare(w) => w.clone(),
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// Shell-style matching with `*` and `?` only.
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two DCs, two racks each, two hosts per rack; group `edge` = the first host of each DC.
    struct Toy {
        hosts: Vec<String>,
        racks: Vec<(String, String, Vec<usize>)>,
    }

    fn toy() -> Toy {
        let mut hosts = Vec::new();
        let mut racks = Vec::new();
        for dc in ["east", "west"] {
            for r in ["r1", "r2"] {
                let mut ids = Vec::new();
                for i in 1..=2 {
                    ids.push(hosts.len());
                    hosts.push(format!("{dc}-{r}-{i}"));
                }
                racks.push((r.to_string(), format!("{dc}/{r}"), ids));
            }
        }
        Toy { hosts, racks }
    }

    impl Universe for Toy {
        fn host_names(&self) -> Box<dyn Iterator<Item = (usize, &str)> + '_> {
            Box::new(self.hosts.iter().enumerate().map(|(i, h)| (i, h.as_str())))
        }
        fn racks(&self) -> Box<dyn Iterator<Item = (&str, &str, &[usize])> + '_> {
            Box::new(
                self.racks
                    .iter()
                    .map(|(n, f, h)| (n.as_str(), f.as_str(), h.as_slice())),
            )
        }
        fn datacenters(&self) -> Box<dyn Iterator<Item = (&str, Vec<usize>)> + '_> {
            Box::new(["east", "west"].into_iter().map(|dc| {
                let hosts = self
                    .hosts
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.starts_with(dc))
                    .map(|(i, _)| i)
                    .collect();
                (dc, hosts)
            }))
        }
        fn group(&self, name: &str) -> Option<Result<Vec<usize>, Invalid>> {
            (name == "edge").then(|| Ok(vec![0, 4]))
        }
        fn group_names(&self) -> Vec<&str> {
            vec!["edge"]
        }
        fn label(&self, host: usize, key: &str) -> Option<&str> {
            (key == "tier").then_some(if host.is_multiple_of(2) { "web" } else { "db" })
        }
        fn host_count(&self) -> usize {
            self.hosts.len()
        }
    }

    fn sel(p: &str) -> Result<Vec<usize>, Invalid> {
        Pattern::parse(p)?.select(&toy())
    }

    #[test]
    fn terms_combine_like_ansible() {
        assert_eq!(sel("dc:east").unwrap(), [0, 1, 2, 3]);
        assert_eq!(sel("east/r2").unwrap(), [2, 3]);
        assert_eq!(sel("rack:r1").unwrap(), [0, 1, 4, 5]);
        assert_eq!(sel("east-*,!east-r1-2").unwrap(), [0, 2, 3]);
        assert_eq!(sel("dc:*,&label:tier=db").unwrap(), [1, 3, 5, 7]);
        assert_eq!(sel("!dc:west").unwrap(), [0, 1, 2, 3]);
        assert_eq!(sel("edge,west-r2-?").unwrap(), [0, 4, 6, 7]);
    }

    #[test]
    fn typos_are_errors_not_empty_selections() {
        assert_eq!(
            sel("east-r1-9").unwrap_err(),
            "`east-r1-9` is not a host, group, DC or rack (did you mean `east-r1-2`?)"
        );
        assert_eq!(sel("dc:north").unwrap_err(), "`dc:north` matches no host");
        assert_eq!(
            sel("group:egde").unwrap_err(),
            "unknown group `egde` (did you mean `edge`?)"
        );
        assert_eq!(sel("zone:a").unwrap_err(), "`zone:a`: unknown kind `zone:`");
        assert_eq!(
            sel("web,,db").unwrap_err(),
            "pattern `web,,db` has an empty term"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("web-*", "web-12"));
        assert!(glob("*-1?", "web-12"));
        assert!(!glob("web-?", "web-12"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acbd"));
    }

    #[test]
    fn the_forms_of_an_intersection_select_the_same_hosts() {
        for form in [
            "dc:east,&rack:r2",
            "dc:east&rack:r2",
            "dc:east:&rack:r2",
            "dc:east, &rack:r2",
        ] {
            assert_eq!(sel(form).unwrap(), [2, 3], "{form}");
        }
        assert_eq!(sel("dc:east:!east-r2-1").unwrap(), [0, 1, 3], "`:!`");
    }

    #[test]
    fn ampersand_and_ansible_separators_start_a_term() {
        assert_eq!(
            split_terms("dc:east&rack:east/e2"),
            ["dc:east", "&rack:east/e2"]
        );
        assert_eq!(split_terms("web:&east"), ["web", "&east"]);
        assert_eq!(split_terms("web:!web-3"), ["web", "!web-3"]);
        assert_eq!(split_terms("a, &b,!c"), ["a", " &b", "!c"]);
        // `!` inside a glob's class, and a term that starts with it, stay whole.
        assert_eq!(split_terms("web-[!3]"), ["web-[!3]"]);
        assert_eq!(split_terms("!web-3"), ["!web-3"]);
    }
}
