//! File-system steps shared by the stages that write files (the blob directory, the inbox):
//! durable writes and names claimed without ever replacing someone else's file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// fsync a directory, so a file created or renamed in it survives power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A temporary file name beside nothing: unique across processes and hosts.
pub fn temp_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Write `parts` to a new file at `tmp` (which must not exist), syncing it when `fsync`.
pub fn write_new(tmp: &Path, parts: &[&[u8]], fsync: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let r = (|| {
        for p in parts {
            f.write_all(p)?;
        }
        if fsync {
            f.sync_data()?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

/// Give the finished file `tmp` the name `path` only if nothing has that name yet (a hard link
/// fails with AlreadyExists otherwise, atomically, also across hosts on NFS), then drop `tmp`.
/// Ok(false): the name is taken.
pub(crate) fn link_no_clobber(tmp: &Path, path: &Path, fsync: bool) -> std::io::Result<bool> {
    let named = linked(std::fs::hard_link(tmp, path), path, fsync)?;
    if named {
        let _ = std::fs::remove_file(tmp);
    }
    Ok(named)
}

/// The outcome of a hard link to `path`: Ok(true) named (its folder synced when `fsync`),
/// Ok(false) the name is taken.
fn linked(link: std::io::Result<()>, path: &Path, fsync: bool) -> std::io::Result<bool> {
    match link {
        Ok(()) => {
            if fsync && let Some(d) = path.parent() {
                sync_dir(d)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// A finished file that has no name yet: an unnamed file in the target directory (Linux
/// `O_TMPFILE`: nothing to create, rename or remove, nothing left behind by a crash), or a named
/// temporary file where the file system cannot make unnamed ones. A named one is removed on
/// drop.
pub(crate) enum Unnamed {
    Fd(std::fs::File),
    Named(PathBuf),
}

impl Unnamed {
    /// Write `parts` into a new unnamed file for directory `dir` (or a named one in `tmp_dir`).
    pub fn write(dir: &Path, tmp_dir: &Path, parts: &[&[u8]], fsync: bool) -> std::io::Result<Unnamed> {
        let (u, mut f) = Unnamed::create(dir, tmp_dir)?;
        for p in parts {
            f.write_all(p)?;
        }
        if fsync {
            f.sync_data()?;
        }
        Ok(u)
    }

    /// A new, empty unnamed file for directory `dir` (or a named one in `tmp_dir`), and a
    /// handle to fill it (then sync it, when durability asks for that, before linking).
    pub fn create(dir: &Path, tmp_dir: &Path) -> std::io::Result<(Unnamed, std::fs::File)> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_TMPFILE).mode(0o666).open(dir) {
                Ok(f) => {
                    let handle = f.try_clone()?;
                    return Ok((Unnamed::Fd(f), handle));
                }
                // Not supported here (EOPNOTSUPP, EISDIR or EINVAL by file system and kernel).
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::create_dir_all(tmp_dir)?;
        let tmp = tmp_dir.join(temp_name("part-"));
        let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok((Unnamed::Named(tmp), f))
    }

    /// Give the file the name `path` only if nothing has that name yet (atomically, as
    /// [`link_no_clobber`]); the file keeps no other name. Ok(false): the name is taken.
    pub fn link(&self, path: &Path, fsync: bool) -> std::io::Result<bool> {
        match self {
            Unnamed::Fd(f) => {
                use std::os::unix::io::AsRawFd;
                let from = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).map_err(std::io::Error::other)?;
                let to = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
                // SAFETY: two valid NUL-terminated paths; linkat does not keep them.
                let rc = unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) };
                linked(if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }, path, fsync)
            }
            Unnamed::Named(tmp) => link_no_clobber(tmp, path, fsync),
        }
    }
}

impl Drop for Unnamed {
    fn drop(&mut self) {
        if let Unnamed::Named(tmp) = self {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Whether the file at `path` holds exactly `data` (to recognise our own earlier write).
pub(crate) fn same_content(path: &Path, data: &[u8]) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == data.len() as u64) && std::fs::read(path).is_ok_and(|d| d == data)
}

/// Whether the file at `path` has `len` bytes with this SHA-256 (a large document, read a piece
/// at a time).
pub(crate) fn same_digest(path: &Path, len: u64, sha256: &[u8]) -> bool {
    use std::io::Read;
    if !std::fs::metadata(path).is_ok_and(|m| m.len() == len) {
        return false;
    }
    let (Ok(mut f), Ok(mut h)) = (std::fs::File::open(path), openssl::hash::Hasher::new(openssl::hash::MessageDigest::sha256())) else { return false };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if h.update(&buf[..n]).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    h.finish().is_ok_and(|d| &d[..] == sha256)
}

/// Remove temporary files older than `older_than` from `dir` (left by a process killed while
/// writing); younger ones may belong to another node writing right now.
pub fn sweep_temp(dir: &Path, older_than: std::time::Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= older_than);
        if old && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Remove the files under `dir` (recursively) last modified before `before`, and the folders
/// left empty; returns how many files. A missing `dir` is empty.
pub fn remove_older(dir: &Path, before: std::time::SystemTime) -> std::io::Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for e in rd.flatten() {
        let meta = e.metadata()?;
        if meta.is_dir() {
            let removed = remove_older(&e.path(), before)?;
            n += removed;
            // Only a folder this sweep emptied, and only when empty: a folder with nothing
            // old in it may have just been made for a blob being written right now.
            if removed > 0 {
                let _ = std::fs::remove_dir(e.path());
            }
        } else if meta.modified().is_ok_and(|m| m < before) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

/// The identity of the inbox at `inbox` (a random id kept in `<inbox>/.edinode-inbox-id`, made
/// on first use): equal for every node that shares the directory, different for nodes with
/// inboxes of their own, whatever the paths are called.
pub(crate) fn inbox_id(inbox: &Path) -> std::io::Result<String> {
    // Read once per process and inbox: it is asked for every delivered document.
    static KNOWN: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, id)) = KNOWN.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(p, _)| p == inbox) {
        return Ok(id.clone());
    }
    let id = read_or_make_inbox_id(inbox)?;
    KNOWN.lock().unwrap_or_else(|p| p.into_inner()).push((inbox.to_path_buf(), id.clone()));
    Ok(id)
}

fn read_or_make_inbox_id(inbox: &Path) -> std::io::Result<String> {
    let path = inbox.join(".edinode-inbox-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    std::fs::create_dir_all(inbox)?;
    let tmp = inbox_temp_dir(inbox);
    std::fs::create_dir_all(&tmp)?;
    let tmp = tmp.join(temp_name("inbox-id-"));
    write_new(&tmp, &[uuid::Uuid::new_v4().simple().to_string().as_bytes()], true)?;
    // Whoever links first names the inbox; everyone reads that.
    link_no_clobber(&tmp, &path, true)?;
    let _ = std::fs::remove_file(&tmp);
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

/// The folder for temporary inbox files: beside the station folders, never inside a partner's
/// folder that consumers watch.
pub fn inbox_temp_dir(inbox: &Path) -> PathBuf {
    inbox.join(".edinode-tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory under the system's temp dir, removed at the end.
    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn an_unnamed_file_gets_one_name_and_never_replaces_one() {
        let s = Scratch(std::env::temp_dir().join(temp_name("edinode-files-")));
        let (dir, tmp) = (s.0.join("partner"), s.0.join(".edinode-tmp"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("taken.edi"), b"someone else's").unwrap();
        let f = Unnamed::write(&dir, &tmp, &[b"ISA*", b"00~"], false).unwrap();
        assert!(!f.link(&dir.join("taken.edi"), false).unwrap(), "a taken name is refused");
        assert_eq!(std::fs::read(dir.join("taken.edi")).unwrap(), b"someone else's");
        assert!(f.link(&dir.join("po.edi"), true).unwrap());
        assert_eq!(std::fs::read(dir.join("po.edi")).unwrap(), b"ISA*00~");
        drop(f);
        let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["po.edi", "taken.edi"], "nothing else in the folder");
        let left = std::fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0);
        assert_eq!(left, 0, "no temporary file left");
    }
}
