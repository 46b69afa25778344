//! Replays the fuzzing corpora (`fuzz/corpus/<target>/`, minimised by `cargo fuzz cmin`) and
//! the generated seeds through the same entry functions the cargo-fuzz targets call, on stable
//! Rust: every input that once found a bug or new coverage stays a regression test. Fails when
//! a corpus folder is missing or empty, so the corpus cannot vanish unnoticed.
//!
//! `EDINODE_WRITE_SEEDS=<dir> cargo test -p edinode-proto --test fuzz_corpus -- --ignored`
//! writes the seeds to `<dir>/<target>/` (the starting corpus for `cargo fuzz run`).

use std::path::{Path, PathBuf};

use edinode_proto::fuzzing::{TARGETS, seeds};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut n = 0;
    for file in entries {
        let path = file.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| entry(&data));
        assert!(result.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    assert!(n > 0, "corpus {} is empty", dir.display());
    n
}

macro_rules! corpus_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            let (target, entry) = TARGETS.iter().copied().find(|(t, _)| *t == stringify!($name)).unwrap();
            let n = replay(target, entry);
            eprintln!("{target}: {n} corpus inputs replayed");
        }
    };
}

corpus_test!(as2_headers);
corpus_test!(mime);
corpus_test!(cms);
corpus_test!(mdn);
corpus_test!(as4);

#[test]
fn every_target_has_a_test_and_seeds() {
    let seeds = seeds().unwrap();
    for (target, entry) in TARGETS {
        assert!(corpus_dir(target).is_dir(), "no corpus folder for {target}");
        let mine: Vec<_> = seeds.iter().filter(|(t, _, _)| *t == target).collect();
        assert!(!mine.is_empty(), "no seeds for {target}");
        for (_, name, bytes) in mine {
            let result = std::panic::catch_unwind(|| entry(bytes));
            assert!(result.is_ok(), "{target}: seed {name} panics");
        }
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand with EDINODE_WRITE_SEEDS=<dir>"]
fn write_seeds() {
    let dir = PathBuf::from(std::env::var_os("EDINODE_WRITE_SEEDS").expect("set EDINODE_WRITE_SEEDS"));
    for (target, name, bytes) in seeds().unwrap() {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed_{name}")), bytes).unwrap();
    }
}

/// The seeds are what they claim to be: messages that decrypt, verify and parse all the way
/// (otherwise the fuzzer would start in front of the layers it should reach).
#[test]
fn seeds_open_all_the_way() {
    use edinode_proto::fuzzing::{FUZZ_CERT_PEM, FUZZ_KEY_PEM};
    use edinode_proto::mime::MimeLimits;
    use edinode_proto::unwrap::{self, Step};
    use openssl::pkey::PKey;
    use openssl::x509::X509;

    let key = PKey::private_key_from_pem(FUZZ_KEY_PEM.as_bytes()).unwrap();
    let cert = X509::from_pem(FUZZ_CERT_PEM.as_bytes()).unwrap();
    let keys = [(key, cert.clone())];
    let trusted = [cert];
    let limits = MimeLimits::default();
    let as4_limits = edinode_proto::as4::Limits::default();
    for (target, name, bytes) in seeds().unwrap() {
        match target {
            "cms" if bytes[0] != 0x30 => {
                let mut b = bytes.clone();
                let mut layers = Vec::new();
                loop {
                    let step = unwrap::classify(&b, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
                    layers.push(step.clone());
                    b = match step {
                        Step::Decrypt => unwrap::decrypt(&b, &keys, &limits),
                        Step::Verify => unwrap::verify(&b, &trusted, None, &limits).map(|v| v.inner),
                        Step::Decompress => unwrap::decompress(&b, 1 << 20, &limits),
                        Step::Payload => break,
                    }
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                }
                assert!(!unwrap::documents(&b, &limits).unwrap().is_empty(), "{name}");
                assert_eq!(layers.len(), name.split('_').filter(|w| ["signed", "encrypted", "compressed"].contains(w)).count() + 1, "{name}: {layers:?}");
            }
            "mdn" => {
                let p = edinode_proto::mdn::parse(&[], &bytes, &trusted, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(p.signed, name.ends_with("signed"), "{name}");
                assert!(p.answers("<fuzz@edinode>"), "{name}");
            }
            "as4" if name != "soap11_comments" => {
                let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
                let ct = std::str::from_utf8(&bytes[..nl]).unwrap();
                let body = &bytes[nl + 1..];
                if name == "pull_response" {
                    let (_, sig) = edinode_proto::as4::user_message::parse_pulled(ct, body, &as4_limits).unwrap();
                    assert!(sig.is_some());
                } else {
                    let inc = edinode_proto::as4::signal::parse(ct, body, &as4_limits).unwrap_or_else(|e| panic!("{name}: {e:?}"));
                    assert_eq!(inc.signed.is_some(), name.ends_with("signed"), "{name}");
                }
            }
            _ => {}
        }
    }
}
