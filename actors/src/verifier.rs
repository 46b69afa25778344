//! Verifier: checks a signature against the partner's configured certificates (never against a
//! certificate that merely travels inside the message), enforces accepted digests, records the
//! MIC over the signed content as received, and hands the content to the stage of its next
//! layer ([`crate::mime_unwrapper::route`]).

use crate::mime_unwrapper::{fail, route, requested_mic_alg};
use crate::{queues, Actor, Binding, ActorError, NodeContext, Out};
use edinode_proto::envelope::Verify;
use edinode_proto::error::ProcessingError;
use edinode_proto::unwrap;

pub struct Verifier;

impl Actor for Verifier {
    const BINDING: Binding = Binding::new("verifier", queues::VERIFIER);
    type Input = Verify;

    async fn handle(&self, cx: &NodeContext, Verify { mut ctx, entity }: Verify) -> Result<Vec<Out>, ActorError> {
        crate::describe(&ctx);
        let Some(bytes) = cx.small(&entity).await? else {
            return crate::streamed::verify(cx, ctx, entity).await;
        };
        let Some(partner) = cx.directory.partner(&ctx.request.as2_to, &ctx.request.as2_from) else {
            return fail(ctx, &ProcessingError::Authentication("partner no longer configured".into()));
        };
        let certs = partner.verify_certs.clone();
        let accepted = partner.policy.accepted_digests.clone();
        let mic_alg = requested_mic_alg(&ctx);
        let limits = cx.limits.mime;
        let result = cx.cpu.run(move || unwrap::verify(&bytes, &certs, mic_alg, &limits)).await?;
        match result {
            Ok(v) => {
                if !accepted.is_empty() && !accepted.contains(&v.digest) {
                    return fail(ctx, &ProcessingError::InsufficientSecurity(format!("signature digest {:?} is not accepted for this partner", v.digest)));
                }
                ctx.security.signed_by(v.signer_thumbprint.clone(), v.mic.clone());
                ctx.security.depth += 1;
                let status = Out::Status { id: ctx.id.clone(), status: "verified", detail: format!("signer {} by {}", v.signer_thumbprint, cx.node_id) };
                let mut outs = route(cx, ctx, v.inner, None).await?;
                outs.push(status);
                Ok(outs)
            }
            Err(e) => fail(ctx, &e),
        }
    }
}
