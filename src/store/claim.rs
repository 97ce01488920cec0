//! One holder at a time for a name in the folder store, even when someone deletes its file.
//!
//! A claim is a flock(2)'d file plus, on Linux, a listening socket in the abstract namespace whose
//! name derives from the file's path. flock alone is tied to an inode: delete a held lock file
//! (an operator "clearing a stale lock") and the next process creates a new inode, locks it, and
//! runs beside the holder. An abstract socket has no file to delete; the kernel frees its name
//! when the holder exits, like a flock. So a second process is refused while the first lives,
//! whatever was done to the folder, and the holder puts the file back ([`Claim::keep`]).
//!
//! Abstract names are visible to, and can be taken by, any local account. A name held by another
//! account (its SO_PEERCRED uid is not ours) is not a lifeboat run of this store: it is ignored
//! and the claim rests on the flock alone, as it did before sockets.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held claim: dropping it releases both the flock and the socket.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    file: File,
    #[cfg(target_os = "linux")]
    socket: Option<std::os::unix::net::UnixListener>,
}

/// Why a claim was not taken.
#[derive(Debug)]
pub enum Refused {
    /// A live process holds it. `file` is the lock file when there is one (it says who holds it);
    /// `pid` is known when the file was deleted and the socket answered.
    Held {
        file: Option<File>,
        pid: Option<u32>,
    },
    Io(std::io::Error),
}

/// What [`Claim::keep`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Kept {
    /// The file is where it was.
    Intact,
    /// The file had been deleted or replaced; a new one is in place and held.
    Restored,
    /// The file was replaced by one another process holds: the claim is lost.
    Lost,
}

impl Claim {
    /// Takes the claim on `path`, creating the file if need be.
    pub fn take(path: &Path) -> Result<Claim, Refused> {
        #[cfg(target_os = "linux")]
        let socket = match abstract_socket::bind(path) {
            abstract_socket::Bound::Mine(l) => Some(l),
            abstract_socket::Bound::Held(pid) => {
                return Err(Refused::Held {
                    file: File::open(path).ok(),
                    pid,
                });
            }
            abstract_socket::Bound::Unavailable => None,
        };
        // Retry when the file was replaced between opening and locking it.
        for _ in 0..8 {
            let file = open(path).map_err(Refused::Io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Refused::Held {
                        file: Some(file),
                        pid: None,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Refused::Io(e)),
            }
            if same_file(&file, path) {
                return Ok(Claim {
                    path: path.to_path_buf(),
                    file,
                    #[cfg(target_os = "linux")]
                    socket,
                });
            }
        }
        Err(Refused::Io(std::io::Error::other(format!(
            "{} keeps being replaced while it is locked",
            path.display()
        ))))
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Puts the file back if it was deleted or replaced, and holds it again. Called while the
    /// claim is held (every half second of a run), so the file says who holds it and a process
    /// the socket cannot see (another network namespace sharing this folder) is kept out too.
    pub fn keep(&mut self) -> Kept {
        #[cfg(target_os = "linux")]
        if let Some(socket) = &self.socket {
            abstract_socket::drain(socket);
        }
        if same_file(&self.file, &self.path) {
            return Kept::Intact;
        }
        if let Some(parent) = self.path.parent() {
            let _ = super::folder::private_dir(parent);
        }
        let Ok(file) = open(&self.path) else {
            return Kept::Lost;
        };
        match file.try_lock() {
            Ok(()) if same_file(&file, &self.path) => {
                self.file = file;
                Kept::Restored
            }
            _ => Kept::Lost,
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Whether `path` names the open `file` (not deleted, not replaced by another file).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino() && a.nlink() > 0,
        _ => false,
    }
}

#[cfg(target_os = "linux")]
mod abstract_socket {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::path::Path;

    pub enum Bound {
        Mine(UnixListener),
        /// Held by a process of this account (its pid, when it answered).
        Held(Option<u32>),
        /// No socket to be had (another account squats the name, or sockets are not allowed
        /// here): the flock alone decides.
        Unavailable,
    }

    /// The socket's name: a digest of the lock file's absolute path, with symbolic links
    /// resolved as far as it exists (the file, even its folder, may have been deleted), so every
    /// process naming one file names one socket.
    fn name(path: &Path) -> Vec<u8> {
        use sha2::Digest;
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // From the folder up: the file itself is never resolved, whether or not it exists.
        let full = path
            .ancestors()
            .skip(1)
            .find_map(|a| {
                let real = std::fs::canonicalize(a).ok()?;
                Some(real.join(path.strip_prefix(a).ok()?))
            })
            .unwrap_or(path.clone());
        let digest = sha2::Sha256::digest(full.as_os_str().as_encoded_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("lifeboat-claim-{hex}").into_bytes()
    }

    pub fn bind(path: &Path) -> Bound {
        let name = name(path);
        let Ok(addr) = SocketAddr::from_abstract_name(&name) else {
            return Bound::Unavailable;
        };
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => {
                // The holder accepts (and drops) connections as it checks its claim, so askers
                // never fill the backlog; that must not block it.
                let _ = listener.set_nonblocking(true);
                Bound::Mine(listener)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match peer(&name) {
                Peer::Ours(pid) => Bound::Held(Some(pid)),
                Peer::Busy => Bound::Held(None),
                Peer::Foreign => Bound::Unavailable,
            },
            Err(_) => Bound::Unavailable,
        }
    }

    /// Accepts and drops whatever connected to ask who holds the claim.
    pub fn drain(listener: &UnixListener) {
        while listener.accept().is_ok() {}
    }

    enum Peer {
        Ours(u32),
        /// It did not answer at once (a full backlog): assume a holder of ours.
        Busy,
        Foreign,
    }

    /// Who listens on `name`. A nonblocking connect, so a holder that is slow to drain its
    /// backlog cannot hang the asker.
    #[allow(unsafe_code)]
    fn peer(name: &[u8]) -> Peer {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain socket calls on a descriptor this function owns (closed by OwnedFd);
        // sockaddr_un is filled within its bounds (names are 79 bytes, sun_path holds 108).
        unsafe {
            let fd = libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            if fd < 0 {
                return Peer::Busy;
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            if name.len() + 1 > addr.sun_path.len() {
                return Peer::Busy;
            }
            for (i, b) in name.iter().enumerate() {
                addr.sun_path[i + 1] = *b as libc::c_char;
            }
            let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
            if libc::connect(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len as libc::socklen_t,
            ) != 0
            {
                return match std::io::Error::last_os_error().raw_os_error() {
                    // Bound but not listening: nobody of ours does that.
                    Some(libc::ECONNREFUSED) => Peer::Foreign,
                    _ => Peer::Busy,
                };
            }
            let mut cred: libc::ucred = std::mem::zeroed();
            let mut size = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            if libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut cred).cast::<libc::c_void>(),
                &mut size,
            ) != 0
            {
                return Peer::Busy;
            }
            if cred.uid == libc::geteuid() {
                Peer::Ours(cred.pid as u32)
            } else {
                Peer::Foreign
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(r: Result<Claim, Refused>) -> Option<u32> {
        match r {
            Err(Refused::Held { pid, .. }) => pid,
            Err(Refused::Io(e)) => panic!("{e}"),
            Ok(_) => panic!("taken twice"),
        }
    }

    #[test]
    fn a_claim_holds_however_its_file_is_removed_and_the_holder_puts_it_back() {
        type Remove = fn(&Path);
        let ways: [(&str, Remove); 4] = [
            ("deleted", |p| std::fs::remove_file(p).unwrap()),
            ("folder deleted", |p| {
                std::fs::remove_dir_all(p.parent().unwrap()).unwrap()
            }),
            ("renamed away", |p| {
                std::fs::rename(p, p.with_extension("old")).unwrap()
            }),
            ("replaced", |p| {
                let new = p.with_extension("new");
                std::fs::write(&new, "{}").unwrap();
                std::fs::rename(&new, p).unwrap();
            }),
        ];
        for (how, remove) in ways {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("locks").join("db.lock");
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut claim = Claim::take(&path).unwrap();
            assert_eq!(
                held(Claim::take(&path)),
                Some(std::process::id()),
                "{how}: held"
            );
            remove(&path);
            assert_eq!(
                held(Claim::take(&path)),
                Some(std::process::id()),
                "{how}: the socket still answers"
            );
            assert_eq!(claim.keep(), Kept::Restored, "{how}");
            assert_eq!(claim.keep(), Kept::Intact, "{how}");
            assert!(matches!(Claim::take(&path), Err(Refused::Held { .. })));
            drop(claim);
            let again = Claim::take(&path);
            assert!(again.is_ok(), "{how}: free once dropped");
        }
    }

    #[test]
    fn a_claim_whose_new_file_another_process_locked_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let mut claim = Claim::take(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // What a process in another network namespace (which sees no socket) would do.
        let other = open(&path).unwrap();
        other.try_lock().unwrap();
        assert_eq!(claim.keep(), Kept::Lost);
    }

    #[test]
    fn many_askers_never_block_the_holder_or_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let mut claim = Claim::take(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // More than the listen backlog, without the holder draining.
        for _ in 0..300 {
            assert!(matches!(Claim::take(&path), Err(Refused::Held { .. })));
        }
        assert_eq!(claim.keep(), Kept::Restored);
    }
}
