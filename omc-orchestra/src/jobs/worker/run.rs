//! The pool's tasks: the dispatcher that sizes and feeds the pool, the slots that run
//! jobs back to back (renewing their leases), and the completer that records completions
//! in batches.

use super::{HandlerResult, JobContext, JobHandler, Shared};
use crate::jobs::{Completion, FetchRequest, JobLease, JobQueue, JobState};
use crate::telemetry::TraceParent;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

pub(super) async fn dispatch(shared: Arc<Shared>) {
    let mut idle_polls = 0u32;
    let mut last_maintain = tokio::time::Instant::now();
    let mut stopping = shared.stopping.subscribe();
    if shared.handlers.is_empty() && shared.fallback.is_none() {
        // Nothing to run: taking jobs would only fail them.
        let _ = stopping.wait_for(|s| *s).await;
        return;
    }
    while !shared.stopping() {
        if last_maintain.elapsed() >= shared.lease / 2 {
            last_maintain = tokio::time::Instant::now();
            if let Ok(done) = shared.queue.maintain().await {
                for id in &done.stalled {
                    if let Ok(job) = shared.queue.get(id).await {
                        shared.publish("JOB_STALLED", &job).await;
                    }
                }
            }
        }
        let target = shared.target.load(Ordering::Acquire);
        let running = shared.running.load(Ordering::Acquire);
        if running >= target {
            let wait = shared.finished.notified();
            let _ = tokio::time::timeout(shared.poll, wait).await;
            continue;
        }
        let free = target - running;
        let leases = match shared.queue.fetch_batch(&shared.request(free)).await {
            Ok(leases) => leases,
            Err(err) => {
                tracing::warn!(error = %err, "fetching jobs failed");
                Vec::new()
            }
        };
        if leases.len() == free && target < shared.max {
            let grown = (target * 2).min(shared.max);
            resize(
                &shared,
                target,
                grown,
                "grows: the queue is deeper than what runs",
            );
            idle_polls = 0;
        } else if leases.is_empty() {
            idle_polls += 1;
            if idle_polls >= 10 && target > shared.min {
                let shrunk = (target / 2).max(shared.min);
                resize(&shared, target, shrunk, "shrinks: idle");
                idle_polls = 0;
            }
        }
        let empty = leases.is_empty();
        for lease in leases {
            shared.running.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(slot(shared.clone(), lease));
        }
        if empty {
            tokio::select! {
                _ = tokio::time::sleep(shared.poll) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        }
    }
}

/// Move the pool's size from `from` to `to`, logging `why` so an operator sees each change.
fn resize(shared: &Shared, from: usize, to: usize, why: &str) {
    shared.target.store(to, Ordering::Release);
    tracing::info!(
        target: "orchestra::jobs",
        worker = %shared.worker_id,
        from,
        to,
        "worker pool {why}"
    );
}

/// Run a job, then keep taking the next one in the same round trip as the completion
/// while the pool wants this many running.
async fn slot(shared: Arc<Shared>, mut lease: JobLease) {
    let _held = SlotHeld(shared.clone());
    loop {
        let keep_going = !shared.stopping()
            && shared.running.load(Ordering::Acquire) <= shared.target.load(Ordering::Acquire);
        let next = run_one(&shared, lease, keep_going).await;
        match next {
            Some(next) => lease = next,
            None => break,
        }
    }
}

/// Gives a slot back when its task ends, however it ends: a slot that is never given
/// back shrinks the pool for good.
struct SlotHeld(Arc<Shared>);

impl Drop for SlotHeld {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.finished.notify_waiters();
    }
}

/// Run `handler` on `ctx`, turning a panic (in the call or in the future it returns)
/// into a failed attempt that carries the panic message.
async fn run_handler(handler: JobHandler, ctx: JobContext) -> HandlerResult {
    let run = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx))) {
        Ok(run) => run,
        Err(panic) => return Err(panicked(panic.as_ref())),
    };
    AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panicked(panic.as_ref())))
}

/// The error a panicking handler leaves on its job, from the panic's payload: the same
/// words whichever worker (this pool, or the SDK's over HTTP) caught it.
pub fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string payload");
    format!("handler panicked: {message}")
}

/// The span of a job run, a child of the trace the job was enqueued in (when export is
/// on), and the trace context the handler runs in (the span's, else the job's own).
fn run_span(job: &crate::jobs::Job) -> (Option<crate::telemetry::Span>, Option<TraceParent>) {
    let parent = job.traceparent.as_deref().and_then(TraceParent::parse);
    if !crate::telemetry::enabled() {
        return (None, parent);
    }
    let mut span = crate::telemetry::start(
        format!("job {}", job.job_type),
        crate::telemetry::SpanKind::Consumer,
        parent.as_ref(),
        None,
    );
    if let Some(span) = &mut span {
        span.set_str("orchestra.job.id", job.id.clone());
        span.set_str("orchestra.job.type", job.job_type.clone());
        span.set_i64("orchestra.job.attempt", i64::from(job.attempts));
    }
    let trace = span.as_ref().map(|s| s.context().clone()).or(parent);
    (span, trace)
}

/// End a job run's span with how the run ended (`None`: the pool stopped it).
fn end_run_span(mut span: crate::telemetry::Span, outcome: Option<&HandlerResult>) {
    match outcome {
        Some(Ok(_)) => span.set_str("orchestra.job.outcome", "completed"),
        Some(Err(error)) => {
            span.set_str("orchestra.job.outcome", "failed");
            span.fail(error.clone());
        }
        None => span.set_str("orchestra.job.outcome", "released"),
    }
    span.end();
}

async fn run_one(shared: &Arc<Shared>, lease: JobLease, fetch_next: bool) -> Option<JobLease> {
    let JobLease { job, token, .. } = lease;
    let id = job.id.clone();
    let handler = shared
        .handlers
        .get(&job.job_type)
        .or(shared.fallback.as_ref())
        .cloned();
    shared.publish("JOB_ACTIVE", &job).await;
    // Kept for the completion event only when someone listens.
    let kept = shared.events.as_ref().map(|_| job.clone());
    let (cancel_tx, cancel_rx) = watch::channel(job.cancel_requested);
    let timeout = job.timeout_ms;
    let (mut span, trace) = run_span(&job);
    let ctx = JobContext {
        job,
        token: token.clone(),
        queue: shared.queue.clone(),
        cancel: cancel_rx,
    };
    let outcome = match handler {
        None => Some(Err(format!(
            "no handler for job type `{}`",
            ctx.job.job_type
        ))),
        Some(handler) => {
            // The handler's own events, jobs and calls continue the job's trace.
            let run = crate::telemetry::within(trace, run_handler(handler, ctx));
            let timed = async {
                match timeout {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run)
                        .await
                        .unwrap_or_else(|_| Err(format!("timed out after {ms} ms"))),
                    None => run.await,
                }
            };
            let mut timed = std::pin::pin!(timed);
            // Most jobs of a busy queue finish on their first poll: no timers for them.
            if let std::task::Poll::Ready(result) = futures::poll!(&mut timed) {
                Some(result)
            } else {
                let every = shared.lease / 3;
                let start = tokio::time::Instant::now() + every;
                let mut renewals = tokio::time::interval_at(start, every);
                let mut aborting = shared.aborting.subscribe();
                let mut renewing = true;
                loop {
                    tokio::select! {
                        result = &mut timed => break Some(result),
                        _ = async { aborting.wait_for(|a| *a).await.is_ok() } => break None,
                        _ = renewals.tick(), if renewing => {
                            renewing = renew(&shared.queue, &id, &token, shared.lease, &cancel_tx).await;
                        }
                    }
                }
            }
        }
    };
    if let Some(span) = span.take() {
        end_run_span(span, outcome.as_ref());
    }
    let queue = &shared.queue;
    match outcome {
        None => {
            if let Err(err) = queue.release(&id, &token).await {
                tracing::warn!(job = %id, error = %err, "could not release job");
            }
            None
        }
        Some(Ok(result)) => {
            let (reply, answer) = oneshot::channel();
            let pending = PendingCompletion {
                completion: Completion {
                    id: id.clone(),
                    token: token.clone(),
                    result,
                },
                want_next: fetch_next,
                reply,
            };
            shared.completions.send(pending).ok()?;
            let (done, next) = answer.await.ok()?;
            match done {
                Ok(()) => {
                    if let Some(mut done) = kept {
                        done.state = JobState::Completed;
                        shared.publish("JOB_COMPLETED", &done).await;
                    }
                }
                Err(err) => tracing::warn!(job = %id, error = %err, "could not complete job"),
            }
            next
        }
        Some(Err(error)) => {
            match queue.fail(&id, &token, &error).await {
                Ok(failed) if failed.state == JobState::Failed => {
                    shared.publish("JOB_FAILED", &failed).await;
                }
                Ok(retried) => shared.publish("JOB_RETRIED", &retried).await,
                Err(err) => tracing::warn!(job = %id, error = %err, "could not fail job"),
            }
            None
        }
    }
}

/// Renew a lease once; tell the handler when the job is cancelled or the lease is lost.
/// Answers whether renewing should go on.
async fn renew(
    queue: &Arc<dyn JobQueue>,
    id: &str,
    token: &str,
    lease: Duration,
    cancel: &watch::Sender<bool>,
) -> bool {
    match queue.extend(id, token, lease).await {
        Ok(renewal) => {
            if renewal.cancel_requested {
                cancel.send_replace(true);
            }
            true
        }
        Err(crate::Error::Conflict(_) | crate::Error::NotFound { .. }) => {
            cancel.send_replace(true);
            false
        }
        Err(err) => {
            tracing::warn!(job = %id, error = %err, "lease renewal failed");
            true
        }
    }
}

/// A completion waiting for the next batch, and where to answer.
pub(super) struct PendingCompletion {
    completion: Completion,
    want_next: bool,
    reply: oneshot::Sender<(Result<(), String>, Option<JobLease>)>,
}

/// Record completions in batches: whatever queued up while the previous batch was in
/// flight goes in one round trip, which also fetches a next job for every slot that
/// wants one (group commit). Ends when the pool is gone.
pub(super) async fn complete_in_batches(
    queue: Arc<dyn JobQueue>,
    template: FetchRequest,
    mut pending: mpsc::UnboundedReceiver<PendingCompletion>,
) {
    const MOST: usize = 256;
    // Two batches in flight: Redis runs one while this process reads the other.
    let in_flight = Arc::new(Semaphore::new(2));
    while let Some(first) = pending.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MOST {
            match pending.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let queue = queue.clone();
        let template = template.clone();
        tokio::spawn(async move {
            record(&queue, &template, batch).await;
            drop(permit);
        });
    }
}

/// Complete one batch and hand each slot its outcome and next lease.
async fn record(queue: &Arc<dyn JobQueue>, template: &FetchRequest, batch: Vec<PendingCompletion>) {
    let request = FetchRequest {
        max: batch.iter().filter(|p| p.want_next).count(),
        ..template.clone()
    };
    let (done, batch): (Vec<Completion>, Vec<_>) = batch
        .into_iter()
        .map(|p| (p.completion, (p.want_next, p.reply)))
        .unzip();
    match queue.complete_many(&done, &request).await {
        Ok((outcomes, leases)) => {
            let mut leases = leases.into_iter();
            for ((want_next, reply), outcome) in batch.into_iter().zip(outcomes) {
                let next = if want_next { leases.next() } else { None };
                if let Err((_, Some(unwanted))) =
                    reply.send((outcome.map_err(|e| e.to_string()), next))
                {
                    let _ = queue.release(&unwanted.job.id, &unwanted.token).await;
                }
            }
            for unwanted in leases {
                let _ = queue.release(&unwanted.job.id, &unwanted.token).await;
            }
        }
        Err(err) => {
            let message = err.to_string();
            for (_, reply) in batch {
                let _ = reply.send((Err(message.clone()), None));
            }
        }
    }
}
