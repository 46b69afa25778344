//! Deliverer: writes each document with its file name into `<inbox>/<station>/<partner>/` and
//! publishes it on the `edinode.inbound` exchange (headers as2-from, as2-to, message-id,
//! filename, content-type). Names are claimed in the state store before writing, so a retry of
//! the same delivery rewrites the same file instead of adding a second one. S3 delivery is a
//! later sink beside this one.

use crate::{queues, Actor, ActorError, NodeContext, Out};
use edinode_proto::envelope::{Blob, Deliver};
use std::path::{Path, PathBuf};

pub struct Deliverer;

/// Make a path component safe (station and partner ids are partner-controlled text).
pub fn safe_component(s: &str) -> String {
    let c: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).collect();
    let c = c.trim_start_matches('.').to_string();
    if c.is_empty() { "_".into() } else { c }
}

/// Write then rename, inline (cheaper than the blocking pool for the usual small document).
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("part-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[async_trait::async_trait]
impl Actor for Deliverer {
    const NAME: &'static str = "deliverer";
    const QUEUE: &'static str = queues::DELIVERER;
    type Input = Deliver;

    async fn handle(&self, cx: &NodeContext, input: Deliver) -> Result<Vec<Out>, ActorError> {
        let Deliver { ctx, payloads } = input;
        crate::describe(&ctx);
        let dir: PathBuf = cx.inbox.join(safe_component(&ctx.station)).join(safe_component(&ctx.partner));
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| ActorError::Transient(format!("create {}: {e}", dir.display())))?;
        }
        let mut outs = Vec::new();
        let mut names = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            // Claim a name: the document's own, or prefixed with our id when taken.
            let mut candidate = p.filename.clone();
            if dir.join(&candidate).exists() {
                candidate = format!("{}_{}", &ctx.id[..ctx.id.len().min(12)], p.filename);
            }
            let name = cx
                .state
                .set_once(&format!("deliver:{}:{}", ctx.id, i), &candidate, 7 * 24 * 3600)
                .await
                .map_err(ActorError::Transient)?;
            let data = cx.load(&p.data).await?;
            let path = dir.join(&name);
            write_atomic(&path, &data).map_err(|e| ActorError::Transient(format!("write {}: {e}", path.display())))?;
            let mut headers = vec![
                ("as2-from".to_string(), ctx.request.as2_from.clone()),
                ("as2-to".to_string(), ctx.request.as2_to.clone()),
                ("message-id".to_string(), ctx.request.message_id.clone()),
                ("filename".to_string(), name.clone()),
                ("content-type".to_string(), p.content_type.clone()),
                ("station".to_string(), ctx.station.clone()),
                ("partner".to_string(), ctx.partner.clone()),
                ("size".to_string(), data.len().to_string()),
            ];
            if let Some(b) = cx.buckets.get(&ctx.station).filter(|b| b.inbound) {
                // as2gateway/<station>/<partner>/[test/]inbox/<message>/<file> (or <message>_<file>)
                let station_as2 = &ctx.request.as2_to;
                let test = cx.directory.partner(station_as2, &ctx.request.as2_from).is_some_and(|p| p.test);
                let msg = safe_component(ctx.request.bare_message_id());
                let file = match b.folders {
                    crate::FolderStructure::Subfolder => format!("{msg}/{name}"),
                    crate::FolderStructure::Prefix => format!("{msg}_{name}"),
                };
                let key = format!("as2gateway/{}/{}/{}inbox/{file}", station_as2, ctx.request.as2_from, if test { "test/" } else { "" });
                b.store.put(&key, data.clone()).await.map_err(ActorError::Transient)?;
                headers.push(("s3-key".to_string(), key));
            }
            let body = if data.len() <= cx.limits.inline_threshold {
                data
            } else {
                // Large documents are referenced, not copied onto the bus.
                headers.push(("path".to_string(), path.display().to_string()));
                Vec::new()
            };
            outs.push(Out::Publish { exchange: queues::INBOUND_EXCHANGE, routing_key: format!("{}.{}", ctx.station, ctx.partner), headers, body });
            names.push(name);
        }
        cx.status(&ctx.id, "delivered", &names.join(", ")).await;
        // The documents are safe in the inbox: drop the working copies and the raw request.
        if payloads.iter().any(|p| matches!(p.data, Blob::Stored { .. })) || ctx.raw_len > cx.limits.inline_threshold as u64 {
            let _ = cx.blobs.delete_prefix(&format!("work/{}/", ctx.id)).await;
        }
        let _ = cx.blobs.delete(&ctx.raw_key).await;
        Ok(outs)
    }
}
