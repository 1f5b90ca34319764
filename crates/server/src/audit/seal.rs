//! Seals: the head of the chain signed with the server's seal key (ed25519), so that a
//! rewrite of the whole chain from some trace on (which recomputes every hash) is still
//! caught against the seals made before it. The worker also prunes traces past their
//! retention (only up to a seal, so that verify accepts the shortened chain) and feeds
//! the file sink.
//!
//! The seal key is kept like the other secrets of the data directory: a random ed25519
//! seed in `DATA_DIR/trace-seal.key` (or `audit.seal_key_file`), mode 0600, encrypted with
//! the secrets key (`secrets.key_file`); its public half is in `DATA_DIR/trace-seal.pub`.

use crate::AppState;
use crate::auth::keyring::Keyring;
use crate::engine::Worker;
use crate::settings::Settings;
use anyhow::{Context, anyhow};
use async_trait::async_trait;
use deskfleet_core::audit::Seal;
use deskfleet_core::clock::Millis;
use deskfleet_core::store::{Store, StoreError};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::Duration;

pub const SEAL_KEY_FILE: &str = "trace-seal.key";
pub const SEAL_PUBLIC_FILE: &str = "trace-seal.pub";
/// The associated data the seed is sealed under.
const SEAL_KEY_LABEL: &str = "trace-seal-key";

fn key_path(settings: &Settings) -> PathBuf {
    settings
        .audit
        .seal_key_file
        .clone()
        .unwrap_or_else(|| settings.data_dir.join(SEAL_KEY_FILE))
}

/// Loads the seal key, creating it on first use.
pub fn load_or_create_seal_key(
    settings: &Settings,
    keyring: &Keyring,
) -> anyhow::Result<SigningKey> {
    let path = key_path(settings);
    let key = if path.exists() {
        let stored = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let seed = keyring.open(SEAL_KEY_LABEL, stored.trim()).map_err(|e| {
            anyhow!(
                "{} cannot be opened with the secrets key: {e}",
                path.display()
            )
        })?;
        let bytes: [u8; 32] = hex::decode(seed.expose_secret().trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("{} does not hold an ed25519 seed", path.display()))?;
        SigningKey::from_bytes(&bytes)
    } else {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let sealed = keyring.seal(
            SEAL_KEY_LABEL,
            &SecretString::from(hex::encode(key.to_bytes())),
        );
        crate::auth::files::write_private(&path, format!("{sealed}\n").as_bytes())?;
        key
    };
    std::fs::write(
        settings.data_dir.join(SEAL_PUBLIC_FILE),
        format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
    )
    .context("writing the public seal key")?;
    Ok(key)
}

/// Chains what is waiting, then seals the head of the chain if it moved since the last
/// seal; returns the new seal.
pub async fn seal_head(
    store: &dyn Store,
    key: &SigningKey,
    now: Millis,
) -> Result<Option<Seal>, StoreError> {
    chain_all(store).await?;
    let head = store.trace_head().await?;
    if head.seq == 0 {
        return Ok(None);
    }
    let seals = store.list_seals().await?;
    if seals.last().is_some_and(|s| s.seq >= head.seq) {
        return Ok(None);
    }
    let signature = key.sign(&Seal::message(head.seq, &head.hash, now));
    let seal = Seal {
        seq: head.seq,
        hash: head.hash,
        signed_at: now,
        signature: hex::encode(signature.to_bytes()),
        public_key: hex::encode(key.verifying_key().to_bytes()),
    };
    store.add_seal(&seal).await?;
    Ok(Some(seal))
}

/// Why a seal does not hold, if it does not: a bad signature, or a key not trusted.
pub fn check_seal(seal: &Seal, trusted: &[VerifyingKey]) -> Result<(), String> {
    let key: [u8; 32] = hex::decode(&seal.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("its public key is not 32 hex bytes")?;
    let key = VerifyingKey::from_bytes(&key).map_err(|e| format!("its public key: {e}"))?;
    if !trusted.contains(&key) {
        return Err("it was made with a key that is not trusted".into());
    }
    let sig: [u8; 64] = hex::decode(&seal.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("its signature is not 64 hex bytes")?;
    key.verify(
        &Seal::message(seal.seq, &seal.hash, seal.signed_at),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| "its signature does not match".to_owned())
}

/// Seals the head, prunes past retention, and feeds the file sink, every
/// `audit.seal_interval_secs`.
pub struct SealWorker {
    state: AppState,
    key: SigningKey,
    sink: Option<super::export::FileSink>,
}

impl SealWorker {
    pub fn new(state: AppState, key: SigningKey) -> Self {
        let sink = state.settings.audit.file_sink.clone().map(|path| {
            super::export::FileSink::new(
                path,
                state.settings.audit.file_sink_max_bytes,
                state.settings.audit.file_sink_keep,
            )
        });
        Self { state, key, sink }
    }

    pub async fn step(&self) -> Result<u64, StoreError> {
        let now = self.state.clock.now();
        let store = self.state.store.as_ref();
        // What was committed before this step is chained, so the seal and the sink cover it.
        chain_all(store).await?;
        // The sink first: a trace is exported before retention can prune it.
        if let Some(sink) = &self.sink
            && let Err(e) = sink.catch_up(store).await
        {
            tracing::warn!(error = %format!("{e:#}"), "the audit file sink could not be written");
        }
        let sealed = seal_head(store, &self.key, now).await?;
        let retention = i64::try_from(self.state.settings.audit.retention_days)
            .unwrap_or(i64::MAX / 86_400_000)
            * 86_400_000;
        let pruned = store.prune_traces(now.saturating_sub(retention)).await?;
        if pruned > 0 {
            tracing::info!(pruned, "traces past their retention pruned");
        }
        Ok(u64::from(sealed.is_some()) + pruned)
    }
}

#[async_trait]
impl Worker for SealWorker {
    fn name(&self) -> &'static str {
        "audit-seal"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.state.settings.audit.seal_interval_secs.max(1))
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        self.step().await
    }
}

/// How many traces one chaining transaction takes.
const CHAIN_BATCH: u32 = 1000;

/// Chains what the inbox holds now (PostgreSQL; nothing to do on SQLite). Returns how many.
pub async fn chain_all(store: &dyn Store) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let n = store.chain_traces(CHAIN_BATCH).await?;
        total += n;
        if n < u64::from(CHAIN_BATCH) {
            return Ok(total);
        }
    }
}

/// Chains the traces committed since its last step, every `audit.chain_interval_ms`
/// (docs/audit.md, "Cost"). Replicas take turns on the chain's head row.
pub struct ChainWorker {
    state: AppState,
}

impl ChainWorker {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[async_trait]
impl Worker for ChainWorker {
    fn name(&self) -> &'static str {
        "audit-chain"
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.state.settings.audit.chain_interval_ms.max(10))
    }

    async fn run_step(&self) -> Result<u64, StoreError> {
        let chained = chain_all(self.state.store.as_ref()).await?;
        metrics::counter!("deskfleet_audit_traces_chained_total").increment(chained);
        Ok(chained)
    }
}
