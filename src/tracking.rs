//! What the admin API and the console show and do, in one place: message search (filters and
//! paging over the state store), a message with its history, documents and receipt, resend,
//! and the summaries built from message summaries (per partner, AS4 queues per MPC).

use crate::transport::Transport;
use edinode_actors::{queues, NodeContext, StorageError};
use std::collections::BTreeMap;

/// A message summary as the state store keeps it (direction, station, partner, status, ...).
pub type Summary = BTreeMap<String, String>;

/// Which messages to list.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub station: Option<String>,
    pub partner: Option<String>,
    pub direction: Option<String>,
    pub status: Option<String>,
    /// Unix ms.
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Filter {
    fn keeps(&self, m: &Summary) -> bool {
        let keep = |field: &str, want: &Option<String>| want.as_ref().filter(|w| !w.is_empty()).is_none_or(|w| m.get(field) == Some(w));
        keep("station", &self.station) && keep("partner", &self.partner) && keep("direction", &self.direction) && keep("status", &self.status)
    }
}

/// Messages looked at per search (newest first); older ones are reached with a time range.
pub const SCAN: usize = 10_000;

/// One page of messages, newest first: `(id, summary)`, and whether more match.
pub async fn find(cx: &NodeContext, f: &Filter, offset: usize, limit: usize) -> Result<(Vec<(String, Summary)>, bool), StorageError> {
    let ids = cx.state.list(f.since.unwrap_or(0), f.until.unwrap_or(i64::MAX), SCAN).await?;
    let mut out = Vec::new();
    let mut skipped = 0;
    for id in ids {
        let Ok(Some(m)) = cx.state.summary(&id).await else { continue };
        if !f.keeps(&m) {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push((id, m));
    }
    Ok((out, false))
}

/// A message: its summary and status history `(at ms, status, detail)`, oldest first.
pub async fn message(cx: &NodeContext, id: &str) -> Result<Option<(Summary, Vec<(i64, String, String)>)>, StorageError> {
    let Some(summary) = cx.state.summary(id).await? else { return Ok(None) };
    let history = cx.state.history(id).await.unwrap_or_default();
    Ok(Some((summary, history)))
}

/// A document of a message: file name, content type, size in bytes.
pub struct Document {
    pub filename: String,
    pub content_type: String,
    pub size: u64,
}

/// The documents of an outbound message (kept for retries and resends); inbound ones are named
/// in their `delivered` status.
pub async fn documents(cx: &NodeContext, id: &str) -> Vec<Document> {
    let Ok(body) = cx.blobs.get(&edinode_actors::as2_sender::send_key(id)).await else { return vec![] };
    let Ok(s) = edinode_proto::envelope::decode::<edinode_proto::envelope::Send>(&body) else { return vec![] };
    s.documents.iter().map(|d| Document { filename: d.filename.clone(), content_type: d.content_type.clone(), size: d.data.len() }).collect()
}

/// What can be downloaded of a message: the raw capture of a received message (the request as
/// it arrived), the MDN we received for a sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    Capture,
    Receipt,
}

impl Raw {
    pub fn parse(s: &str) -> Option<Raw> {
        match s {
            "capture" => Some(Raw::Capture),
            "receipt" => Some(Raw::Receipt),
            _ => None,
        }
    }
    /// Its blob key, when the message has one.
    pub fn key(self, id: &str, summary: &Summary) -> Option<String> {
        match self {
            Raw::Capture if summary.get("direction").map(String::as_str) == Some("inbound") => Some(edinode_actors::http_receiver::layer0_key(id)),
            Raw::Capture => None,
            Raw::Receipt => summary.get("receipt").cloned(),
        }
    }
}

/// Why a resend did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no outbound message with this id")]
    NotFound,
    #[error("stored message unreadable")]
    Unreadable,
    #[error("already delivered")]
    AlreadySent,
    #[error("{0}")]
    Unavailable(String),
}

/// Send an outbound message again (same Message-ID); `by` goes in its history. Returns the
/// Message-ID.
pub async fn resend(cx: &NodeContext, t: &dyn Transport, id: &str, by: &str) -> Result<String, ResendError> {
    let body = cx.blobs.get(&edinode_actors::as2_sender::send_key(id)).await.map_err(|e| if e.is_not_found() { ResendError::NotFound } else { ResendError::Unavailable(e.to_string()) })?;
    let mut s = edinode_proto::envelope::decode::<edinode_proto::envelope::Send>(&body).map_err(|_| ResendError::Unreadable)?;
    if let Ok(Some(m)) = cx.state.summary(id).await
        && m.get("status").map(String::as_str) == Some("sent")
    {
        return Err(ResendError::AlreadySent);
    }
    s.attempt = 0;
    let out = edinode_actors::Out::send(queues::AS2_SENDER, &s).map_err(|e| ResendError::Unavailable(e.to_string()))?;
    crate::runner::publish_outs(t, vec![out]).await.map_err(|e| ResendError::Unavailable(e.to_string()))?;
    cx.status(id, "resent", by).await;
    Ok(s.message_id)
}

/// Counts of one partner's messages.
#[derive(Debug, Default, Clone)]
pub struct PartnerStats {
    pub inbound: usize,
    pub outbound: usize,
    /// sent, delivered, mdn-sent, receipted.
    pub done: usize,
    pub failed: usize,
    pub bytes: u64,
}

/// A message ended well.
pub fn succeeded(status: &str) -> bool {
    matches!(status, "sent" | "delivered" | "mdn-sent" | "receipted" | "processed")
}

/// A message ended badly.
pub fn failed(status: &str) -> bool {
    status == "failed" || status.starts_with("mdn-refused") || status.contains("error")
}

/// Throughput and failures per partner over the messages since `since_ms`.
pub async fn per_partner(cx: &NodeContext, since_ms: i64) -> Result<BTreeMap<String, PartnerStats>, StorageError> {
    let (rows, _) = find(cx, &Filter { since: Some(since_ms), ..Default::default() }, 0, SCAN).await?;
    let mut out: BTreeMap<String, PartnerStats> = BTreeMap::new();
    for (_, m) in rows {
        let Some(p) = m.get("partner") else { continue };
        let s = out.entry(p.clone()).or_default();
        match m.get("direction").map(String::as_str) {
            Some("inbound") => s.inbound += 1,
            _ => s.outbound += 1,
        }
        let status = m.get("status").map(String::as_str).unwrap_or("");
        s.done += usize::from(succeeded(status));
        s.failed += usize::from(failed(status));
        s.bytes += m.get("size").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(out)
}

/// AS4 user messages per MPC: (waiting to be pulled, pulled and waiting for a receipt).
pub async fn mpc_queues(cx: &NodeContext) -> Result<BTreeMap<String, (usize, usize)>, StorageError> {
    let (rows, _) = find(cx, &Filter { direction: Some("as4".into()), ..Default::default() }, 0, SCAN).await?;
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (_, m) in rows {
        let Some(mpc) = m.get("mpc") else { continue };
        let e = out.entry(mpc.clone()).or_default();
        match m.get("status").map(String::as_str) {
            Some("queued") => e.0 += 1,
            Some("pulled") | Some("re-offered") => e.1 += 1,
            _ => {}
        }
    }
    Ok(out)
}
