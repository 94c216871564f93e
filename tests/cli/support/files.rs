//! What the tests put into artifacts and how they compare trees: pseudo-random
//! contents, executables, and an exact snapshot of a directory.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Pseudo-random bytes (xorshift), so pieces differ and compression cannot cheat.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes an executable file (mode 755).
pub fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Path -> (kind, mode, bytes or link target), for comparing trees exactly.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, (char, u32, Vec<u8>)>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let mode = md.mode() & 0o7777;
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                out.insert(rel, ('l', 0, t.into_os_string().into_encoded_bytes()));
            } else if md.is_dir() {
                out.insert(rel.clone(), ('d', mode, Vec::new()));
                walk(root, &rel, out);
            } else {
                out.insert(rel, ('f', mode, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    walk(root, Path::new(""), &mut out);
    out
}

/// Writes `art.torrent` in `d`: the metainfo of `d/art/`, 64 KiB pieces.
pub fn art_torrent(d: &Path) {
    crate::support::run_ok(
        d,
        &[
            "torrent",
            "create",
            "art",
            "-o",
            "art.torrent",
            "--piece-size",
            "64KiB",
        ],
    );
}
