//! Sub-job reports of every session of this replica, written together: while one
//! transaction commits, the reports that arrive meanwhile queue up, and the next
//! transaction takes them all (at most [`MAX_BATCH`]). One desktop installing sends
//! about five reports; a few thousand installing at once would otherwise each take a
//! database connection and a commit per report. Nothing waits for a timer: a report
//! that finds the writer idle is written at once.
//!
//! Each caller still waits for its own report to be committed, and gets the store's
//! error if its transaction failed, exactly as when it wrote alone.

use deskfleet_core::clock::Clock;
use deskfleet_core::fleet::SubJobReport;
use deskfleet_core::store::{Store, StoreError};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// Most reports written in one transaction.
pub const MAX_BATCH: usize = 256;
/// Reports that may wait for the writer; a session waits for room beyond that.
const QUEUE: usize = 4 * MAX_BATCH;

struct Pending {
    report: SubJobReport,
    written: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue to this replica's report writer, started at the first report.
#[derive(Default)]
pub struct ReportQueue(OnceLock<mpsc::Sender<Pending>>);

impl ReportQueue {
    /// Writes `report` with the others waiting, and returns once it is committed.
    pub async fn write(
        &self,
        store: &Arc<dyn Store>,
        clock: &Arc<dyn Clock>,
        report: SubJobReport,
    ) -> Result<(), StoreError> {
        let queue = self.0.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(writer(store.clone(), clock.clone(), rx));
            tx
        });
        let (written, done) = oneshot::channel();
        let gone = || StoreError::Unavailable("the report writer has stopped".into());
        queue
            .send(Pending { report, written })
            .await
            .map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }
}

/// Takes whatever has queued (at least one report), writes it in one transaction, and
/// tells each caller; until every sender is gone.
async fn writer(store: Arc<dyn Store>, clock: Arc<dyn Clock>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (reports, callers): (Vec<SubJobReport>, Vec<_>) =
            batch.drain(..).map(|p| (p.report, p.written)).unzip();
        metrics::counter!("deskfleet_fleet_report_batches_total").increment(1);
        metrics::counter!("deskfleet_fleet_reports_total").increment(reports.len() as u64);
        let result = store.apply_reports(&reports, clock.now()).await;
        for written in callers {
            let outcome = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(e.retell()),
            };
            // A caller that went away (its connection closed) needs no answer.
            let _ = written.send(outcome);
        }
    }
}
