//! Snapshots as files: written to a temporary file, synced, renamed over the
//! current one, and the directory synced, so a crash leaves either the old
//! snapshot or the new one, never half of one. Kept apart from the log so a
//! large snapshot never delays the flush that acknowledges log appends.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::io_error;
use crate::types::SnapshotMeta;

const FILE: &str = "snapshot.bin";

#[derive(Debug, Clone)]
pub struct FileSnapshotVault {
    dir: PathBuf,
}

impl FileSnapshotVault {
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    pub async fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let bytes = postcard::to_stdvec(&(meta, data)).map_err(io_error)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let temporary = dir.join(format!("{FILE}.new"));
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, dir.join(FILE))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(io_error)?
    }

    pub async fn load(&self) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let path = self.dir.join(FILE);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| io_error(format!("{}: {e}", path.display())))
    }
}
