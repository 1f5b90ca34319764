//! Export of the chain as JSON lines, for a SIEM: one trace a line, with its chain fields
//! (`seq`, `prev_hash`, `hash`) beside the trace, so that an export can be verified on its
//! own: `hash = SHA-256(prev_hash "\n" seq "\n" canonical_json(trace))`.
//!
//! The file sink appends every new trace to a file, rotated by size (`NAME.1` is the
//! newest rotated file), and remembers how far it got in `NAME.pos`.

use anyhow::Context;
use deskfleet_core::clock::Millis;
use deskfleet_core::store::{Store, StoredTrace};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

/// One export line of a stored trace.
pub fn line(t: &StoredTrace) -> String {
    let trace: Value = serde_json::from_str(&t.content).unwrap_or(Value::Null);
    serde_json::json!({
        "seq": t.seq,
        "prev_hash": t.prev_hash,
        "hash": t.hash,
        "trace": trace,
    })
    .to_string()
}

/// Whether an export line's hash holds for its content (the link to the line before is
/// the reader's to check: `prev_hash` = that line's `hash`).
pub fn line_holds(line: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    let (Some(seq), Some(prev), Some(hash)) = (
        v["seq"].as_i64(),
        v["prev_hash"].as_str(),
        v["hash"].as_str(),
    ) else {
        return false;
    };
    let content = deskfleet_core::audit::canonical_json(&v["trace"]);
    deskfleet_core::audit::chain_hash(prev, seq, &content) == hash
}

/// Writes the traces with `from < time < to` (all if unbounded) to `out`, in chain order.
/// Returns how many.
pub async fn export(
    store: &dyn Store,
    from: Option<Millis>,
    to: Option<Millis>,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    super::seal::chain_all(store).await?;
    let mut next = store.trace_head().await?.pruned_seq + 1;
    let mut n = 0;
    loop {
        let page = store.trace_chain(next, 1000).await?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        for t in &page {
            let time = t
                .columns
                .iter()
                .find(|(c, _)| *c == "time")
                .and_then(|(_, v)| v.parse::<i64>().ok())
                .unwrap_or(0);
            if from.is_some_and(|f| time <= f) || to.is_some_and(|x| time >= x) {
                continue;
            }
            writeln!(out, "{}", line(t))?;
            n += 1;
        }
    }
    Ok(n)
}

/// A JSON-lines file that follows the chain.
pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl FileSink {
    pub fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self {
            path,
            max_bytes,
            keep,
        }
    }

    fn pos_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".pos");
        PathBuf::from(p)
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Appends every trace not written yet, rotating the file when it is full.
    pub async fn catch_up(&self, store: &dyn Store) -> anyhow::Result<u64> {
        let done: i64 = std::fs::read_to_string(self.pos_path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut next = (done + 1).max(store.trace_head().await?.pruned_seq + 1);
        let mut written = 0;
        loop {
            let page = store.trace_chain(next, 1000).await?;
            let Some(last) = page.last() else { break };
            next = last.seq + 1;
            self.rotate_if_full()?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            let mut text = String::new();
            for t in &page {
                text.push_str(&line(t));
                text.push('\n');
            }
            file.write_all(text.as_bytes())?;
            file.sync_data()?;
            crate::auth::files::write_private(&self.pos_path(), last.seq.to_string().as_bytes())?;
            written += page.len() as u64;
        }
        Ok(written)
    }

    fn rotate_if_full(&self) -> anyhow::Result<()> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size < self.max_bytes {
            return Ok(());
        }
        for n in (1..self.keep.max(1)).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        Ok(())
    }
}
