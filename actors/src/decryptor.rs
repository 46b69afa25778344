//! Decryptor: opens EnvelopedData / AuthEnvelopedData with the station's decryption keys and
//! sends the content back to the MimeUnwrapper.

use crate::mime_unwrapper::{fail, next};
use crate::{queues, Actor, ActorError, NodeContext, Out};
use edinode_proto::envelope::Decrypt;
use edinode_proto::error::ProcessingError;
use edinode_proto::unwrap;

pub struct Decryptor;

#[async_trait::async_trait]
impl Actor for Decryptor {
    const NAME: &'static str = "decryptor";
    const QUEUE: &'static str = queues::DECRYPTOR;
    type Input = Decrypt;

    async fn handle(&self, cx: &NodeContext, input: Decrypt) -> Result<Vec<Out>, ActorError> {
        let Decrypt { mut ctx, entity } = input;
        crate::describe(&ctx);
        let bytes = cx.load(&entity).await?;
        let Some(station) = cx.directory.station_by_as2(&ctx.request.as2_to) else {
            return fail(ctx, &ProcessingError::Decryption("station no longer configured".into()));
        };
        let keys = station.decryption.clone();
        let limits = cx.limits.mime;
        let result = cx.cpu.run(move || unwrap::decrypt_owned(bytes, &keys, &limits)).await?;
        match result {
            Ok(inner) => {
                ctx.security.encrypted = true;
                ctx.security.depth += 1;
                let blob = cx.blob(&ctx, &format!("layer{}", ctx.security.depth), inner).await?;
                cx.status(&ctx.id, "decrypted", &format!("by {}", cx.node_id)).await;
                Ok(vec![next(ctx, blob)?])
            }
            Err(e) => fail(ctx, &e),
        }
    }
}
