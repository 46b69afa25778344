//! MdnSender: turns a message's outcome into an MDN (signed when asked, with the first MIC
//! algorithm we support from the sender's list), then answers the waiting HTTP request
//! (synchronous) or queues it for the MdnPoster (asynchronous: `edinode.mdn_post`).

use crate::{queues, Actor, Binding, ActorError, NodeContext, Out};
use edinode_proto::alg::DigestAlg;
use edinode_proto::cms::SignOptions;
use edinode_proto::envelope::{AsyncMdn, Conclude, Reply};
use edinode_proto::mdn::{self, MdnContent, MdnIds, MdnSigner};
use serde::{Deserialize, Serialize};

/// The MdnSender's inputs: an outcome to answer, or a built asynchronous MDN to POST.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MdnSenderInput {
    Conclude(Conclude),
    Post(AsyncMdn),
}

pub struct MdnSender;

/// The outcome says the sender's signature did not prove who it is.
fn failed_authentication(d: &edinode_proto::error::Disposition) -> bool {
    use edinode_proto::error::Disposition;
    matches!(d, Disposition::Error(m) | Disposition::Failed(m) if m == "authentication-failed" || m == "integrity-check-failed")
}

impl MdnSender {
    fn build(cx: &NodeContext, c: &Conclude) -> Result<Option<mdn::BuiltMdn>, ActorError> {
        let Some(req) = c.ctx.request.mdn.as_ref() else { return Ok(None) };
        let station = cx.directory.station_by_as2(&c.ctx.request.as2_to);
        let partner = cx.directory.partner(&c.ctx.request.as2_to, &c.ctx.request.as2_from);
        let policy = partner.map(|p| p.policy.clone()).unwrap_or_default();
        let text = match &c.reason {
            Some(r) => format!("The AS2 message {} could not be processed: {}", c.ctx.request.message_id, r),
            None => format!(
                "The AS2 message {} received from {} has been processed. This is not a guarantee that the content has been read or understood.",
                c.ctx.request.message_id, c.ctx.request.as2_from
            ),
        };
        let content = MdnContent {
            reporting_ua: &cx.reporting_ua,
            station: &c.ctx.request.as2_to,
            partner: &c.ctx.request.as2_from,
            original_message_id: &c.ctx.request.message_id,
            mic: c.ctx.security.mic.as_ref(),
            disposition: &c.disposition,
            text: &text,
            spelling: policy.mic_spelling,
        };
        // Derived from the reception: however often the outcome is redelivered or the MDN resent,
        // the partner sees one MDN Message-ID for its message.
        let uid = c.ctx.id.clone();
        let host: String = c.ctx.request.as2_to.chars().filter(|ch| ch.is_ascii_alphanumeric() || *ch == '.' || *ch == '-').collect();
        let message_id = format!("<mdn-{uid}@{}>", if host.is_empty() { "edinode" } else { &host });
        let rb = format!("----=_report_{uid}");
        let sb = format!("----=_signed_{uid}");
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let ids = MdnIds { message_id: &message_id, report_boundary: &rb, signed_boundary: &sb, date: &date };
        // We sign only for a sender proven as far as its agreement asks: a message whose
        // signature failed, or that lacks the signature its partner agreement requires, gets an
        // unsigned MDN (as Mendelson answers), so an unauthenticated caller never makes us sign.
        let proven = c.ctx.security.signer.is_some() || (!policy.require_signed && !failed_authentication(&c.disposition));
        let built = match (req.signed && proven, station) {
            (true, Some(st)) => {
                let digest = req.preferred_micalg().unwrap_or(DigestAlg::Sha256);
                let signer = MdnSigner {
                    key: &st.signing_key,
                    cert: &st.signing_cert,
                    digest,
                    opts: SignOptions { padding: policy.mdn_padding, algorithm_protection: policy.algorithm_protection, ..SignOptions::default() },
                };
                mdn::build(&content, &ids, Some(&signer))
            }
            _ => mdn::build(&content, &ids, None),
        };
        built.map(Some).map_err(|e| ActorError::Permanent(format!("cannot build MDN: {e}")))
    }
}

impl Actor for MdnSender {
    const BINDING: Binding = Binding::new("mdn_sender", queues::MDN_SENDER);
    type Input = MdnSenderInput;

    async fn handle(&self, cx: &NodeContext, input: MdnSenderInput) -> Result<Vec<Out>, ActorError> {
        match input {
            MdnSenderInput::Conclude(c) => {
                crate::describe(&c.ctx);
                tracing::Span::current().record("disposition", c.disposition.field_value().as_str());
                if let Some(r) = &c.reason {
                    tracing::Span::current().record("error", r.as_str());
                }
                let outcome = match &c.disposition {
                    edinode_proto::error::Disposition::Processed => "processed".to_string(),
                    edinode_proto::error::Disposition::Warning(m) | edinode_proto::error::Disposition::Error(m) | edinode_proto::error::Disposition::Failed(m) => m.clone(),
                };
                cx.metrics.messages.with_label_values(&["inbound", &c.ctx.station, &c.ctx.partner, &outcome]).inc();
                let duplicate = matches!(&c.disposition, edinode_proto::error::Disposition::Warning(w) if w == edinode_proto::error::Disposition::DUPLICATE);
                if let Some(raw) = c.ctx.raw.as_ref().filter(|_| c.disposition != edinode_proto::error::Disposition::Processed && !duplicate) {
                    // A failure's capture is kept for diagnosis (it travelled with the message).
                    cx.blobs.put(&c.ctx.raw_key, raw).await?;
                }
                let status = if c.disposition.is_positive() { "processed" } else { "failed" };
                let detail = c.reason.clone().unwrap_or_else(|| c.disposition.field_value());
                cx.annotate_and_status(&c.ctx.id, &[("disposition", c.disposition.field_value()), ("reason", c.reason.clone().unwrap_or_default())], status, &detail).await;
                let cx2 = cx.clone();
                let c2 = c.clone();
                let built = cx.cpu.run(move || MdnSender::build(&cx2, &c2)).await??;
                let mut outs = Vec::new();
                match (&c.ctx.reply, c.ctx.request.mdn.as_ref().and_then(|m| m.async_url.clone())) {
                    (_, Some(url)) => {
                        if let Some(mdn) = built {
                            let ctx = edinode_proto::envelope::Inbound { raw: None, ..c.ctx.clone() };
                            outs.push(Out::send(queues::MDN_POST, &AsyncMdn { ctx, url, mdn })?);
                        }
                    }
                    (Some(route), None) => {
                        let reply = Reply { correlation: route.correlation.clone(), status: 200, mdn: built };
                        let body = edinode_proto::envelope::encode(&reply).map_err(ActorError::Permanent)?;
                        outs.push(Out::Reply { queue: route.queue.clone(), body });
                        outs.push(Out::Status { id: c.ctx.id.clone(), status: "mdn-sent", detail: "sync".into() });
                    }
                    (None, None) => {}
                }
                if c.disposition != edinode_proto::error::Disposition::Processed {
                    // No delivery follows: the working copies go now. A duplicate's raw capture
                    // too (the first reception has its own); a failed one's stays for diagnosis.
                    let keys = if duplicate && c.ctx.raw.is_none() { vec![c.ctx.raw_key.clone()] } else { Vec::new() };
                    outs.push(Out::DropBlobs { prefixes: vec![format!("work/{}/", c.ctx.id)], keys });
                }
                Ok(outs)
            }
            // Queued by an earlier version of this stage: hand it to the MdnPoster.
            MdnSenderInput::Post(m) => Ok(vec![Out::send(queues::MDN_POST, &m)?]),
        }
    }
}
