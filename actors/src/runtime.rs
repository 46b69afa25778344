//! The actix side of every stage.
//!
//! - [`Stage`]: the actix actor of a queue-consuming stage. Its mailbox is bounded to the queue's
//!   prefetch (the transport bridge `send`s and waits, so a full mailbox is backpressure up to
//!   the broker); each [`Work`] message runs the stage's handler on the IO runtime; a handler that
//!   panics is answered with an error (the bridge nacks the delivery, which comes back with its
//!   attempt count raised and is dead-lettered with the panic message after `max_attempts`) and
//!   the actor stops, so its [`actix::Supervisor`] restarts a fresh one.
//! - [`CpuWorker`]: `SyncActor`s on a `SyncArbiter` sized from the cores. Decryption, signature
//!   verification, decompression, MDN signing and XML signatures run there through [`CpuPool`],
//!   never on the IO threads; at most `cpu_workers` such jobs run at once whatever arrives.
//!   A job that panics restarts its worker (the factory builds a new one) and fails only itself.

use crate::{ActorError, NodeContext, Out};
use actix::prelude::*;
use std::sync::Arc;

/// One input for a stage, as an actix message, with the span it is handled in.
pub struct Work<I> {
    pub input: I,
    pub span: tracing::Span,
}

impl<I: 'static> Message for Work<I> {
    type Result = Result<Vec<Out>, ActorError>;
}

/// The text of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "panic".into())
}

/// The actix actor of a stage `A`.
pub struct Stage<A: crate::Actor> {
    actor: Arc<A>,
    cx: NodeContext,
    mailbox: usize,
    /// Where handlers run: the node's multi-threaded IO runtime.
    io: tokio::runtime::Handle,
}

impl<A: crate::Actor> Stage<A> {
    /// Start the stage under a supervisor; `mailbox` is its capacity (the queue's prefetch).
    pub fn start(actor: Arc<A>, cx: NodeContext, mailbox: usize, io: tokio::runtime::Handle) -> Addr<Stage<A>> {
        actix::Supervisor::start(move |_| Stage { actor, cx, mailbox, io })
    }
}

impl<A: crate::Actor> actix::Actor for Stage<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox.max(1));
    }
}

impl<A: crate::Actor> actix::Supervised for Stage<A> {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        tracing::warn!(message = "Stage restarted by its supervisor after a panic.", actor = A::BINDING.name);
    }
}

impl<A: crate::Actor> Handler<Work<A::Input>> for Stage<A>
where
    A::Input: 'static,
{
    type Result = ResponseActFuture<Self, Result<Vec<Out>, ActorError>>;

    fn handle(&mut self, Work { input, span }: Work<A::Input>, _ctx: &mut Context<Self>) -> Self::Result {
        let (actor, cx) = (self.actor.clone(), self.cx.current());
        let job = self.io.spawn(tracing::Instrument::instrument(async move { actor.handle(&cx, input).await }, span));
        Box::pin(
            async move {
                match job.await {
                    Ok(r) => (r, false),
                    Err(e) if e.is_panic() => {
                        let text = panic_text(e.into_panic().as_ref());
                        tracing::error!(message = "A stage handler panicked.", actor = A::BINDING.name, panic = %text);
                        (Err(ActorError::Transient(format!("panic in {}: {text}", A::BINDING.name))), true)
                    }
                    Err(e) => (Err(ActorError::Transient(format!("{} handler cancelled: {e}", A::BINDING.name))), false),
                }
            }
            .into_actor(self)
            .map(|(r, panicked), _act, ctx| {
                if panicked {
                    // The supervisor starts a fresh actor with the same mailbox.
                    ctx.stop();
                }
                r
            }),
        )
    }
}

/// A CPU-bound job; returns true when it panicked (the worker is then replaced).
pub(crate) struct CpuJob(Box<dyn FnOnce() -> bool + Send>);

impl Message for CpuJob {
    type Result = ();
}

/// A worker thread of the CPU pool.
pub(crate) struct CpuWorker;

impl actix::Actor for CpuWorker {
    type Context = SyncContext<Self>;
}

impl Handler<CpuJob> for CpuWorker {
    type Result = ();

    fn handle(&mut self, CpuJob(job): CpuJob, ctx: &mut SyncContext<Self>) {
        if job() {
            // The SyncArbiter replaces a stopped worker with a new one from its factory.
            ctx.stop();
        }
    }
}

/// Where CPU-bound work runs: a SyncArbiter of [`CpuWorker`]s, or (tests of one actor, tools)
/// the blocking thread pool.
#[derive(Clone, Default)]
pub struct CpuPool {
    workers: Option<Addr<CpuWorker>>,
}

impl CpuPool {
    /// Start `threads` CPU workers; needs a running actix System.
    pub fn start(threads: usize) -> CpuPool {
        CpuPool { workers: Some(SyncArbiter::start(threads.max(1), || CpuWorker)) }
    }

    /// Run `f` on a CPU worker and wait for its result; a panic is an error of this job only.
    pub async fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R, ActorError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_text(p.as_ref()));
            let panicked = r.is_err();
            let _ = tx.send(r);
            panicked
        };
        match &self.workers {
            Some(addr) => addr.send(CpuJob(Box::new(job))).await.map_err(|e| ActorError::Transient(format!("CPU pool unavailable: {e}")))?,
            None => {
                tokio::task::spawn_blocking(job).await.map_err(|e| ActorError::Transient(e.to_string()))?;
            }
        }
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(text)) => {
                tracing::error!(message = "A CPU job panicked.", panic = %text);
                Err(ActorError::Transient(format!("panic in a CPU job: {text}")))
            }
            Err(_) => Err(ActorError::Transient("a CPU job ended without a result".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn cpu_jobs_never_exceed_the_pool_and_a_panic_fails_only_its_job() {
        actix::System::new().block_on(async {
            let pool = CpuPool::start(2);
            let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let jobs: Vec<_> = (0..8)
                .map(|i| {
                    let (pool, now, peak) = (pool.clone(), now.clone(), peak.clone());
                    tokio::spawn(async move {
                        pool.run(move || {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            // The behaviour under test: a job that takes a while, so jobs overlap.
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            now.fetch_sub(1, Ordering::SeqCst);
                            if i == 3 {
                                panic!("job {i} failed");
                            }
                            i * 2
                        })
                        .await
                    })
                })
                .collect();
            let mut results = Vec::new();
            for j in jobs {
                results.push(j.await.unwrap());
            }
            assert_eq!(peak.load(Ordering::SeqCst), 2, "at most the pool's size at once");
            for (i, r) in results.iter().enumerate() {
                match r {
                    Ok(v) => assert_eq!(*v, i * 2),
                    Err(e) => assert!(i == 3 && e.to_string().contains("job 3 failed"), "{i}: {e}"),
                }
            }
            // The pool still has both workers after the panic.
            let after: Vec<_> = futures::future::join_all((0..4).map(|i| pool.run(move || i))).await;
            assert!(after.iter().all(|r| r.is_ok()));
        });
    }
}
