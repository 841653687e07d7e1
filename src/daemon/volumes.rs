//! A pod's volumes on the host: files written as the kubelet's
//! AtomicWriter writes them, `hostPath` type checks, and the mounts made
//! inside the pod's mount namespace.
//!
//! Layout: `STATE/pods/UID/volumes/NAME`. A files volume holds
//! `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN/` (the payload), `..data` (a symlink
//! to it, replaced with one `rename`, so a reader sees the old payload or
//! the new, never a mix) and a symlink `KEY -> ..data/KEY` per top-level
//! name. Secret and projected volumes (and `emptyDir` with `medium:
//! Memory`) are a tmpfs mounted inside the pod's mount namespace only, and
//! written from there: their bytes never reach a disk, nor the host's
//! mount table.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::control::reconcile::pod_volumes::FileData;

/// The payload link.
const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Checks a payload path: relative, no `..`, not starting with `..`.
fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with("..")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// The timestamped directory name for `now` (UTC), unique in `dir`.
fn ts_dir_name(dir: &Path, now: SystemTime) -> String {
    let d = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut nanos = d.subsec_nanos();
    loop {
        let name = format!(
            "..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.{nanos:09}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        if !dir.join(&name).exists() {
            return name;
        }
        nanos = nanos.wrapping_add(1) % 1_000_000_000;
    }
}

/// Whether the payload in `dir` (through `..data`) is `files` already.
fn same_payload(dir: &Path, files: &BTreeMap<String, FileData>) -> bool {
    let data = dir.join(DATA);
    let Ok(target) = std::fs::read_link(&data) else {
        return false;
    };
    let current = dir.join(target);
    let mut count = 0;
    if !walk_files(&current, &current, &mut |rel, path| {
        count += 1;
        let Some(want) = files.get(rel) else {
            return false;
        };
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777);
        std::fs::read(path).ok().as_deref() == Some(want.bytes.as_slice())
            && mode.ok() == Some(want.mode & 0o7777)
    }) {
        return false;
    }
    count == files.len()
}

/// Calls `f(relative, path)` for every file under `dir`; false as soon as
/// one call is.
fn walk_files(root: &Path, dir: &Path, f: &mut dyn FnMut(&str, &Path) -> bool) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if !walk_files(root, &path, f) {
                return false;
            }
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if !f(&rel, &path) {
                return false;
            }
        }
    }
    true
}

/// Writes `files` into `dir` as the kubelet's AtomicWriter does; returns
/// whether anything changed. The previous payload directory and the links
/// of names no longer in the payload are removed.
pub fn write_atomic(
    dir: &Path,
    files: &BTreeMap<String, FileData>,
    now: SystemTime,
) -> io::Result<bool> {
    for p in files.keys() {
        if !valid_path(p) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid path {p:?} in a volume: it must be relative, without '..'"),
            ));
        }
    }
    std::fs::create_dir_all(dir)?;
    if same_payload(dir, files) {
        return Ok(false);
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let ts = ts_dir_name(dir, now);
    let ts_path = dir.join(&ts);
    std::fs::create_dir(&ts_path)?;
    std::fs::set_permissions(&ts_path, std::fs::Permissions::from_mode(0o755))?;
    for (rel, f) in files {
        let path = ts_path.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    // The user-visible names: one link per top-level component.
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != ts.as_str()) {
        let old = dir.join(old);
        if old.starts_with(dir) && old != *dir {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(true)
}

/// Checks (or, for the `...OrCreate` types, makes) a `hostPath`, with the
/// kubelet's messages.
pub fn check_host_path(path: &str, type_: &str) -> Result<(), String> {
    let p = Path::new(path);
    let meta = std::fs::metadata(p).ok();
    let exists = std::fs::symlink_metadata(p).is_ok();
    let ft = meta.as_ref().map(|m| m.file_type());
    let is = |f: &dyn Fn(&std::fs::FileType) -> bool| ft.as_ref().is_some_and(f);
    let fail = |what: &str| Err(format!("hostPath type check failed: {path} is not {what}"));
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" if !exists => {
            std::fs::create_dir_all(p).map_err(|e| format!("cannot create {path}: {e}"))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot chmod {path}: {e}"))
        }
        "DirectoryOrCreate" | "Directory" => {
            if is(&|f| f.is_dir()) {
                Ok(())
            } else {
                fail("a directory")
            }
        }
        "FileOrCreate" if !exists => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(drop)
            .map_err(|e| format!("cannot create {path}: {e}")),
        "FileOrCreate" | "File" => {
            if is(&|f| f.is_file()) {
                Ok(())
            } else {
                fail("a file")
            }
        }
        "Socket" => {
            if is(&|f| f.is_socket()) {
                Ok(())
            } else {
                fail("a socket file")
            }
        }
        "CharDevice" => {
            if is(&|f| f.is_char_device()) {
                Ok(())
            } else {
                fail("a character device")
            }
        }
        "BlockDevice" => {
            if is(&|f| f.is_block_device()) {
                Ok(())
            } else {
                fail("a block device")
            }
        }
        other => Err(format!("{other} is an invalid volume type")),
    }
}

/// `STATE/pods/UID/volumes/NAME`.
pub fn volume_dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(name)
}

/// The directories of local PersistentVolumes: `STATE/volumes/NAME`, made
/// world-writable (any user a pod runs as may write its volume, as the
/// local-path provisioner makes them).
pub struct LocalVolumeDirs {
    root: PathBuf,
}

impl LocalVolumeDirs {
    /// Volumes under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
}

impl crate::control::reconcile::volume_claims::VolumeDirs for LocalVolumeDirs {
    fn make(&self, name: &str) -> Result<String, String> {
        if !valid_path(name) || name.contains('/') {
            return Err(format!("{name:?} is not a volume name"));
        }
        let dir = self.root.join(name);
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)));
        made.map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        Ok(dir.display().to_string())
    }

    fn remove(&self, path: &str) -> Result<(), String> {
        // Only a directory this made: one level under the root.
        let p = Path::new(path);
        if p.parent() != Some(self.root.as_path())
            || !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(valid_path)
        {
            return Err(format!(
                "{path} is not a volume directory of this node ({}/NAME); left alone",
                self.root.display()
            ));
        }
        match std::fs::remove_dir_all(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {path}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str, u32)]) -> BTreeMap<String, FileData> {
        items
            .iter()
            .map(|(k, v, m)| {
                (
                    k.to_string(),
                    FileData {
                        bytes: v.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn ts_dirs(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..2"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_writer_layout_update_and_cleanup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let t0 =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789);
        let first = payload(&[("a", "1", 0o644), ("conf/b.ini", "x=1", 0o600)]);
        assert!(write_atomic(&dir, &first, t0).unwrap());
        let dirs = ts_dirs(&dir);
        assert_eq!(dirs, ["..2023_11_14_22_13_20.123456789"]);
        assert_eq!(
            std::fs::read_link(dir.join("..data")).unwrap(),
            Path::new(&dirs[0])
        );
        assert_eq!(
            std::fs::read_link(dir.join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_link(dir.join("conf")).unwrap(),
            Path::new("..data/conf")
        );
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(dir.join("conf/b.ini")).unwrap(),
            "x=1"
        );
        let mode = std::fs::metadata(dir.join("conf/b.ini"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Unchanged: nothing written.
        assert!(!write_atomic(&dir, &first, t0 + std::time::Duration::from_secs(1)).unwrap());
        assert_eq!(ts_dirs(&dir), dirs);

        // Changed: a new directory, the link swapped, the old one and the
        // link of a removed key gone.
        let t1 = t0 + std::time::Duration::from_secs(61);
        let second = payload(&[("a", "2", 0o644), ("c", "new", 0o644)]);
        assert!(write_atomic(&dir, &second, t1).unwrap());
        let now = ts_dirs(&dir);
        assert_eq!(now.len(), 1);
        assert_ne!(now, dirs);
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(dir.join("c")).unwrap(), "new");
        assert!(std::fs::symlink_metadata(dir.join("conf")).is_err());
        assert!(!dir.join(DATA_TMP).exists());

        // A mode change alone is a change.
        let third = payload(&[("a", "2", 0o400), ("c", "new", 0o644)]);
        assert!(write_atomic(&dir, &third, t1).unwrap());
        assert_eq!(ts_dirs(&dir).len(), 1);

        for bad in ["../x", "/etc/passwd", "..hidden", "a/../../b", ""] {
            assert!(
                write_atomic(&dir, &payload(&[(bad, "x", 0o644)]), t1).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn host_path_types_as_the_kubelet_checks_them() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_str().unwrap().to_string();
        let file = format!("{d}/f");
        std::fs::write(&file, "x").unwrap();
        let sock = format!("{d}/s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(check_host_path(&d, "Directory"), Ok(()));
        assert_eq!(check_host_path(&file, "File"), Ok(()));
        assert_eq!(check_host_path(&sock, "Socket"), Ok(()));
        assert_eq!(check_host_path("/dev/null", "CharDevice"), Ok(()));
        assert_eq!(check_host_path("/nonexistent/x", ""), Ok(()));
        assert_eq!(
            check_host_path(&file, "Directory"),
            Err(format!(
                "hostPath type check failed: {file} is not a directory"
            ))
        );
        assert_eq!(
            check_host_path(&d, "File"),
            Err(format!("hostPath type check failed: {d} is not a file"))
        );
        assert_eq!(
            check_host_path(&file, "Socket"),
            Err(format!(
                "hostPath type check failed: {file} is not a socket file"
            ))
        );
        assert_eq!(
            check_host_path(&file, "CharDevice"),
            Err(format!(
                "hostPath type check failed: {file} is not a character device"
            ))
        );
        assert_eq!(
            check_host_path("/dev/null", "BlockDevice"),
            Err("hostPath type check failed: /dev/null is not a block device".to_string())
        );
        let missing = format!("{d}/missing");
        assert_eq!(
            check_host_path(&missing, "Directory"),
            Err(format!(
                "hostPath type check failed: {missing} is not a directory"
            ))
        );
        let made = format!("{d}/made/deep");
        assert_eq!(check_host_path(&made, "DirectoryOrCreate"), Ok(()));
        assert!(Path::new(&made).is_dir());
        let made_file = format!("{d}/made/file");
        assert_eq!(check_host_path(&made_file, "FileOrCreate"), Ok(()));
        assert!(Path::new(&made_file).is_file());
        assert_eq!(
            check_host_path(&d, "Nonsense"),
            Err("Nonsense is an invalid volume type".to_string())
        );
    }
}
