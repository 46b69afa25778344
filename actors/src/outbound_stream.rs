//! Outbound messages whose documents are over `limits.stream_threshold_bytes`: built with
//! [`StreamBuilder`] from blob to blob and POSTed as a stream, so the node's memory does not
//! follow the document size (issue 13).
//!
//! The builder's passes run here: every piece is read from its blob a chunk at a time, pushed
//! through the builder on the CPU pool, and what a storing pass produces (the compressed or
//! encrypted layer) is written to `outbound/<id>/layer-<n>`. The body is then sent with its
//! Content-Length from the same pieces; the layers are dropped once the POST is over.

use crate::ports::WholeReader;
use crate::{ActorError, BlobReader, NodeContext};
use edinode_proto::envelope::{Blob, Send};
use edinode_proto::outbound::{BuildStep, OutboundError, OutboundIds, Piece, StreamBuilder, StreamBuilt, StreamDocument};
use edinode_proto::profile::{Partner, Station};

/// A message built from blobs: its pieces, and the blobs its `Piece::Source`s name.
pub struct Streamed {
    pub built: StreamBuilt,
    pub sources: Vec<Blob>,
    /// The layers this build stored (deleted after the POST).
    pub layers: Vec<String>,
}

/// Whether a Send's documents are large enough to stream.
pub fn streams(cx: &NodeContext, s: &Send) -> bool {
    s.documents.iter().map(|d| d.data.len()).sum::<u64>() > cx.limits.stream_threshold as u64
}

/// Build the message of `s` pass by pass. `Ok(Err(e))`: it cannot be built (a refusal, as
/// `outbound::build`'s errors are).
pub async fn build(cx: &NodeContext, s: &Send, partner: &Partner, station: &Station) -> Result<Result<Streamed, OutboundError>, ActorError> {
    let docs = s.documents.iter().map(|d| StreamDocument { filename: d.filename.clone(), content_type: d.content_type.clone(), len: d.data.len() }).collect();
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let ids = OutboundIds { message_id: &s.message_id, boundary_seed: &s.id, date: &date };
    let b = StreamBuilder::new(&station.as2_id, &partner.as2_id, docs, &partner.outbound.options, Some((&station.signing_key, &station.signing_cert)), partner.encryption_cert.as_ref(), &ids, "AS2 message");
    let mut b = match b {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let mut sources: Vec<Blob> = s.documents.iter().map(|d| d.data.clone()).collect();
    let mut layers = Vec::new();
    loop {
        let step = match b.next_step() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let (pieces, stores) = match step {
            BuildStep::Done(built) => return Ok(Ok(Streamed { built, sources, layers })),
            BuildStep::Pass { pieces, stores } => (pieces, stores),
        };
        let key = format!("outbound/{}/layer-{}", s.id, layers.len());
        let mut writer = if stores { Some(cx.blobs.writer(&key).await?) } else { None };
        for piece in &pieces {
            let mut reader = open(cx, piece, &sources).await?;
            while let Some(chunk) = reader.next().await? {
                let (back, out) = cx.cpu.run(move || { let mut out = Vec::new(); let r = b.push(&chunk, &mut out); (b, r.map(|()| out)) }).await?;
                b = back;
                match out {
                    Ok(out) => if let Some(w) = writer.as_mut() { w.write(&out).await? },
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        let (back, out) = cx.cpu.run(move || { let mut out = Vec::new(); let r = b.finish(&mut out); (b, r.map(|()| out)) }).await?;
        b = back;
        let out = match out {
            Ok(out) => out,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(mut w) = writer {
            w.write(&out).await?;
            let len = w.finish().await?;
            tracing::info!(message = "Large outbound layer streamed.", id = %s.id, layer = %key, bytes = len);
            sources.push(Blob::Stored { key: key.clone(), len });
            layers.push(key);
        }
    }
}

async fn open<'a>(cx: &'a NodeContext, piece: &Piece, sources: &[Blob]) -> Result<Box<dyn BlobReader + 'a>, ActorError> {
    Ok(match piece {
        Piece::Bytes(b) => Box::new(WholeReader::new(b)),
        Piece::Source(i) => {
            let blob = sources.get(*i).ok_or_else(|| ActorError::Permanent(format!("the builder named source {i}, which does not exist")))?;
            cx.reader(blob).await?
        }
    })
}

/// A request body that reads the pieces as the HTTP client sends them: a channel a few chunks
/// deep, fed by [`feed`] (run next to the request, it borrows the node's blob store).
pub fn body() -> (tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (tx, reqwest::Body::wrap_stream(stream))
}

/// Read the pieces into the body channel. Stops quietly when the client stops reading (the
/// request ended early: its outcome is what counts).
pub async fn feed(cx: &NodeContext, m: &Streamed, tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>) {
    for piece in &m.built.body {
        let mut reader = match open(cx, piece, &m.sources).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        };
        loop {
            match reader.next().await {
                Ok(Some(chunk)) => {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    }
}

/// Drop the layers a build stored.
pub async fn drop_layers(cx: &NodeContext, m: &Streamed) {
    for key in &m.layers {
        if let Err(error) = cx.blobs.delete(key).await {
            tracing::warn!(message = "Could not delete a streamed layer.", %key, %error);
        }
    }
}
