//! Decryptor: opens EnvelopedData / AuthEnvelopedData with the station's decryption keys, takes
//! the MIC of an unsigned message over the decrypted entity, and hands the content to the stage of
//! its next layer ([`crate::mime_unwrapper::route`]).

use crate::mime_unwrapper::{fail, route, unsigned_mic_alg};
use crate::{queues, Actor, Binding, ActorError, NodeContext, Out};
use edinode_proto::envelope::Decrypt;
use edinode_proto::error::ProcessingError;
use edinode_proto::unwrap;

pub struct Decryptor;

impl Actor for Decryptor {
    const BINDING: Binding = Binding::new("decryptor", queues::DECRYPTOR);
    type Input = Decrypt;

    async fn handle(&self, cx: &NodeContext, Decrypt { mut ctx, entity }: Decrypt) -> Result<Vec<Out>, ActorError> {
        crate::describe(&ctx);
        let Some(bytes) = cx.small(&entity).await? else {
            return crate::streamed::decrypt(cx, ctx, entity).await;
        };
        let Some(station) = cx.directory.station_by_as2(&ctx.request.as2_to) else {
            return fail(ctx, &ProcessingError::Decryption("station no longer configured".into()));
        };
        let keys = station.decryption.clone();
        let limits = cx.limits.mime;
        // Encrypted first: an unsigned message's MIC is over the entity as decrypted.
        let mic_alg = ctx.security.unsigned_mic_due().then(|| unsigned_mic_alg(&ctx));
        let result = cx.cpu.run(move || unwrap::decrypt_layer(bytes, &keys, mic_alg, &limits)).await?;
        match result {
            Ok(inner) => {
                if inner.mic.is_some() {
                    ctx.security.mic = inner.mic;
                }
                ctx.security.encrypted = true;
                ctx.security.depth += 1;
                let status = Out::Status { id: ctx.id.clone(), status: "decrypted", detail: format!("by {}", cx.node_id) };
                let mut outs = route(cx, ctx, inner.entity, None).await?;
                outs.push(status);
                Ok(outs)
            }
            Err(e) => fail(ctx, &e),
        }
    }
}
