//! What the proto integration tests share: edinode's inbound side, in memory.

use edinode_proto::alg::DigestAlg;
use edinode_proto::mdn::Mic;
use edinode_proto::mime::MimeLimits;
use edinode_proto::unwrap::{self, Step};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// What edinode's inbound side makes of an entity: the loop of actors/src/mime_unwrapper.rs
/// (and the Verifier / Decryptor it routes to), with the MIC rule of the actors (`Security`).
/// `requested`: the signed-receipt-micalg asked for; `unsigned_default` stands in for the
/// actor's fallback algorithm. Returns the documents, the MIC and the steps taken.
pub fn open_in_memory(entity: Vec<u8>, keys: &[(PKey<Private>, X509)], trusted: &[X509], requested: Option<DigestAlg>, unsigned_default: DigestAlg) -> (Vec<unwrap::Document>, Mic, Vec<Step>) {
    let limits = MimeLimits::default();
    let unsigned_alg = requested.unwrap_or(unsigned_default);
    let mut entity = entity;
    let mut security = edinode_proto::envelope::Security::default();
    let mut steps = Vec::new();
    for _ in 0..10 {
        let step = unwrap::classify(&entity, &limits).unwrap();
        steps.push(step.clone());
        let mic_due = security.unsigned_mic_due().then_some(unsigned_alg);
        match step {
            Step::Decrypt => {
                let d = unwrap::decrypt_layer(entity, keys, mic_due, &limits).unwrap();
                security.mic = d.mic.or(security.mic);
                entity = d.entity;
            }
            Step::Verify => {
                let v = unwrap::verify(&entity, trusted, requested, &limits).unwrap();
                security.signed_by(v.signer_thumbprint.clone(), v.mic.clone());
                entity = v.inner;
            }
            Step::Decompress => {
                security.mic = mic_due.map(|a| unwrap::mic::content_mic(&entity, a, &limits)).or(security.mic);
                entity = unwrap::decompress(&entity, 1 << 30, &limits).unwrap();
            }
            Step::Payload => {
                security.mic = mic_due.map(|a| unwrap::mic::content_mic(&entity, a, &limits)).or(security.mic);
                break;
            }
        }
        security.depth += 1;
    }
    assert_eq!(steps.last(), Some(&Step::Payload), "unwrapped to a payload");
    let docs = unwrap::documents(&entity, &limits).unwrap();
    (docs, security.mic.expect("the outermost layer sets the MIC"), steps)
}
