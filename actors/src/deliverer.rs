//! Deliverer: writes each document with its file name into `<inbox>/<station>/<partner>/` and
//! publishes it on the `edinode.inbound` exchange (headers as2-from, as2-to, message-id,
//! filename, content-type), and into the station's S3 bucket when configured.
//!
//! A file is never replaced, whatever runs concurrently: a name is first claimed in the shared
//! state store (one owner per name, across nodes), then the finished file is hard-linked to it,
//! which fails atomically if any file already has that name (also one not written by us). A
//! taken name moves on to `<id>_<name>`, then `<id>_<n>_<name>`, with a log line. A redelivered
//! delivery finds its own claim and its own file (same bytes) and does not write a second copy.
//! Nodes may have inboxes of their own (share-nothing): a document delivered into one inbox is
//! marked in the state store with that inbox's identity ([`files::inbox_id`]), so a second
//! delivery of the same reception on another node (a redelivery, or the same work done twice
//! at once) writes nothing, or removes the copy it lost the race with.
//! A document is written as an unnamed file in its folder (`O_TMPFILE`) and then linked to its
//! name; where the file system cannot do that, as a temporary file under `<inbox>/.edinode-tmp/`,
//! outside the partner folders.

use crate::{files, queues, Actor, Binding, ActorError, NodeContext, Out};
use edinode_proto::envelope::{Blob, Deliver};
use std::path::{Path, PathBuf};

pub struct Deliverer;

/// Make a path component safe (station and partner ids are partner-controlled text).
pub(crate) fn safe_component(s: &str) -> String {
    let c: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).collect();
    let c = c.trim_start_matches('.').to_string();
    if c.is_empty() { "_".into() } else { c }
}

/// Names to try for document `index` of reception `id`, in order.
fn candidates(id: &str, index: usize, filename: &str) -> impl Iterator<Item = String> {
    let short = id[..id.len().min(12)].to_string();
    let filename = filename.to_string();
    [filename.clone(), format!("{short}_{filename}"), format!("{short}_{index}_{filename}")]
        .into_iter()
        .chain((1..).map(move |n| format!("{id}_{index}_{n}_{filename}")))
}

/// Give document `index` of reception `id` a file in `dir` that replaces nothing; returns its
/// name. Inline file work: cheaper than the blocking pool for the usual small document.
/// What a document is written from: bytes at hand, or a large stored blob read a piece at a
/// time.
#[derive(Clone, Copy)]
enum Source<'a> {
    Bytes(&'a [u8]),
    Stored(&'a Blob),
}

/// How a file we wrote is recognised again (a redelivery finding its own earlier write).
enum Check<'a> {
    Bytes(&'a [u8]),
    Digest { len: u64, sha256: Vec<u8> },
}

/// The document in a new unnamed file for `dir`.
async fn write_file<'a>(cx: &NodeContext, dir: &Path, src: Source<'a>) -> Result<(files::Unnamed, Check<'a>), ActorError> {
    let tmp_dir = files::inbox_temp_dir(&cx.inbox);
    let io = |e: std::io::Error| ActorError::Transient(format!("write a file for {}: {e}", dir.display()));
    match src {
        Source::Bytes(data) => Ok((files::Unnamed::write(dir, &tmp_dir, &[data], cx.fsync).map_err(io)?, Check::Bytes(data))),
        Source::Stored(blob) => {
            use std::io::Write;
            let (file, mut handle) = files::Unnamed::create(dir, &tmp_dir).map_err(io)?;
            let mut reader = cx.reader(blob).await?;
            let mut h = openssl::hash::Hasher::new(openssl::hash::MessageDigest::sha256()).map_err(|e| ActorError::Permanent(e.to_string()))?;
            let mut len = 0u64;
            while let Some(chunk) = reader.next().await? {
                handle.write_all(&chunk).map_err(io)?;
                h.update(&chunk).map_err(|e| ActorError::Permanent(e.to_string()))?;
                len += chunk.len() as u64;
            }
            if cx.fsync {
                handle.sync_data().map_err(io)?;
            }
            let sha256 = h.finish().map_err(|e| ActorError::Permanent(e.to_string()))?.to_vec();
            Ok((file, Check::Digest { len, sha256 }))
        }
    }
}

async fn claim_and_write(cx: &NodeContext, dir: &Path, id: &str, index: usize, filename: &str, src: Source<'_>) -> Result<String, ActorError> {
    let (file, check) = write_file(cx, dir, src).await?;
    let me = format!("{id}:{index}");
    let owner_key = |name: &str| format!("inboxname:{}:{}", dir.display(), name);
    let result = async {
        for (tries, name) in candidates(id, index, filename).enumerate() {
            if tries > 64 {
                break;
            }
            let owner = cx.state.set_once(&owner_key(&name), &me, 30 * 24 * 3600).await.map_err(ActorError::from)?;
            if owner != me {
                tracing::info!(message = "File name taken in the inbox; trying another.", name = %name, id);
                continue;
            }
            let path = dir.join(&name);
            if file.link(&path, cx.fsync).map_err(|e| ActorError::Transient(format!("link {}: {e}", path.display())))? {
                return Ok(name);
            }
            let ours = match &check {
                Check::Bytes(data) => files::same_content(&path, data),
                Check::Digest { len, sha256 } => files::same_digest(&path, *len, sha256),
            };
            if ours {
                return Ok(name);
            }
            tracing::warn!(message = "A file not written by this delivery has the claimed name; trying another.", name = %name, id);
        }
        Err(ActorError::Permanent(format!("no free file name for {filename} in {}", dir.display())))
    }
    .await;
    drop(file);
    result
}

/// [`claim_and_write`] unless another inbox already holds document `index` of reception `id`;
/// returns the name it has (there or here).
async fn deliver_once(cx: &NodeContext, dir: &Path, id: &str, index: usize, filename: &str, src: Source<'_>) -> Result<String, ActorError> {
    let inbox = files::inbox_id(&cx.inbox).map_err(|e| ActorError::Transient(format!("inbox id in {}: {e}", cx.inbox.display())))?;
    let key = format!("delivered:{id}:{index}");
    let elsewhere = |v: &str| v.split_once('/').filter(|(other, _)| *other != inbox).map(|(_, name)| name.to_string());
    if let Some(name) = cx.state.get(&key).await?.as_deref().and_then(elsewhere) {
        tracing::info!(message = "Document already delivered into another node's inbox; not writing it again.", id, name = %name);
        return Ok(name);
    }
    let name = claim_and_write(cx, dir, id, index, filename, src).await?;
    let mine = format!("{inbox}/{name}");
    let first = cx.state.set_once(&key, &mine, cx.limits.duplicate_ttl_secs).await?;
    match elsewhere(&first) {
        None => Ok(name),
        Some(theirs) => {
            // The same reception delivered at once on another node with its own inbox: that
            // copy counts, ours goes.
            let path = dir.join(&name);
            std::fs::remove_file(&path).map_err(|e| ActorError::Transient(format!("remove {}: {e}", path.display())))?;
            tracing::info!(message = "Document delivered into another node's inbox at the same time; removed this copy.", id, name = %theirs);
            Ok(theirs)
        }
    }
}


impl Actor for Deliverer {
    const BINDING: Binding = Binding::new("deliverer", queues::DELIVERER);
    type Input = Deliver;

    async fn handle(&self, cx: &NodeContext, input: Deliver) -> Result<Vec<Out>, ActorError> {
        let Deliver { ctx, payloads } = input;
        crate::describe(&ctx);
        let dir: PathBuf = cx.inbox.join(safe_component(&ctx.station)).join(safe_component(&ctx.partner));
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| ActorError::Transient(format!("create {}: {e}", dir.display())))?;
            if cx.fsync {
                for d in [dir.as_path(), dir.parent().unwrap_or(&dir), &cx.inbox] {
                    files::sync_dir(d).map_err(|e| ActorError::Transient(format!("sync {}: {e}", d.display())))?;
                }
            }
        }
        let mut outs = Vec::new();
        let mut names = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            // A large document streams from its blob into the file; a small one is loaded.
            let streamed = cx.streams(&p.data);
            let opened = if streamed { cx.reader(&p.data).await.map(|_| Vec::new()) } else { cx.load(&p.data).await };
            let data = match opened {
                Ok(d) => d,
                Err(e) => match cx.state.get(&format!("delivered:{}:{i}", ctx.id)).await {
                    Ok(Some(_)) => {
                        tracing::info!(message = "Document already delivered and its working copy gone; a repeated hand-over, skipped.", id = %ctx.id, index = i);
                        continue;
                    }
                    _ => return Err(e),
                },
            };
            let (src, size) = match &p.data {
                Blob::Stored { len, .. } if streamed => (Source::Stored(&p.data), *len),
                _ => (Source::Bytes(&data), data.len() as u64),
            };
            let name = deliver_once(cx, &dir, &ctx.id, i, &p.filename, src).await?;
            let path = dir.join(&name);
            let mut headers = vec![
                ("as2-from".to_string(), ctx.request.as2_from.clone()),
                ("as2-to".to_string(), ctx.request.as2_to.clone()),
                ("message-id".to_string(), ctx.request.message_id.clone()),
                ("filename".to_string(), name.clone()),
                ("content-type".to_string(), p.content_type.clone()),
                ("station".to_string(), ctx.station.clone()),
                ("partner".to_string(), ctx.partner.clone()),
                ("size".to_string(), size.to_string()),
            ];
            if let Some(b) = cx.buckets.get(&ctx.station).filter(|b| b.inbound) {
                let station_as2 = &ctx.request.as2_to;
                let test = cx.directory.partner(station_as2, &ctx.request.as2_from).is_some_and(|p| p.test);
                let msg = safe_component(ctx.request.bare_message_id());
                let file = match b.folders {
                    crate::FolderStructure::Subfolder => format!("{msg}/{name}"),
                    crate::FolderStructure::Prefix => format!("{msg}_{name}"),
                };
                let key = format!("as2gateway/{}/{}/{}inbox/{file}", station_as2, ctx.request.as2_from, if test { "test/" } else { "" });
                let put = if streamed { b.store.put_file(&key, &path).await } else { b.store.put(&key, data.clone()).await };
                put.map_err(|e| ActorError::Transient(e.to_string()))?;
                headers.push(("s3-key".to_string(), key));
            }
            let body = if !streamed && data.len() <= cx.limits.inline_threshold {
                data
            } else {
                headers.push(("path".to_string(), path.display().to_string()));
                Vec::new()
            };
            let message_id = format!("{}.{}", ctx.id, i);
            outs.push(Out::Publish { exchange: queues::INBOUND_EXCHANGE, routing_key: format!("{}.{}", ctx.station, ctx.partner), message_id, headers, body });
            names.push(name);
        }
        outs.push(Out::Status { id: ctx.id.clone(), status: "delivered", detail: names.join(", ") });
        // The documents are safe in the inbox: drop the working copies and the raw request, once
        // this input is recorded as handled (a redelivery before that still reads them).
        let mut prefixes = Vec::new();
        if payloads.iter().any(|p| matches!(p.data, Blob::Stored { .. })) || ctx.raw_len > cx.limits.inline_threshold as u64 {
            prefixes.push(format!("work/{}/", ctx.id));
        }
        let keys = if ctx.raw.is_some() { Vec::new() } else { vec![ctx.raw_key.clone()] };
        outs.push(Out::DropBlobs { prefixes, keys });
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn candidate_names_are_distinct_and_keep_the_file_name() {
        let names: Vec<String> = super::candidates("0123456789abcdef", 2, "po.edi").take(6).collect();
        assert_eq!(names[..3], ["po.edi", "0123456789ab_po.edi", "0123456789ab_2_po.edi"]);
        assert!(names.iter().all(|n| n.ends_with("po.edi")));
        let set: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(set.len(), names.len());
    }
}
