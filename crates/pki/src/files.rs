//! Certificate files on disk: writing them (keys 0600, never over an
//! existing file unless asked), and reading a CA bundle, certificate and
//! key as one [`Credentials`], again whenever the files change.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::PkiError;
use crate::tls::Credentials;

/// The largest certificate or key file read (a chain of a few certificates
/// fits in a few kilobytes).
pub const MAX_FILE_BYTES: u64 = 256 * 1024;

/// Write `contents` to `path` through a temporary file and a rename, with
/// mode 0600 if `private`. An existing file is kept unless `overwrite`.
pub fn write(path: &Path, contents: &str, private: bool, overwrite: bool) -> Result<(), PkiError> {
    if !overwrite && path.exists() {
        return Err(PkiError::Exists(path.display().to_string()));
    }
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    // A temporary file of its own, made afresh: a file left by an earlier
    // crash would keep its old mode, and a key must never take a
    // certificate's 0644.
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&temporary).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    Ok(())
}

/// Read a file of at most [`MAX_FILE_BYTES`].
pub fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    let io = |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    };
    let length = std::fs::metadata(path).map_err(io)?.len();
    if length > MAX_FILE_BYTES {
        return Err(PkiError::Invalid(format!(
            "{}: {length} bytes, more than the {MAX_FILE_BYTES} a certificate or key may have",
            path.display()
        )));
    }
    std::fs::read(path).map_err(io)
}

/// Where a process's CA bundle, certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    /// With `key`: this process's identity. A client may have none.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Read and check them all at `now`.
    pub fn load(&self, now: SystemTime) -> Result<Credentials, PkiError> {
        fn with_path(path: &Path) -> impl Fn(PkiError) -> PkiError + '_ {
            move |error: PkiError| match error {
                PkiError::Invalid(message) => {
                    PkiError::Invalid(format!("{}: {message}", path.display()))
                }
                PkiError::Expired { what, at } => PkiError::Expired {
                    what: format!("{} ({what})", path.display()),
                    at,
                },
                other => other,
            }
        }
        let ca = read(&self.ca)?;
        match (&self.cert, &self.key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read(cert_path)?;
                let key = read(key_path)?;
                Credentials::from_pem(&ca, Some((&cert, &key)), now).map_err(with_path(cert_path))
            }
            (None, None) => Credentials::from_pem(&ca, None, now).map_err(with_path(&self.ca)),
            _ => Err(PkiError::Invalid(
                "give both a certificate and its key, or neither".into(),
            )),
        }
    }

    /// A fingerprint of the files' metadata: changes when any is rewritten.
    fn stamp(&self) -> Stamp {
        [Some(&self.ca), self.cert.as_ref(), self.key.as_ref()]
            .into_iter()
            .flatten()
            .map(|path| {
                std::fs::metadata(path)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }
}

/// Each file's modification time and length.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// Credentials that are read again when their files change. Readers take
/// the current value; a failed reload keeps the previous one.
#[derive(Debug)]
pub struct Reloading {
    files: TlsFiles,
    state: RwLock<(Arc<Credentials>, Stamp)>,
}

impl Reloading {
    pub fn open(files: TlsFiles, now: SystemTime) -> Result<Self, PkiError> {
        let stamp = files.stamp();
        let credentials = files.load(now)?;
        Ok(Self {
            files,
            state: RwLock::new((Arc::new(credentials), stamp)),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub fn current(&self) -> Arc<Credentials> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Read the files again if they changed (or if `force`). `Ok(true)`
    /// if new credentials are in use.
    pub fn reload(&self, now: SystemTime, force: bool) -> Result<bool, PkiError> {
        let stamp = self.files.stamp();
        if !force && self.state.read().unwrap_or_else(|e| e.into_inner()).1 == stamp {
            return Ok(false);
        }
        let loaded = self.files.load(now);
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Whatever the outcome, do not retry the same files every tick.
        state.1 = stamp;
        state.0 = Arc::new(loaded?);
        Ok(true)
    }
}
