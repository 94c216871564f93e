//! The release's metainfo on the controller: made from the artifact (reusing the
//! hashes of the previous release's unchanged files), kept in the controller's state
//! directory, and where each host keeps its copy.

use super::*;

/// Where the controller keeps metainfo files between runs.
pub(super) fn state_dir(config: &Config) -> PathBuf {
    match &config.inventory.transport {
        inventory::Transport::Local { root } => root.join(".controller"),
        inventory::Transport::Ssh(_) => std::env::temp_dir().join(format!(
            "rookery-{}-{}",
            config.inventory.cluster,
            current_uid()
        )),
    }
}

pub(super) fn current_uid() -> u32 {
    // SAFETY: getuid(2) cannot fail.
    unsafe { libc::getuid() }
}

/// Builds (or reuses) the metainfo of the artifact; returns it with its version.
pub fn prepare(config: &Config) -> anyhow::Result<(Metainfo, String, PathBuf)> {
    let (m, stats) = create(&config.playbook.artifact.source, &create_options(config))?;
    let bytes = m.to_bytes();
    let (version, file) = keep_metainfo(config, &m, &bytes, Some(&stats))?;
    Ok((m, version, file))
}

pub(super) fn create_options(config: &Config) -> metainfo::CreateOptions {
    // Read once: its manifest lays the new release out, its hashes may be reused.
    let previous = previous_metainfo(config);
    metainfo::CreateOptions {
        piece_size: config.playbook.distribution.piece_size.map(|s| s.0),
        announce: None,
        name: None,
        keep_special_bits: config.playbook.artifact.keep_special_bits,
        previous: previous.as_ref().map(|m| m.rookery.clone()),
        reuse: previous.and_then(|m| previous_hashed(config, m)),
    }
}

pub(super) fn create(
    source: &std::path::Path,
    opts: &metainfo::CreateOptions,
) -> anyhow::Result<(Metainfo, metainfo::Stats)> {
    metainfo::create_logged(source, opts)
        .with_context(|| format!("creating metainfo for {}", source.display()))
}

/// [`create`] on a blocking thread, to overlap with connecting to the hosts.
pub(super) fn spawn_create(
    config: &Config,
) -> tokio::task::JoinHandle<anyhow::Result<(Metainfo, metainfo::Stats)>> {
    let source = config.playbook.artifact.source.clone();
    let opts = create_options(config);
    tokio::task::spawn_blocking(move || create(&source, &opts))
}

/// Where host `h` keeps the metainfo of `version`.
pub(super) fn torrent_path(config: &Config, h: usize, version: &str) -> String {
    config
        .host_destination(h)
        .join(".rookery")
        .join(format!("{version}.torrent"))
        .display()
        .to_string()
}

/// The release version of `m`, and a copy of its bytes in the controller's state
/// directory (`<version>.torrent`), with the stats of the files hashed here
/// (`<version>.stats.json`, for the next release to reuse their hashes).
pub(super) fn keep_metainfo(
    config: &Config,
    m: &Metainfo,
    bytes: &[u8],
    stats: Option<&metainfo::Stats>,
) -> anyhow::Result<(String, PathBuf)> {
    let version = match &config.playbook.artifact.version {
        Version::ContentHash => m.content_version(),
        Version::Label(l) => l.clone(),
    };
    let dir = state_dir(config);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!("{version}.torrent"));
    std::fs::write(&file, bytes).with_context(|| format!("writing {}", file.display()))?;
    let stats_path = stats_file(config, &version);
    match stats {
        Some(stats) => metainfo::save_stats(&stats_path, stats)
            .with_context(|| format!("writing {}", stats_path.display()))?,
        // Hashed elsewhere (on the origin host): nothing here to compare with.
        None => {
            let _ = std::fs::remove_file(&stats_path);
        }
    }
    let last = last_file(config);
    std::fs::write(&last, &version).with_context(|| format!("writing {}", last.display()))?;
    Ok((version, file))
}

/// Names the version this playbook's metainfo was last made for.
pub(super) fn last_file(config: &Config) -> PathBuf {
    state_dir(config).join(format!("last-{}", config.playbook.name))
}

/// The metainfo this playbook's last distribution made, if this machine still has
/// it: the next one is laid out after it (see `metainfo::create`). Anything missing
/// or unreadable means none.
pub(super) fn previous_metainfo(config: &Config) -> Option<Metainfo> {
    let version = std::fs::read_to_string(last_file(config)).ok()?;
    crate::config::inventory::check_name(version.trim()).ok()?;
    let file = state_dir(config).join(format!("{}.torrent", version.trim()));
    let bytes = std::fs::read(file).ok()?;
    Metainfo::from_bytes(&bytes).ok()
}

/// Where the stats of the files hashed for `version` are kept (beside its metainfo).
pub(super) fn stats_file(config: &Config, version: &str) -> PathBuf {
    state_dir(config).join(format!("{version}.stats.json"))
}

/// The last distribution's metainfo with the stats of the files it hashed, if this
/// machine still has them: unchanged files are not read again (see
/// `metainfo::CreateOptions::reuse`).
pub(super) fn previous_hashed(config: &Config, metainfo: Metainfo) -> Option<metainfo::Hashed> {
    let version = std::fs::read_to_string(last_file(config)).ok()?;
    let stats = metainfo::load_stats(&stats_file(config, version.trim()))?;
    Some(metainfo::Hashed { metainfo, stats })
}
