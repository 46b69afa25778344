//! MimeUnwrapper: looks at the current entity and routes it to the actor that opens its layer
//! (Decryptor, Verifier); decompresses in place (cheap, bounded); and once no layer is left,
//! checks the partner's policy and duplicates, and hands the documents to the Deliverer and the
//! outcome to the MdnSender.
//!
//! The routing is [`route`]: the Decryptor and the Verifier call it on what they opened, so a
//! layer goes straight to the stage that opens the next one (a signed+encrypted message takes
//! four queue hops: receiver -> Decryptor -> Verifier -> Deliverer + MdnSender), and the
//! HttpReceiver sends a first entity whose head says what it is straight to its stage. The
//! MimeUnwrapper's own queue takes what cannot be told without reading it (a large body kept
//! as a blob, a compressed or unprotected first entity).

use crate::{queues, Actor, Binding, ActorError, Claim, NodeContext, Out};
use edinode_proto::alg::DigestAlg;
use edinode_proto::envelope::{Blob, Conclude, Decrypt, Deliver, Inbound, Payload, Unwrap, Verify};
use edinode_proto::error::{Disposition, ProcessingError};
use edinode_proto::unwrap::{self, mic, Step};

pub struct MimeUnwrapper;

/// Conclude a message with a processing error (an error MDN follows).
pub fn fail(ctx: Inbound, err: &ProcessingError) -> Result<Vec<Out>, ActorError> {
    tracing::warn!(message = "Message processing failed.", id = %ctx.id, partner = %ctx.partner, error = %err);
    Ok(vec![Out::send(queues::MDN_SENDER, &crate::mdn_sender::MdnSenderInput::Conclude(Conclude {
        ctx,
        disposition: err.disposition(),
        reason: Some(err.to_string()),
    }))?])
}

/// The MIC algorithm to report: the first supported one the sender asked for.
pub(crate) fn requested_mic_alg(ctx: &Inbound) -> Option<DigestAlg> {
    ctx.request.mdn.as_ref().and_then(|m| m.preferred_micalg())
}

/// The MIC algorithm of an unsigned message: the requested one, else sha1.
pub(crate) fn unsigned_mic_alg(ctx: &Inbound) -> DigestAlg {
    requested_mic_alg(ctx).unwrap_or(DigestAlg::Sha1)
}

/// What the partner agreement requires of the message's security (checked once no layer is
/// left).
pub(crate) fn check_policy(cx: &NodeContext, ctx: &Inbound) -> Result<(), ProcessingError> {
    let Some(partner) = cx.directory.partner(&ctx.request.as2_to, &ctx.request.as2_from) else {
        return Err(ProcessingError::Unexpected("partner no longer configured".into()));
    };
    let policy = &partner.policy;
    if policy.require_signed && ctx.security.signer.is_none() {
        return Err(ProcessingError::InsufficientSecurity("the partner agreement requires signed messages".into()));
    }
    if policy.require_encrypted && !ctx.security.encrypted {
        return Err(ProcessingError::InsufficientSecurity("the partner agreement requires encrypted messages".into()));
    }
    Ok(())
}

/// The duplicate check: Some(outs) concludes a message seen before (a warning MDN, nothing
/// delivered).
pub(crate) async fn duplicate(cx: &NodeContext, ctx: &Inbound) -> Result<Option<Vec<Out>>, ActorError> {
    let key = format!("dup:{}:{}:{}", ctx.request.as2_to, ctx.request.as2_from, ctx.request.message_id);
    match cx.state.claim(&key, &ctx.id, cx.limits.duplicate_ttl_secs).await? {
        Claim::Duplicate { first } => {
            tracing::info!(message = "Duplicate message; not delivered again.", id = %ctx.id, first = %first, message_id = %ctx.request.message_id);
            Ok(Some(vec![Out::send(queues::MDN_SENDER, &crate::mdn_sender::MdnSenderInput::Conclude(Conclude {
                ctx: ctx.clone(),
                disposition: Disposition::Warning(Disposition::DUPLICATE.into()),
                reason: Some(format!("duplicate of reception {first}")),
            }))?]))
        }
        Claim::New => Ok(None),
    }
}

/// The documents to the Deliverer, the outcome to the MdnSender.
pub(crate) fn conclude(ctx: Inbound, payloads: Vec<Payload>) -> Result<Vec<Out>, ActorError> {
    Ok(vec![
        // The Deliverer does not need the raw capture (a delivered message drops it).
        Out::send(queues::DELIVERER, &Deliver { ctx: Inbound { raw: None, ..ctx.clone() }, payloads })?,
        Out::send(queues::MDN_SENDER, &crate::mdn_sender::MdnSenderInput::Conclude(Conclude { ctx, disposition: Disposition::Processed, reason: None }))?,
    ])
}

/// No layer is left: policy, duplicates, the documents to the Deliverer, the outcome to the
/// MdnSender.
async fn finish(cx: &NodeContext, mut ctx: Inbound, entity: Vec<u8>) -> Result<Vec<Out>, ActorError> {
    if let Err(e) = check_policy(cx, &ctx) {
        return fail(ctx, &e);
    }
    if ctx.security.mic.is_none() {
        // Not reached (the outermost layer sets a MIC); the content MIC is the safe answer.
        ctx.security.mic = Some(mic::content_mic(&entity, unsigned_mic_alg(&ctx), &cx.limits.mime));
    }
    let docs = match unwrap::documents(&entity, &cx.limits.mime) {
        Ok(d) => d,
        Err(e) => return fail(ctx, &e),
    };
    if let Some(outs) = duplicate(cx, &ctx).await? {
        return Ok(outs);
    }
    let bare = ctx.request.bare_message_id().to_string();
    let n = docs.len();
    let mut payloads = Vec::with_capacity(n);
    for (i, d) in docs.into_iter().enumerate() {
        let filename = d.filename.clone().unwrap_or_else(|| default_filename(&bare, i, n, &d.content_type));
        let data = cx.blob(&ctx, &format!("doc{i}"), d.data).await?;
        payloads.push(Payload { filename, content_type: d.content_type, data });
    }
    conclude(ctx, payloads)
}

/// A file name for a document that came without one: from the Message-ID, made safe.
pub(crate) fn default_filename(message_id: &str, index: usize, count: usize, content_type: &str) -> String {
    let safe: String = message_id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).take(150).collect();
    let ext = match content_type {
        "application/edi-x12" | "application/edifact" | "application/edi-consent" => "edi",
        "application/xml" | "text/xml" => "xml",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => "bin",
    };
    if count > 1 { format!("{safe}_{index}.{ext}") } else { format!("{safe}.{ext}") }
}

impl Actor for MimeUnwrapper {
    const BINDING: Binding = Binding::new("mime_unwrapper", queues::MIME_UNWRAPPER);
    type Input = Unwrap;

    async fn handle(&self, cx: &NodeContext, Unwrap { ctx, entity }: Unwrap) -> Result<Vec<Out>, ActorError> {
        crate::describe(&ctx);
        let Some(bytes) = cx.small(&entity).await? else {
            return crate::streamed::open(cx, ctx, entity).await;
        };
        route(cx, ctx, bytes, Some(entity)).await
    }
}

/// The stage for an entity whose layer `step` says what it is, with the entity as its input.
pub(crate) fn hand_off(ctx: Inbound, entity: Blob, step: &Step) -> Result<Out, ActorError> {
    match step {
        Step::Decrypt => Out::send(queues::DECRYPTOR, &Decrypt { ctx, entity }),
        Step::Verify => Out::send(queues::VERIFIER, &Verify { ctx, entity }),
        Step::Decompress | Step::Payload => Out::send(queues::MIME_UNWRAPPER, &Unwrap { ctx, entity }),
    }
}

/// Open what can be opened here (compression) and hand the entity to the stage of its next
/// layer, or conclude the message when no layer is left. `blob` is where `bytes` is stored
/// already, if it is.
pub async fn route(cx: &NodeContext, mut ctx: Inbound, mut bytes: Vec<u8>, mut blob: Option<Blob>) -> Result<Vec<Out>, ActorError> {
    loop {
        if ctx.security.depth > cx.limits.max_depth {
            return fail(ctx, &ProcessingError::Unexpected(format!("more than {} nested layers", cx.limits.max_depth)));
        }
        let step = match unwrap::classify(&bytes, &cx.limits.mime) {
            Ok(s) => s,
            Err(e) => return fail(ctx, &e),
        };
        match step {
            Step::Decrypt | Step::Verify => {
                // Stored only now, when another stage takes it (inline when small).
                let current = match blob.take() {
                    Some(b) => b,
                    None => cx.blob(&ctx, &format!("layer{}", ctx.security.depth), bytes).await?,
                };
                return Ok(vec![hand_off(ctx, current, &step)?]);
            }
            Step::Decompress => {
                let stored = blob.take();
                // In memory up to a few times the streaming threshold; beyond, it streams.
                let cap = cx.limits.max_decompressed.min(cx.limits.stream_threshold.saturating_mul(4));
                let limits = cx.limits.mime;
                // Compressed first, not encrypted: an unsigned message's MIC is over the
                // compressed data as received.
                let mic_alg = ctx.security.unsigned_mic_due().then(|| unsigned_mic_alg(&ctx));
                let (opened, mic, bytes_back) = cx
                    .cpu
                    .run(move || {
                        let opened = unwrap::decompress_within(&bytes, cap, &limits);
                        let mic = matches!(opened, Ok(Some(_))).then(|| mic_alg.map(|a| mic::content_mic(&bytes, a, &limits))).flatten();
                        (opened, mic, bytes)
                    })
                    .await?;
                let opened = match opened {
                    Ok(Some(b)) => b,
                    Ok(None) if cap < cx.limits.max_decompressed => {
                        let entity = match stored {
                            Some(b @ Blob::Stored { .. }) => b,
                            _ => {
                                let key = format!("work/{}/stream-{}-compressed", ctx.id, ctx.security.depth);
                                let len = bytes_back.len() as u64;
                                cx.blobs.put(&key, &bytes_back).await?;
                                Blob::Stored { key, len }
                            }
                        };
                        return crate::streamed::open(cx, ctx, entity).await;
                    }
                    Ok(None) => return fail(ctx, &ProcessingError::Decompression(format!("decompressed data exceeds the limit of {} bytes", cx.limits.max_decompressed))),
                    Err(e) => return fail(ctx, &e),
                };
                if mic.is_some() {
                    ctx.security.mic = mic;
                }
                bytes = opened;
                ctx.security.compressed = true;
                ctx.security.depth += 1;
            }
            Step::Payload => {
                if ctx.security.unsigned_mic_due() {
                    // Neither encrypted nor signed: the MIC is over the content.
                    ctx.security.mic = Some(mic::content_mic(&bytes, unsigned_mic_alg(&ctx), &cx.limits.mime));
                }
                return finish(cx, ctx, bytes).await;
            }
        }
    }
}
