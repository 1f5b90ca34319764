//! "A change and its trace are one": how a trace rides along with the store write it
//! describes.
//!
//! A caller that makes a change opens an [`AuditScope`] around it with the trace drafted
//! so far (who, from where, what was asked). The first auditable store write made inside
//! the scope takes the draft, completes it from the write's own answer (a job's id) and
//! appends it to the chain in the same transaction (on SQLite, the same savepoint): the
//! change commits with its trace or not at all, and a trace that cannot be written fails
//! the change. If no write took the draft, or the write failed and was rolled back, the
//! scope still holds it: the caller records it on its own as a refusal or a failure
//! ([`deskfleet_core::store::Store::append_trace`]).
//!
//! Bookkeeping writes (counting failed logins, the readiness probe) never take a draft.

use deskfleet_core::audit::Trace;
use deskfleet_core::ids::JobId;
use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Completes a draft from a write's answer: the response body (a JSON string) and,
/// when the answer names the resource (a new job), its id and name.
pub type Describe = dyn Fn(&dyn Any) -> Option<Described> + Send + Sync;

/// What a write's answer adds to its trace.
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub response: String,
    pub resource_id: Option<String>,
}

/// Where a draft stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No write took it (yet): the caller must record it on its own.
    Open,
    /// A write took it and has not answered.
    InFlight,
    /// Committed with the write that took it.
    Committed,
}

struct State {
    /// Shared with the write that takes it, which copies it once, to complete it.
    draft: Arc<Trace>,
    /// Whether a write may take the draft (false: the request's refusal only is recorded).
    consumable: bool,
    stage: Stage,
    describe: Option<Arc<Describe>>,
    committed: Option<Trace>,
}

/// The draft trace of one request, shared by the caller and the store.
#[derive(Clone)]
pub struct AuditScope(Arc<Mutex<State>>);

tokio::task_local! {
    static SCOPE: AuditScope;
}

impl AuditScope {
    pub fn new(draft: Trace) -> Self {
        Self::with(draft, true)
    }

    /// A scope whose draft no write takes: it only collects who was refused, on a route
    /// whose requests change nothing.
    pub fn refusal_only(draft: Trace) -> Self {
        Self::with(draft, false)
    }

    fn with(draft: Trace, consumable: bool) -> Self {
        Self(Arc::new(Mutex::new(State {
            draft: Arc::new(draft),
            consumable,
            stage: Stage::Open,
            describe: None,
            committed: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with this scope current: its first auditable write carries the trace.
    pub async fn run<F: Future>(&self, f: F) -> F::Output {
        SCOPE.scope(self.clone(), f).await
    }

    /// Changes the draft (e.g. once the caller is known), unless a write already took it.
    pub fn update(&self, f: impl FnOnce(&mut Trace)) {
        let mut s = self.lock();
        if s.stage == Stage::Open {
            f(Arc::make_mut(&mut s.draft));
        }
    }

    /// How a write's answer completes the trace.
    pub fn set_describe(&self, describe: Arc<Describe>) {
        self.lock().describe = Some(describe);
    }

    pub fn stage(&self) -> Stage {
        self.lock().stage
    }

    /// The draft as it stands (for recording it on its own).
    pub fn draft(&self) -> Trace {
        Trace::clone(&self.lock().draft)
    }

    /// The trace committed with the change, if one was.
    pub fn committed(&self) -> Option<Trace> {
        self.lock().committed.clone()
    }
}

/// Applies `f` to the current scope's draft, if there is a scope.
pub fn update_current(f: impl FnOnce(&mut Trace)) {
    let _ = SCOPE.try_with(|s| s.update(f));
}

/// The current scope, if any.
pub fn current() -> Option<AuditScope> {
    SCOPE.try_with(Clone::clone).ok()
}

/// A draft taken by a write. Cloning it (a write run again, a call handed to the writer)
/// shares the draft rather than copying it.
#[derive(Clone)]
pub(crate) struct Taken {
    scope: AuditScope,
    draft: Arc<Trace>,
    describe: Option<Arc<Describe>>,
    /// The trace appended by the (last) run of the write.
    appended: Arc<Mutex<Option<Trace>>>,
    /// The trace completed by the caller before the write ([`Taken::complete_ahead`]),
    /// for the first run of the write to take.
    ahead: Arc<Mutex<Option<Completed>>>,
}

/// A trace completed for the job it will be committed with, and its canonical content.
pub(crate) struct Completed {
    job_id: String,
    pub(crate) trace: Trace,
    pub(crate) content: String,
}

impl Completed {
    fn of(job_id: &str, trace: Trace) -> Self {
        Self {
            job_id: job_id.to_owned(),
            content: deskfleet_core::audit::content(&trace),
            trace,
        }
    }
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taken")
            .field("trace_id", &self.draft.trace_id)
            .finish_non_exhaustive()
    }
}

/// Takes the current scope's draft for a write, if it is open.
pub(crate) fn take() -> Option<Taken> {
    let scope = current()?;
    let mut s = scope.lock();
    if s.stage != Stage::Open || !s.consumable {
        return None;
    }
    s.stage = Stage::InFlight;
    let taken = Taken {
        scope: scope.clone(),
        draft: Arc::clone(&s.draft),
        describe: s.describe.clone(),
        appended: Arc::default(),
        ahead: Arc::default(),
    };
    drop(s);
    Some(taken)
}

impl Taken {
    /// Appends the trace ([`Taken::finish`]) inside the write's
    /// transaction.
    pub(crate) async fn append<C: crate::conn::Conn>(
        &self,
        c: &mut C,
        trace: Trace,
    ) -> deskfleet_core::store::StoreResult<()> {
        crate::audit_ops::append_trace(c, &trace).await?;
        self.appended(trace);
        Ok(())
    }

    /// Notes the trace appended for this write (appended by the caller, with others).
    pub(crate) fn appended(&self, trace: Trace) {
        *self.appended.lock().unwrap_or_else(|p| p.into_inner()) = Some(trace);
    }

    /// The trace to append, completed from the write's answer.
    pub(crate) fn finish(&self, answer: &dyn Any) -> Trace {
        self.complete(self.describe.as_ref().and_then(|f| f(answer)))
    }

    /// The draft completed with what describes the write's answer, stamped now.
    fn complete(&self, described: Option<Described>) -> Trace {
        let mut t = Trace::clone(&self.draft);
        if let Some(d) = described {
            t.response = d.response;
            if let Some(id) = d.resource_id {
                t.resource_id = id;
            }
        }
        t.record_time =
            deskfleet_core::clock::Clock::now(&deskfleet_core::clock::SystemClock).max(t.time);
        t
    }

    /// Completes the trace now, on the caller's task, for a write that will create the
    /// job `job_id` if it succeeds, when the describer can tell the answer from the job's
    /// id alone (it is asked with the [`JobId`]). The write then only chains and inserts
    /// it: on SQLite's single writer that is the part every write waits for. Otherwise
    /// the write completes it from its answer, as [`Taken::finish`].
    pub(crate) fn complete_ahead(&self, job_id: &JobId) {
        let Some(d) = self.describe.as_ref().and_then(|f| f(job_id)) else {
            return;
        };
        let completed = Completed::of(job_id.as_str(), self.complete(Some(d)));
        *self.ahead.lock().unwrap_or_else(|p| p.into_inner()) = Some(completed);
    }

    /// The trace to append with the job `job_id` and its content: the one completed ahead
    /// for that job, if it is still there (a write run again completes it anew), else
    /// completed now from the write's answer.
    pub(crate) fn completed_for(&self, job_id: &str, answer: &dyn Any) -> Completed {
        let ahead = self.ahead.lock().unwrap_or_else(|p| p.into_inner()).take();
        match ahead {
            Some(c) if c.job_id == job_id => c,
            _ => Completed::of(job_id, self.finish(answer)),
        }
    }

    /// The write answered: committed (`ok`) with the trace it appended, or rolled back
    /// (the draft is open again, for the caller to record as a failure).
    pub(crate) fn settle(self, ok: bool) {
        let appended = self
            .appended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut s = self.scope.lock();
        match appended.filter(|_| ok) {
            Some(t) => {
                s.stage = Stage::Committed;
                s.committed = Some(t);
            }
            None => s.stage = Stage::Open,
        }
    }
}
