//! Reading YAML: positions, aliases and merge keys, and hostile text refused.

use super::*;

fn map_keys(node: &Node) -> Vec<String> {
    match &node.value {
        Value::Map(e) => e
            .iter()
            .map(|(k, _)| k.as_scalar().unwrap().to_string())
            .collect(),
        _ => panic!("not a map"),
    }
}

#[test]
fn positions_are_one_based() {
    let root = parse("t.yml", "a: 1\nb:\n  c: x\n").unwrap();
    let Value::Map(entries) = &root.value else {
        panic!()
    };
    assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
    assert_eq!(entries[1].1.pos.line, 3);
    let Value::Map(inner) = &entries[1].1.value else {
        panic!()
    };
    assert_eq!(inner[0].0.pos, Pos { line: 3, col: 3 });
}

#[test]
fn syntax_errors_carry_a_position() {
    let err = parse("t.yml", "a: [1, 2\nb: 3\n").unwrap_err();
    assert_eq!(err.file, "t.yml");
    assert!(err.pos.is_some());
    assert!(
        err.message.starts_with("YAML syntax error"),
        "{}",
        err.message
    );
}

#[test]
fn merge_keys_and_aliases() {
    let text = "base: &b {x: 1, y: 2}\nitem:\n  <<: *b\n  y: 3\n";
    let root = parse("t.yml", text).unwrap();
    let Value::Map(entries) = &root.value else {
        panic!()
    };
    let item = &entries[1].1;
    assert_eq!(map_keys(item), ["y", "x"]);
    let Value::Map(ie) = &item.value else {
        panic!()
    };
    assert_eq!(ie[0].1.as_scalar(), Some("3"));
}

#[test]
fn unquoted_exclusions_are_refused() {
    let err = parse("t.yml", "hosts: [a, !b]\n").unwrap_err();
    assert_eq!(err.message, "`!b` is read by YAML as a tag; quote it: '!b'");
    let err = parse("t.yml", "hosts:\n  - a\n  - &b\n").unwrap_err();
    assert!(
        err.message
            .starts_with("an anchor (`&name`) on an empty value"),
        "{}",
        err.message
    );
    assert!(parse("t.yml", "hosts: [a, '!b', '&c']\n").is_ok());
}

#[test]
fn empty_document_is_null() {
    assert!(matches!(parse("t.yml", "").unwrap().value, Value::Null));
    assert!(matches!(
        parse("t.yml", "# only a comment\n").unwrap().value,
        Value::Null
    ));
}

#[test]
fn quoted_scalars_are_not_null() {
    let root = parse("t.yml", "a: ''\nb: ~\n").unwrap();
    let Value::Map(e) = &root.value else { panic!() };
    assert!(matches!(e[0].1.value, Value::Scalar { quoted: true, .. }));
    assert!(matches!(e[1].1.value, Value::Null));
}

#[test]
fn a_nul_byte_is_refused_where_it_is() {
    let err = parse("t.yml", "a: 1\nb:\n  c: x\0\n  d: y\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.yml:3:7: a NUL byte (U+0000) is not allowed in a YAML file"
    );
    let err = parse("t.yml", "a: \u{1b}[31m\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.yml:1:4: control character U+001B is not allowed in a YAML file"
    );
    assert!(parse("t.yml", "\u{feff}a: \"\\0 é\"\t\r\n").is_ok());
}

#[test]
fn bytes_that_are_not_utf8_are_placed() {
    let err = text_of("t.yml", b"a: 1\nb: caf\xe9\n".to_vec()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.yml:2:7: byte 0xE9 is not UTF-8: a YAML file must be UTF-8 text"
    );
    let err = text_of("t.yml", b"\xc3\xa9: \xff".to_vec()).unwrap_err();
    assert_eq!(err.pos, Some(Pos { line: 1, col: 4 }));
}

/// Nine levels of nine aliases: 9^9 values if expanded.
fn laughs() -> String {
    let mut text = "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_string();
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "l{i}: &l{i} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
        ));
    }
    text
}

#[test]
fn an_alias_bomb_is_refused() {
    let err = parse("t.yml", &laughs()).unwrap_err();
    assert!(
        err.to_string().starts_with("t.yml:7:"),
        "refused where it grows past the bound: {err}"
    );
    assert!(
        err.message.contains("an alias bomb would exhaust memory"),
        "{err}"
    );
    // A long scalar repeated counts at its size.
    let long = "x".repeat(64 * 1024);
    let mut text = format!("a: &a {long}\nb: [");
    text.push_str(&"*a, ".repeat(20_000));
    text.push_str("]\n");
    assert!(parse("t.yml", &text).is_err());
}

#[test]
fn deep_nesting_is_refused_also_through_aliases() {
    let err = parse("t.yml", &"- ".repeat(100_000)).unwrap_err();
    assert_eq!(
        err.message,
        format!("lists and mappings nest deeper than {MAX_DEPTH} levels")
    );
    let deep = |n: usize| format!("{}x{}", "[".repeat(n), "]".repeat(n));
    let text = format!(
        "a: &a {}\nb: &b {}\n",
        deep(100),
        deep(50).replace('x', "*a")
    );
    let err = parse("t.yml", &text).unwrap_err();
    assert_eq!(err.pos, Some(Pos { line: 2, col: 57 }), "{err}");
    assert!(parse("t.yml", &deep(100)).is_ok());
}
