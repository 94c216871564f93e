//! `rookery torrent create` and `torrent inspect`: metainfo for a tree, read back.

use crate::cli::{CreateArgs, Global};
use crate::command::app::print;
use crate::config::units::ByteSize;
use crate::error::{Error, Exit};
use crate::torrent::metainfo;
use anyhow::Context;
use std::path::{Path, PathBuf};

pub(super) fn torrent_create(g: &Global, a: &CreateArgs) -> anyhow::Result<Exit> {
    // `-v` says what was read and what was reused.
    crate::shutdown::init_logging();
    let dir = &a.dir;
    let previous = match &a.previous {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let m = metainfo::Metainfo::from_bytes(&bytes)
                .with_context(|| format!("refusing {}", p.display()))?;
            Some(m.rookery)
        }
        None => None,
    };
    let piece_size = match &a.piece_size {
        Some(text) => {
            let size =
                ByteSize::parse(text).map_err(|e| Error::Usage(format!("--piece-size: {e}")))?;
            if !crate::torrent::metainfo::valid_piece_size(size.0) {
                return Err(Error::Usage(format!(
                    "--piece-size: must be a power of two from 16KiB to 64MiB, found `{text}`"
                ))
                .into());
            }
            Some(size.0)
        }
        None => None,
    };
    let mut opts = metainfo::CreateOptions {
        piece_size,
        announce: a.tracker.clone(),
        name: None,
        keep_special_bits: a.keep_special_bits,
        previous,
        reuse: None,
    };
    let last = match (a.reuse, &a.output) {
        (true, Some(out)) => reusable(out),
        (true, None) => {
            return Err(Error::Usage("--reuse needs --output FILE".into()).into());
        }
        _ => None,
    };
    if let Some(h) = last {
        opts.previous = Some(h.metainfo.rookery.clone());
        opts.reuse = Some(h);
    }
    let (m, stats) = metainfo::create_logged(dir, &opts)
        .with_context(|| format!("creating metainfo for {}", dir.display()))?;
    let out = match &a.output {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(format!("{}.torrent", m.info.name)),
    };
    std::fs::write(&out, m.to_bytes()).with_context(|| format!("writing {}", out.display()))?;
    if a.reuse {
        let path = stats_path(&out);
        metainfo::save_stats(&path, &stats)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if g.json {
        let mut v = summary_json(&m);
        v["file"] = serde_json::json!(out.display().to_string());
        print(&format!("{}\n", crate::command::skeleton::json(&v)?))?;
    } else if !g.quiet {
        print(&format!("wrote {}\n{}", out.display(), summary_text(&m)))?;
    }
    Ok(Exit::Ok)
}

/// Where `torrent create --reuse` keeps the stats of the files it hashed into `out`.
fn stats_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".stats.json");
    PathBuf::from(name)
}

/// The metainfo and stats the last `--reuse` run left at `out`, if both are there
/// and readable; anything else means starting afresh.
fn reusable(out: &Path) -> Option<metainfo::Hashed> {
    let metainfo = metainfo::Metainfo::from_bytes(&std::fs::read(out).ok()?).ok()?;
    let stats = metainfo::load_stats(&stats_path(out))?;
    Some(metainfo::Hashed { metainfo, stats })
}

pub(super) fn torrent_inspect(g: &Global, file: &Path) -> anyhow::Result<Exit> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let m = metainfo::Metainfo::from_bytes(&bytes)
        .with_context(|| format!("reading {}", file.display()))?;
    if g.json {
        let mut v = summary_json(&m);
        v["files"] = serde_json::json!(
            m.info
                .files
                .iter()
                .map(|f| serde_json::json!({"path": f.path.join("/"), "length": f.length}))
                .collect::<Vec<_>>()
        );
        v["manifest"] = serde_json::to_value(&m.rookery)?;
        print(&format!("{}\n", crate::command::skeleton::json(&v)?))?;
    } else {
        let mut text = summary_text(&m);
        text.push_str("files:\n");
        for f in &m.info.files {
            text.push_str(&format!("  {:>12}  {}\n", f.length, f.path.join("/")));
        }
        for e in &m.rookery.empty {
            text.push_str(&format!("  {:>12}  {}\n", 0, e.path));
        }
        for l in &m.rookery.symlinks {
            text.push_str(&format!(
                "  {:>12}  {} -> {}\n",
                "symlink", l.path, l.target
            ));
        }
        print(&text)?;
    }
    Ok(Exit::Ok)
}

pub(super) fn summary_json(m: &metainfo::Metainfo) -> serde_json::Value {
    serde_json::json!({
        "name": m.info.name,
        "info_hash": m.info_hash_hex(),
        "version": m.content_version(),
        "announce": m.announce,
        "private": m.info.private == 1,
        "total_bytes": m.total_length(),
        "piece_length": m.info.piece_length,
        "pieces": m.piece_count(),
        "file_count": m.info.files.len(),
        "empty_files": m.rookery.empty.len(),
        "symlinks": m.rookery.symlinks.len(),
        "directories": m.rookery.dirs.len(),
    })
}

pub(super) fn summary_text(m: &metainfo::Metainfo) -> String {
    format!(
        "  name        {}\n  info hash   {}\n  version     {}\n  announce    {}\n  size        {} in {} pieces of {}\n  contents    {} files, {} empty files, {} symlinks, {} directories\n",
        m.info.name,
        m.info_hash_hex(),
        m.content_version(),
        m.announce.as_deref().unwrap_or("(none)"),
        ByteSize(m.total_length()),
        m.piece_count(),
        ByteSize(m.info.piece_length),
        m.info.files.len(),
        m.rookery.empty.len(),
        m.rookery.symlinks.len(),
        m.rookery.dirs.len(),
    )
}
