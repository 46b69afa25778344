//! Floors under a receiver's CPU per message, measured on one thread in the bench process:
//! - floor: the two RSA-2048 private-key operations a signed + encrypted message with a signed
//!   MDN cannot do without (decrypt the content-encryption key, sign the MDN), per-iteration
//!   thread CPU time, median of many iterations;
//! - proto: the edinode_proto steps for the same message (MIME classification, decrypt,
//!   verify, signed MDN), median thread CPU time.

use crate::common::*;
use edinode_proto::alg::DigestAlg;
use edinode_proto::cms::SignOptions;
use openssl::hash::MessageDigest;
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use std::time::Duration;

pub struct StepCost {
    pub name: &'static str,
    pub ms: f64,
}

/// Median thread CPU time of `f` over `iters` calls (after one to warm up), in ms.
pub fn time_op(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<Duration> = (0..iters.max(1))
        .map(|_| {
            let t0 = thread_cpu();
            f();
            thread_cpu() - t0
        })
        .collect();
    median_ms(&mut times)
}

pub fn proto_costs(keys: &Keys, msg: &As2Message) -> Vec<StepCost> {
    use edinode_proto::mdn::{self, MdnContent, MdnIds, MdnSigner};
    use edinode_proto::mime::{Header, MimeLimits};
    use edinode_proto::unwrap;
    let limits = MimeLimits::default();
    let h = |n: &str, v: &str| Header { name: n.to_string(), value: v.to_string() };
    let headers = vec![h("Content-Type", "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m")];
    let layer0 = unwrap::entity_from_http(&headers, &msg.body);
    let dkeys = vec![(keys.station.key.clone(), keys.station.cert.clone())];
    let signed = unwrap::decrypt(&layer0, &dkeys, &limits).expect("decrypt");
    let trusted = vec![keys.client.cert.clone()];
    let verified = unwrap::verify(&signed, &trusted, Some(DigestAlg::Sha256), &limits).expect("verify");
    assert_eq!(verified.mic.digest, msg.mic, "MIC computed by the proto crate differs from the client's");
    let n = 300;
    let mut out = vec![
        StepCost { name: "classify (MIME parse)", ms: time_op(n, || drop(unwrap::classify(&layer0, &limits))) },
        StepCost { name: "decrypt (RSA-2048 private + AES)", ms: time_op(n, || drop(unwrap::decrypt(&layer0, &dkeys, &limits).expect("decrypt"))) },
        StepCost { name: "verify (RSA-2048 public, MIC)", ms: time_op(n, || drop(unwrap::verify(&signed, &trusted, Some(DigestAlg::Sha256), &limits).expect("verify"))) },
    ];
    let disposition = edinode_proto::error::Disposition::Processed;
    let content = MdnContent {
        reporting_ua: "edinode",
        station: "edinode",
        partner: "bench",
        original_message_id: "<bench@bench.client>",
        mic: Some(&verified.mic),
        disposition: &disposition,
        text: "The AS2 message has been processed.",
        spelling: Default::default(),
    };
    let ids = MdnIds { message_id: "<mdn@edinode>", report_boundary: "----=_report_x", signed_boundary: "----=_signed_x", date: "Sat, 21 Nov 2026 00:00:00 GMT" };
    let signer = MdnSigner { key: &keys.station.key, cert: &keys.station.cert, digest: DigestAlg::Sha256, opts: SignOptions::default() };
    out.push(StepCost { name: "signed MDN (RSA-2048 private)", ms: time_op(n, || drop(mdn::build(&content, &ids, Some(&signer)).expect("mdn"))) });
    let data = vec![0u8; 32];
    let rsa = keys.station.key.clone();
    out.push(StepCost {
        name: "bare RSA-2048 sign (reference)",
        ms: time_op(n, || {
            let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), &rsa).expect("signer");
            s.update(&data).expect("update");
            drop(s.sign_to_vec().expect("sign"));
        }),
    });
    out
}

/// The RSA floor: medians over `iters` iterations of thread CPU time.
pub struct RsaFloor {
    pub iters: usize,
    /// RSA-2048 PKCS#1 v1.5 decryption of a 32-byte key (the KeyTransRecipientInfo).
    pub decrypt_ms: f64,
    /// RSA-2048 PKCS#1 v1.5 signature with SHA-256 (the MDN's SignerInfo).
    pub sign_ms: f64,
    /// Both in one iteration: the floor per message.
    pub ms: f64,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v.get(v.len() / 2).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN)
}

pub fn rsa_floor(keys: &Keys, iters: usize) -> RsaFloor {
    let iters = iters.max(1);
    let key = &keys.station.key;
    // A 256-bit content-encryption key wrapped for the station, as the sender wraps it.
    let cek = [0x5au8; 32];
    let public = keys.station.cert.public_key().expect("public key");
    let mut wrap = PkeyCtx::new(&public).expect("ctx");
    wrap.encrypt_init().expect("encrypt init");
    wrap.set_rsa_padding(Padding::PKCS1).expect("padding");
    let mut wrapped = Vec::new();
    wrap.encrypt_to_vec(&cek, &mut wrapped).expect("wrap");
    let decrypt = || {
        let mut ctx = PkeyCtx::new(key).expect("ctx");
        ctx.decrypt_init().expect("decrypt init");
        ctx.set_rsa_padding(Padding::PKCS1).expect("padding");
        let mut out = Vec::new();
        ctx.decrypt_to_vec(&wrapped, &mut out).expect("unwrap");
        assert_eq!(out, cek);
    };
    // What an MDN's SignerInfo signs: the DER signed attributes, about 100-200 bytes.
    let attrs = [0x31u8; 160];
    let sign = || {
        let mut s = openssl::sign::Signer::new(MessageDigest::sha256(), key).expect("signer");
        s.update(&attrs).expect("update");
        drop(s.sign_to_vec().expect("sign"));
    };
    for _ in 0..20 {
        decrypt();
        sign();
    }
    let (mut d, mut s, mut both) = (Vec::with_capacity(iters), Vec::with_capacity(iters), Vec::with_capacity(iters));
    for _ in 0..iters {
        let t0 = thread_cpu();
        decrypt();
        let t1 = thread_cpu();
        sign();
        let t2 = thread_cpu();
        d.push(t1 - t0);
        s.push(t2 - t1);
        both.push(t2 - t0);
    }
    let f = RsaFloor { iters, decrypt_ms: median_ms(&mut d), sign_ms: median_ms(&mut s), ms: median_ms(&mut both) };
    eprintln!("RSA floor: {:.3} ms per message (decrypt the CEK {:.3} + sign the MDN {:.3}), median of {iters} iterations of thread CPU time", f.ms, f.decrypt_ms, f.sign_ms);
    f
}

pub fn print(costs: &[StepCost], rsa: Option<&RsaFloor>) {
    if let Some(f) = rsa {
        println!();
        println!(
            "RSA floor: the two RSA-2048 private-key operations of a signed + encrypted message with a signed MDN, one thread in the bench process (OpenSSL through the openssl crate), thread CPU time, median of {} iterations:",
            f.iters
        );
        println!();
        println!("| Operation | CPU ms |");
        println!("|---|---:|");
        println!("| decrypt the content-encryption key (RSA-2048 PKCS#1 v1.5) | {:.3} |", f.decrypt_ms);
        println!("| sign the MDN (RSA-2048 PKCS#1 v1.5, SHA-256) | {:.3} |", f.sign_ms);
        println!("| **floor per message (both, median of the pairs)** | **{:.3}** |", f.ms);
    }
    if !costs.is_empty() {
        let sum: f64 = costs.iter().filter(|c| !c.name.contains("reference")).map(|c| c.ms).sum();
        println!();
        println!("Protocol work alone for the same message (edinode_proto, one thread in the bench process, no IO, median thread CPU time of 300 calls):");
        println!();
        println!("| Step | CPU ms |");
        println!("|---|---:|");
        for c in costs {
            println!("| {} | {:.3} |", c.name, c.ms);
        }
        println!("| **sum of the steps (proto cost per message)** | **{sum:.3}** |");
    }
}
