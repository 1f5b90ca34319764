//! Signals between replicas on PostgreSQL: a write that takes credentials back or queues
//! work ends with `NOTIFY` on the signal's channel (delivered when it commits), and every
//! server listens on one connection of its own. Each signal is a counter in a `watch`
//! channel that the listener moves; subscribers wait for it to move.
//!
//! Credential changes are rare and send their `NOTIFY` in their own transaction. New work
//! is frequent, and `NOTIFY` serialises the commits of the transactions that send it, so
//! it is announced after its commit instead ([`Signals::raise`]), by one task per server
//! that sends at most one `pg_notify` every [`COALESCE`] however many jobs were created.
//!
//! Nothing is lost for good when the listening connection drops: the listener connects
//! again and raises every signal once (what was sent meanwhile is not known), and the
//! servers keep polling at their own intervals beside the signals.

use async_trait::async_trait;
use deskfleet_core::store::{Signal, Subscription};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The channel of a signal.
pub(crate) const fn channel(signal: Signal) -> &'static str {
    match signal {
        Signal::Credentials => "deskfleet_credentials",
        Signal::Work => "deskfleet_work",
    }
}

const SIGNALS: [Signal; 2] = [Signal::Credentials, Signal::Work];

/// How long the listener waits before connecting again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// At most one announcement of a signal this often, per server.
const COALESCE: Duration = Duration::from_millis(10);

/// The listener and announcer of one store, started at first use, stopped with the store.
pub(crate) struct Signals {
    senders: [watch::Sender<u64>; 2],
    /// Announcements asked for and not yet sent, per signal.
    pending: [Arc<Notify>; 2],
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Signals {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn index(signal: Signal) -> usize {
    match signal {
        Signal::Credentials => 0,
        Signal::Work => 1,
    }
}

impl Signals {
    /// Starts listening on a connection of `pool`'s database; `None` outside a runtime.
    pub(crate) fn start(pool: &PgPool) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let senders = [watch::channel(0).0, watch::channel(0).0];
        let pending = [Arc::new(Notify::new()), Arc::new(Notify::new())];
        let mut tasks = vec![
            runtime
                .spawn(listen(pool.clone(), senders.clone()))
                .abort_handle(),
        ];
        for s in SIGNALS {
            let task = announce(pool.clone(), s, pending[index(s)].clone());
            tasks.push(runtime.spawn(task).abort_handle());
        }
        Some(Self {
            senders,
            pending,
            tasks,
        })
    }

    /// Announces `signal` to every replica (this one included) soon: coalesced, after the
    /// caller's change committed.
    pub(crate) fn raise(&self, signal: Signal) {
        self.pending[index(signal)].notify_one();
    }

    pub(crate) fn subscribe(&self, signal: Signal) -> Box<dyn Subscription> {
        let mut rx = self.senders[index(signal)].subscribe();
        rx.mark_unchanged();
        Box::new(Watch(rx))
    }
}

fn raise(senders: &[watch::Sender<u64>; 2], signal: Signal) {
    senders[index(signal)].send_modify(|n| *n = n.wrapping_add(1));
}

async fn announce(pool: PgPool, signal: Signal, pending: Arc<Notify>) {
    loop {
        pending.notified().await;
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel(signal))
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "a signal could not be sent; the replicas poll");
        }
        tokio::time::sleep(COALESCE).await;
    }
}

async fn listen(pool: PgPool, senders: [watch::Sender<u64>; 2]) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                match listener.listen_all(SIGNALS.map(channel)).await {
                    Ok(()) => {
                        // Whatever was raised while no one listened is not known.
                        for s in SIGNALS {
                            raise(&senders, s);
                        }
                        follow(&mut listener, &senders).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling only"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the signal listener cannot connect; polling only")
            }
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Raises each signal notified, until the connection is lost.
async fn follow(listener: &mut PgListener, senders: &[watch::Sender<u64>; 2]) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if let Some(s) = SIGNALS.into_iter().find(|s| channel(*s) == n.channel()) {
                    raise(senders, s);
                }
            }
            Ok(None) => {
                tracing::warn!("the signal listener lost its connection; connecting again");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the signal listener failed; connecting again");
                return;
            }
        }
    }
}

struct Watch(watch::Receiver<u64>);

#[async_trait]
impl Subscription for Watch {
    async fn raised(&mut self) {
        if self.0.changed().await.is_err() {
            // The store is gone: nothing will be raised again.
            std::future::pending::<()>().await;
        }
    }
}
