//! Opening a broker's storage and starting Raft over it: the cluster
//! secret, the state machine and its snapshots, and the log, on disk or in
//! memory. Raft starts once, over whichever log store was opened.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lapse_ledger::LedgerState;
use lapse_storage::{
    FileSnapshotVault, Raft, SnapshotVault, StateMachineStore, TypeConfig, open_sled,
    start_raft_scope,
};
use openraft::storage::RaftLogStorage;

use super::{StartError, Storage};
use crate::config::BrokerConfig;
use crate::consensus::{LeaderRestart, raft_config};
use crate::core::{Core, SharedCore};
use crate::env::Env;
use crate::link::{ClusterSecret, PeerChannels, PeerNetworkFactory};

const SECRET_FILE: &str = "cluster-secret";

/// What storage holds before Raft starts.
pub(super) struct Opened {
    pub secret: ClusterSecret,
    pub state: StateMachineStore,
    pub tls: Option<Arc<lapse_pki::Tls>>,
}

pub(super) fn storage_error(data_dir: &Path) -> impl Fn(std::io::Error) -> StartError + '_ {
    move |source| StartError::Storage {
        path: data_dir.display().to_string(),
        source,
    }
}

/// Create the data directory, read the cluster secret, and open the state
/// machine over its snapshots.
pub(super) fn open(
    config: &BrokerConfig,
    env: &Env,
    storage: &Storage,
    tls: Option<Arc<lapse_pki::Tls>>,
) -> Result<Opened, StartError> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(storage_error(data_dir))?;
    // With TLS brokers prove themselves by certificate; the secret is for
    // plaintext brokers only.
    let secret = ClusterSecret::new(match (&tls, &config.cluster.secret) {
        (Some(_), _) => None,
        (None, Some(secret)) => Some(secret.clone()),
        (None, None) => read_secret(data_dir).map_err(storage_error(data_dir))?,
    });
    if tls.is_none() && secret.get().is_none() && config.cluster.join.is_none() {
        return Err(StartError::NoSecret);
    }
    let vault = match storage {
        Storage::Disk => SnapshotVault::File(
            FileSnapshotVault::open(&data_dir.join("snapshots"))
                .map_err(storage_error(data_dir))?,
        ),
        Storage::Memory(memory) => SnapshotVault::Memory(memory.vault.clone()),
    };
    let initial = LedgerState::new(config.ledger_params());
    let mut state = StateMachineStore::new(initial, vault)
        .with_checkpoints(config.raft.checkpoint_every_entries);
    if let Some(faults) = env.faults.clone() {
        state = state.with_apply_delay(Arc::new(move || faults.apply_delay()));
    }
    Ok(Opened { secret, state, tls })
}

/// Start Raft over the opened storage and wrap it in the broker's [`Core`].
pub(super) async fn start_core(
    config: BrokerConfig,
    env: Env,
    storage: &Storage,
    opened: Opened,
) -> Result<SharedCore, StartError> {
    let dialer: Arc<dyn crate::env::Dialer> = match &opened.tls {
        Some(tls) => Arc::new(crate::env::TlsDialer(tls.clone())),
        None => env.dialer.clone(),
    };
    let channels = PeerChannels::new(
        opened.secret.clone(),
        Duration::from_millis(config.raft.rpc_timeout_ms),
        config.limits.max_peer_message_bytes,
        dialer,
    );
    let view = opened.state.view();
    let raft = match storage {
        Storage::Disk => {
            let data_dir = &config.data_dir;
            let log = open_sled(&data_dir.join("raft")).map_err(storage_error(data_dir))?;
            start_raft(&config, &env, &channels, log, opened.state).await?
        }
        Storage::Memory(memory) => {
            start_raft(&config, &env, &channels, memory.log.clone(), opened.state).await?
        }
    };
    Ok(Arc::new(Core::new(
        config,
        raft,
        view,
        env,
        channels,
        opened.secret,
        opened.tls,
    )))
}

/// Start openraft over `log` and `state`, with its randomness seeded from
/// the broker's entropy so a simulated run replays.
async fn start_raft<L: RaftLogStorage<TypeConfig>>(
    config: &BrokerConfig,
    env: &Env,
    channels: &PeerChannels,
    log: L,
    state: StateMachineStore,
) -> Result<Raft, StartError> {
    let leader_restart = match &env.faults {
        Some(faults) if faults.restore_leadership_without_vote() => {
            LeaderRestart::RestoreWithoutVote
        }
        _ => LeaderRestart::Elect,
    };
    let raft_config = raft_config(&config.raft, leader_restart)
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
    let network = PeerNetworkFactory {
        channels: channels.clone(),
    };
    let seed = u64::from_le_bytes(env.random_bytes::<8>());
    start_raft_scope(
        seed,
        openraft::Raft::new(config.node_id, Arc::new(raft_config), network, log, state),
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))
}

pub(super) fn read_secret(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(data_dir.join(SECRET_FILE)) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Keep the cluster secret in the data directory: written to a temporary
/// file created 0600 afresh (a leftover or planted file of that name is
/// removed first, never written through), then renamed over the secret.
pub(super) fn write_secret(data_dir: &Path, secret: &str) -> std::io::Result<()> {
    lapse_pki::files::write(&data_dir.join(SECRET_FILE), secret, true, true).map_err(|e| match e {
        lapse_pki::PkiError::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_planted_temporary_file_cannot_catch_the_cluster_secret() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        // Another user's world-readable file, and a link to it where the
        // broker writes its temporary copy.
        let stolen = dir.path().join("stolen");
        std::fs::write(&stolen, "").unwrap();
        std::fs::set_permissions(&stolen, std::fs::Permissions::from_mode(0o644)).unwrap();
        for name in ["cluster-secret.tmp", "cluster-secret.new"] {
            std::os::unix::fs::symlink(&stolen, data_dir.join(name)).unwrap();
        }
        write_secret(&data_dir, "the-cluster-secret").unwrap();
        assert_eq!(std::fs::read_to_string(&stolen).unwrap(), "");
        let secret = data_dir.join(SECRET_FILE);
        assert_eq!(
            read_secret(&data_dir).unwrap().as_deref(),
            Some("the-cluster-secret")
        );
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        // Replacing it keeps it private.
        write_secret(&data_dir, "another-secret").unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
