//! Crash-safe files in the state directory: write to a temporary file in
//! the same directory, fsync it, rename it over the target, fsync the
//! directory. After [`write_atomic`] returns, a crash (even `kill -9` or a
//! power cut) leaves either the old content or the new one, never a mix,
//! and the new content survives.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How far a successful [`write_atomic`] got.
#[derive(Debug)]
pub enum Written {
    /// Replaced, and the directory entry is on disk.
    Durable,
    /// Replaced (readers and a restart without a power cut see the new
    /// content), but the directory fsync after the rename failed: a power
    /// cut may bring the old file back. Not an error: the change *was*
    /// made; report it and warn.
    DirSyncFailed(io::Error),
}

/// Replace `path` with `bytes` atomically and durably. `Err` means the
/// file was not replaced; see [`Written`] for a replaced file whose
/// directory could not be synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<Written> {
    write_atomic_with(path, bytes, sync_dir)
}

/// fsync a directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// [`write_atomic`] with the directory sync given (a failing one in tests).
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    sync: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<Written> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "state file path has no file name",
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp: PathBuf = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // From here on the file is replaced, whatever the sync says.
    Ok(match sync(dir) {
        Ok(()) => Written::Durable,
        Err(e) => Written::DirSyncFailed(e),
    })
}

/// Read `path`; `Ok(None)` when it does not exist.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Create the state directory (and parents) if missing and check that a
/// file can be written there.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let probe = dir.join(".shardgate-write-test");
    if let Written::DirSyncFailed(e) = write_atomic(&probe, b"ok\n")? {
        let _ = fs::remove_file(&probe);
        return Err(e);
    }
    fs::remove_file(&probe)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(read_if_exists(&path).unwrap(), None);
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_failed_directory_sync_still_reports_the_file_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        let w = write_atomic_with(&path, b"new", |_| Err(io::Error::other("EIO"))).unwrap();
        assert!(matches!(w, Written::DirSyncFailed(_)), "{w:?}");
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(matches!(
            write_atomic(&path, b"x").unwrap(),
            Written::Durable
        ));
    }

    #[test]
    fn prepares_nested_directories() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        prepare_dir(&nested).unwrap();
        assert!(nested.is_dir());
        assert_eq!(fs::read_dir(&nested).unwrap().count(), 0);
    }
}
