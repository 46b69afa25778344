//! Large messages: a stored entity over `limits.stream_threshold` is never loaded. Each layer
//! streams from its blob through a codec of [`edinode_proto::stream`] on the CPU pool into the
//! next blob ([`NodeContext::stream_through`]), so a stage holds a few MiB whatever the size.
//! The stages call in here when [`NodeContext::streams`] says so; what they decide (routing,
//! policy, the MIC, the dispositions) is the same as for a small message.

use crate::mime_unwrapper::{check_policy, conclude, default_filename, duplicate, fail, hand_off, requested_mic_alg, unsigned_mic_alg};
use crate::{ActorError, BlobWriter, NodeContext, Out};
use edinode_proto::alg::DigestAlg;
use edinode_proto::mdn::Mic;
use edinode_proto::envelope::{Blob, Inbound, Payload};
use edinode_proto::error::ProcessingError;
use edinode_proto::mime::Entity;
use edinode_proto::stream::Codec;
use edinode_proto::stream::pipeline::{BodyMic, DecompressEntity, DecryptEntity, Documents};
use edinode_proto::stream::signed::SignedSplit;
use edinode_proto::unwrap::{self, Step};

/// How much of a stored entity classifying it reads.
const HEAD: usize = 160 * 1024;

/// The key of a streamed layer's output: under the message's working folder (dropped with it)
/// and recognisable as a working copy that can go once the next stage has it.
fn layer_key(ctx: &Inbound, what: &str) -> String {
    format!("stream-{}-{what}", ctx.security.depth)
}

/// Drop a streamed input once this stage's outputs are out (not the received body itself,
/// which the raw capture points to).
fn drop_input(ctx: &Inbound, input: &Blob) -> Option<Out> {
    match input {
        Blob::Stored { key, .. } if key.starts_with(&format!("work/{}/stream-", ctx.id)) => Some(Out::DropBlobs { prefixes: Vec::new(), keys: vec![key.clone()] }),
        _ => None,
    }
}

/// A layer that streams into a new blob and may take an unsigned message's MIC on the way.
trait Peel: Codec + 'static {
    fn mic(&mut self) -> Result<Option<Mic>, ProcessingError>;
}

impl Peel for DecryptEntity {
    fn mic(&mut self) -> Result<Option<Mic>, ProcessingError> {
        DecryptEntity::mic(self)
    }
}

impl Peel for DecompressEntity {
    fn mic(&mut self) -> Result<Option<Mic>, ProcessingError> {
        DecompressEntity::mic(self)
    }
}

/// Take one layer off `entity` into the working blob `what` (`Ok(Err(_))`: the content is
/// refused); the MIC the codec took, if any, becomes the message's.
async fn peel<C: Peel>(cx: &NodeContext, ctx: &mut Inbound, entity: &Blob, what: &str, codec: Result<C, ProcessingError>) -> Result<Result<Blob, ProcessingError>, ActorError> {
    let codec = match codec {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let (mut codec, blob) = match cx.stream_through(ctx, entity, &layer_key(ctx, what), codec).await? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    if let Some(m) = codec.mic().ok().flatten() {
        ctx.security.mic = Some(m);
    }
    ctx.security.depth += 1;
    Ok(Ok(blob))
}

/// Hand a stored entity to the stage of its next layer (its head says which).
pub async fn route(cx: &NodeContext, ctx: Inbound, entity: Blob) -> Result<Vec<Out>, ActorError> {
    if let Some(bytes) = cx.small(&entity).await? {
        return crate::mime_unwrapper::route(cx, ctx, bytes, Some(entity)).await;
    }
    if ctx.security.depth > cx.limits.max_depth {
        return fail(ctx, &ProcessingError::Unexpected(format!("more than {} nested layers", cx.limits.max_depth)));
    }
    let head = cx.head(&entity, HEAD).await?;
    match unwrap::classify(&head, &cx.limits.mime) {
        Ok(step) => Ok(vec![hand_off(ctx, entity, &step)?]),
        Err(e) => fail(ctx, &e),
    }
}

/// The MimeUnwrapper's part: decompress, or split the payload into documents.
pub async fn open(cx: &NodeContext, mut ctx: Inbound, mut entity: Blob) -> Result<Vec<Out>, ActorError> {
    let mut dropped = Vec::new();
    loop {
        if ctx.security.depth > cx.limits.max_depth {
            return fail(ctx, &ProcessingError::Unexpected(format!("more than {} nested layers", cx.limits.max_depth)));
        }
        let head = cx.head(&entity, HEAD).await?;
        let step = match unwrap::classify(&head, &cx.limits.mime) {
            Ok(s) => s,
            Err(e) => return fail(ctx, &e),
        };
        match step {
            Step::Decrypt | Step::Verify => {
                let mut outs = vec![hand_off(ctx.clone(), entity.clone(), &step)?];
                outs.extend(dropped);
                return Ok(outs);
            }
            Step::Decompress => {
                let mic_alg = ctx.security.unsigned_mic_due().then(|| unsigned_mic_alg(&ctx));
                let codec = DecompressEntity::new(cx.limits.max_decompressed as u64, mic_alg, cx.limits.mime);
                let blob = match peel(cx, &mut ctx, &entity, "decompressed", codec).await? {
                    Ok(b) => b,
                    Err(e) => return fail(ctx, &e),
                };
                ctx.security.compressed = true;
                dropped.extend(drop_input(&ctx, &entity));
                entity = blob;
            }
            Step::Payload => {
                let mut outs = documents(cx, ctx, &entity).await?;
                outs.extend(dropped);
                return Ok(outs);
            }
        }
    }
}

/// No layer is left: policy, duplicates, the documents (streamed into one blob each).
async fn documents(cx: &NodeContext, mut ctx: Inbound, entity: &Blob) -> Result<Vec<Out>, ActorError> {
    if let Err(e) = check_policy(cx, &ctx) {
        return fail(ctx, &e);
    }
    if let Some(outs) = duplicate(cx, &ctx).await? {
        return Ok(outs);
    }
    let mut mic = ctx.security.mic.is_none().then(|| BodyMic::new(unsigned_mic_alg(&ctx))).transpose().map_err(|e| ActorError::Permanent(e.to_string()))?;
    let mut docs = Some(Documents::new(cx.limits.mime));
    let mut reader = cx.reader(entity).await?;
    let mut blobs: Vec<Blob> = Vec::new();
    let mut current: Option<(usize, String, Box<dyn BlobWriter + '_>)> = None;
    loop {
        let chunk = reader.next().await?;
        let end = chunk.is_none();
        let (mut d, mut m) = (docs.take(), mic.take());
        let (d, m, pieces) = cx
            .cpu
            .run(move || {
                let mut pieces = Vec::new();
                let r = match (&mut d, &chunk) {
                    (Some(docs), Some(c)) => {
                        if let Some(m) = m.as_mut() {
                            let _ = m.update(c);
                        }
                        docs.push(c, &mut pieces)
                    }
                    (Some(docs), None) => docs.finish(&mut pieces),
                    (None, _) => Ok(()),
                };
                (d, m, r.map(|()| pieces))
            })
            .await?;
        (docs, mic) = (d, m);
        let pieces = match pieces {
            Ok(p) => p,
            Err(e) => return fail(ctx, &e),
        };
        for (i, data) in pieces {
            if current.as_ref().is_none_or(|(n, _, _)| *n != i) {
                if let Some((_, key, w)) = current.take() {
                    let len = w.finish().await?;
                    blobs.push(Blob::Stored { key, len });
                }
                // Documents without a byte in between are empty.
                while blobs.len() < i {
                    blobs.push(Blob::Inline(Vec::new()));
                }
                let key = format!("work/{}/doc{i}", ctx.id);
                let w = cx.blobs.writer(&key).await?;
                current = Some((i, key, w));
            }
            if let Some((_, _, w)) = current.as_mut() {
                w.write(&data).await?;
            }
        }
        if end {
            break;
        }
    }
    if let Some((_, key, w)) = current.take() {
        let len = w.finish().await?;
        blobs.push(Blob::Stored { key, len });
    }
    let heads = docs.as_ref().map(|d| d.heads().to_vec()).unwrap_or_default();
    while blobs.len() < heads.len() {
        blobs.push(Blob::Inline(Vec::new()));
    }
    if let Some(m) = mic.as_mut() {
        ctx.security.mic = m.mic().ok();
    }
    let bare = ctx.request.bare_message_id().to_string();
    let n = heads.len();
    let payloads = heads
        .into_iter()
        .zip(blobs)
        .enumerate()
        .map(|(i, (h, data))| Payload { filename: h.filename.clone().unwrap_or_else(|| default_filename(&bare, i, n, &h.content_type)), content_type: h.content_type, data })
        .collect();
    conclude(ctx, payloads)
}

/// The Decryptor's part.
pub async fn decrypt(cx: &NodeContext, mut ctx: Inbound, entity: Blob) -> Result<Vec<Out>, ActorError> {
    let Some(station) = cx.directory.station_by_as2(&ctx.request.as2_to) else {
        return fail(ctx, &ProcessingError::Decryption("station no longer configured".into()));
    };
    let mic_alg = ctx.security.unsigned_mic_due().then(|| unsigned_mic_alg(&ctx));
    let codec = DecryptEntity::new(station.decryption.clone(), mic_alg, cx.limits.mime);
    let blob = match peel(cx, &mut ctx, &entity, "decrypted", codec).await? {
        Ok(b) => b,
        Err(e) => return fail(ctx, &e),
    };
    ctx.security.encrypted = true;
    let status = Out::Status { id: ctx.id.clone(), status: "decrypted", detail: format!("by {} (streamed)", cx.node_id) };
    let dropped = drop_input(&ctx, &entity);
    let mut outs = route(cx, ctx, blob).await?;
    outs.push(status);
    outs.extend(dropped);
    Ok(outs)
}

/// The digest of a blob in `alg` (a signature digest the signed part was not hashed with as it
/// streamed).
async fn digest(cx: &NodeContext, blob: &Blob, alg: DigestAlg) -> Result<Vec<u8>, ActorError> {
    let mut reader = cx.reader(blob).await?;
    let mut h = Some(openssl::hash::Hasher::new(alg.message_digest()).map_err(|e| ActorError::Permanent(e.to_string()))?);
    while let Some(chunk) = reader.next().await? {
        let mut hasher = h.take();
        h = cx.cpu.run(move || {
            if let Some(x) = hasher.as_mut() {
                let _ = x.update(&chunk);
            }
            hasher
        })
        .await?;
    }
    let mut h = h.ok_or_else(|| ActorError::Permanent("digest lost".into()))?;
    Ok(h.finish().map_err(|e| ActorError::Permanent(e.to_string()))?.to_vec())
}

/// The Verifier's part: the signed part streams to the next blob while it is hashed; then the
/// signature is checked against the digests.
pub async fn verify(cx: &NodeContext, mut ctx: Inbound, entity: Blob) -> Result<Vec<Out>, ActorError> {
    let Some(partner) = cx.directory.partner(&ctx.request.as2_to, &ctx.request.as2_from) else {
        return fail(ctx, &ProcessingError::Authentication("partner no longer configured".into()));
    };
    let certs = partner.verify_certs.clone();
    let accepted = partner.policy.accepted_digests.clone();
    let requested = requested_mic_alg(&ctx);
    let head = cx.head(&entity, HEAD).await?;
    let declared = match Entity::parse(&head, &cx.limits.mime) {
        Ok(e) => SignedSplit::declared_alg(&e.content_type()),
        Err(e) => return fail(ctx, &e.into()),
    };
    let algs: Vec<DigestAlg> = declared.into_iter().chain(requested).collect();
    let codec = match SignedSplit::new(&algs, cx.limits.mime) {
        Ok(c) => c,
        Err(e) => return fail(ctx, &e),
    };
    let (split, blob) = match cx.stream_through(&ctx, &entity, &layer_key(&ctx, "signed"), codec).await? {
        Ok(r) => r,
        Err(e) => return fail(ctx, &e),
    };
    let checked = async {
        let parts = split.into_parts()?;
        let sig = parts.signature(&cx.limits.mime)?;
        Ok::<_, ProcessingError>((parts, sig))
    }
    .await;
    let (mut parts, sig) = match checked {
        Ok(p) => p,
        Err(e) => return fail(ctx, &e),
    };
    let missing = match parts.missing(&sig) {
        Ok(m) => m,
        Err(e) => return fail(ctx, &e),
    };
    for alg in missing {
        // Hashed over the bytes as passed on: the signed part itself unless it was bare content
        // given a header block (then the signature does not match, as in memory).
        parts.add_digest(alg, digest(cx, &blob, alg).await?);
    }
    let v = match cx.cpu.run(move || parts.verify(&sig, &certs, requested)).await? {
        Ok(v) => v,
        Err(e) => return fail(ctx, &e),
    };
    if !accepted.is_empty() && !accepted.contains(&v.digest) {
        return fail(ctx, &ProcessingError::InsufficientSecurity(format!("signature digest {:?} is not accepted for this partner", v.digest)));
    }
    ctx.security.signed_by(v.signer_thumbprint.clone(), v.mic.clone());
    ctx.security.depth += 1;
    let status = Out::Status { id: ctx.id.clone(), status: "verified", detail: format!("signer {} by {} (streamed)", v.signer_thumbprint, cx.node_id) };
    let dropped = drop_input(&ctx, &entity);
    let mut outs = route(cx, ctx, blob).await?;
    outs.push(status);
    outs.extend(dropped);
    Ok(outs)
}
