//! The MPC store: queued, leased and settled user messages over the blob store and the state
//! store (the layout is in the module doc of [`super`]), and how a Receipt or an Error settles
//! one.

use super::*;

impl PullSender {
    /// Settles the user messages the bundled Receipts and Errors reference.
    pub(super) async fn settle_all(&self, cx: &NodeContext, incoming: &Incoming, signer: Option<&str>, map: &Result<Arc<AuthorizationMap>, String>) -> Result<(), Reply> {
        let mut todo: Vec<(&str, Settlement)> = Vec::new();
        for r in &incoming.receipts {
            todo.push((&r.ref_to_message_id, Settlement::Receipt { signal_id: r.message_id.clone() }));
        }
        for e in &incoming.errors {
            if let Some(id) = &e.ref_to_message_id {
                let description = e.description.clone().or_else(|| e.short_description.clone()).unwrap_or_default();
                todo.push((id, Settlement::Error { code: e.code.clone(), severity: e.severity, description }));
            }
        }
        for (id, how) in todo {
            if let Err(error) = self.settle(cx, id, how, signer, map).await {
                tracing::error!(message = "Could not settle a user message: the store is unavailable.", %error, message_id = id);
                return Err(Reply::unavailable());
            }
        }
        Ok(())
    }

    pub(super) async fn settle(&self, cx: &NodeContext, id: &str, how: Settlement, signer: Option<&str>, map: &Result<Arc<AuthorizationMap>, String>) -> Result<(), StorageError> {
        let Some(mpc) = cx.state.get(&sub_key(id)).await? else {
            tracing::info!(message = "Receipt or Error for a message we do not know or settled before; ignored.", message_id = id);
            return Ok(());
        };
        let allowed = map.as_ref().map(|m| m.decide(&mpc, signer) == Decision::Allowed).unwrap_or(false);
        if !allowed {
            tracing::warn!(message = "Receipt or Error from a party not authorized on the message's MPC; ignored.", message_id = id, mpc = %mpc, signer = signer.unwrap_or("(unsigned)"));
            return Ok(());
        }
        let (status, detail) = match &how {
            Settlement::Receipt { signal_id } => ("receipted", format!("receipt {signal_id}")),
            Settlement::Error { code, severity, description } => {
                (if *severity == Severity::Failure { "failed" } else { "error-warning" }, format!("{code} ({}): {description}", severity.as_str()))
            }
        };
        let mark = format!("{status} {}", uuid::Uuid::new_v4().simple());
        let first = cx.state.set_once(&done_key(id), &mark, cx.limits.duplicate_ttl_secs).await? == mark;
        if !first {
            tracing::debug!(message = "Message already settled.", message_id = id);
        }
        let h = short_hash(&mpc);
        cx.state.unschedule(&inflight_set(&h), id).await?;
        cx.state.unschedule(&queue_set(&h), id).await?;
        cx.state.delete(&lease_key(id)).await?;
        cx.blobs.delete(&um_key(id)).await?;
        // Last: until here a repeated Receipt redoes the steps above.
        cx.state.delete(&sub_key(id)).await?;
        if first {
            cx.status(id, status, &detail).await;
            cx.annotate(id, &[("status", status.to_string()), ("reason", if status == "receipted" { String::new() } else { detail.clone() })]).await;
            let partner = cx.state.summary(id).await.ok().flatten().and_then(|m| m.get("partner").cloned()).unwrap_or_default();
            self.count(cx, &partner, status);
            tracing::info!(message = "User message settled.", message_id = id, status, detail = %detail);
        }
        Ok(())
    }

    /// The pull response for the oldest message of `mpc` (an expired lease first), or None.
    pub(super) async fn pull(&self, cx: &NodeContext, mpc: &str, pull_id: &str, now_ms: i64) -> Result<Option<Reply>, StorageError> {
        let Some((_, key)) = &self.signer else { return Ok(None) };
        let pull_key = format!("as4:pull:{}", short_hash(&format!("{mpc}\n{pull_id}")));
        // A repeated PullRequest (its answer was lost) gets the message it already got.
        if let Some(id) = cx.state.get(&pull_key).await?
            && cx.state.get(&done_key(&id)).await?.is_none()
            && let Some(um) = self.load(cx, &id).await
            && let Some(r) = self.respond(cx, &um, key, "pulled-again").await
        {
            tracing::info!(message = "Repeated PullRequest answered with the same user message.", pull_id, message_id = %id);
            return Ok(Some(r));
        }
        for _ in 0..SCAN {
            let Some((id, reoffer)) = self.take(cx, mpc, now_ms).await? else { return Ok(None) };
            let Some(um) = self.load(cx, &id).await else {
                // Not readable now: it stays leased and comes back after the timeout.
                continue;
            };
            let outcome = if reoffer { "re-offered" } else { "pulled" };
            let Some(reply) = self.respond(cx, &um, key, outcome).await else {
                self.fail(cx, &id, mpc, "the pull response cannot be built").await?;
                continue;
            };
            cx.state.set_once(&pull_key, &id, self.timeout_secs()).await?;
            let detail = format!("by PullRequest {pull_id}; receipt due within {} s", self.timeout_secs());
            cx.status(&id, outcome, &detail).await;
            // The summary's status follows the AS4 life (the lifecycle ranks know AS2's words).
            cx.annotate(&id, &[("status", outcome.to_string())]).await;
            self.count(cx, &um.to.party_id, outcome);
            tracing::info!(message = "User message pulled.", message_id = %id, mpc, pull_id, reoffer);
            return Ok(Some(reply));
        }
        Ok(None)
    }

    /// Claims the next message of `mpc`: an expired lease first, else the oldest queued one.
    /// Returns (message id, whether it is offered again).
    pub(super) async fn take(&self, cx: &NodeContext, mpc: &str, now_ms: i64) -> Result<Option<(String, bool)>, StorageError> {
        let h = short_hash(mpc);
        let (inflight, queue) = (inflight_set(&h), queue_set(&h));
        for (set, reoffer, upto) in [(&inflight, true, now_ms), (&queue, false, i64::MAX)] {
            for id in cx.state.due(set, upto, SCAN).await? {
                if cx.state.get(&done_key(&id)).await?.is_some() {
                    // Settled by another request while we looked.
                    cx.state.unschedule(&inflight, &id).await?;
                    cx.state.unschedule(&queue, &id).await?;
                    continue;
                }
                let token = format!("{}/{}", self.token, self.seq.fetch_add(1, Ordering::Relaxed));
                if cx.state.set_once(&lease_key(&id), &token, self.timeout_secs()).await? != token {
                    continue; // leased by someone else right now
                }
                cx.state.schedule(&inflight, &id, now_ms.saturating_add(self.timeout_ms())).await?;
                if !reoffer {
                    cx.state.unschedule(&queue, &id).await?;
                }
                return Ok(Some((id, reoffer)));
            }
        }
        Ok(None)
    }

    pub(super) async fn load(&self, cx: &NodeContext, id: &str) -> Option<UserMessage> {
        let bytes = match cx.blobs.get(&um_key(id)).await {
            Ok(b) => b,
            Err(error) => {
                tracing::warn!(message = "Queued user message not readable; it will be offered again later.", %error, message_id = id);
                return None;
            }
        };
        match edinode_proto::envelope::decode::<UserMessage>(&bytes) {
            Ok(um) => Some(um),
            Err(error) => {
                tracing::error!(message = "Queued user message is corrupt.", %error, message_id = id);
                None
            }
        }
    }

    /// Takes a message that can never be sent off its MPC.
    pub(super) async fn fail(&self, cx: &NodeContext, id: &str, mpc: &str, reason: &str) -> Result<(), StorageError> {
        cx.state.set_once(&done_key(id), "failed", cx.limits.duplicate_ttl_secs).await?;
        let h = short_hash(mpc);
        cx.state.unschedule(&inflight_set(&h), id).await?;
        cx.state.unschedule(&queue_set(&h), id).await?;
        cx.status(id, "failed", reason).await;
        self.count(cx, "", "failed");
        Ok(())
    }
}

/// Hex of the first 16 bytes of SHA-256: fixed-length, key-safe names for MPCs and ids.
pub(super) fn short_hash(s: &str) -> String {
    hex::encode(&openssl::sha::sha256(s.as_bytes())[..16])
}

pub(super) fn um_key(id: &str) -> String {
    format!("as4/um/{}", hex::encode(openssl::sha::sha256(id.as_bytes())))
}

pub(super) fn queue_set(mpc_hash: &str) -> String {
    format!("as4:q:{mpc_hash}")
}

pub(super) fn inflight_set(mpc_hash: &str) -> String {
    format!("as4:inflight:{mpc_hash}")
}

pub(super) fn lease_key(id: &str) -> String {
    format!("as4:lease:{id}")
}

pub(super) fn sub_key(id: &str) -> String {
    format!("as4:sub:{id}")
}

pub(super) fn done_key(id: &str) -> String {
    format!("as4:done:{id}")
}
