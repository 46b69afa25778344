//! Algorithm names, parsed once: digests (MIC and signature), content ciphers, key transport.
//!
//! Partners spell digest names many ways (`sha1`, `SHA-1`, `sha-256`, `sha2-256`, ...); every
//! spelling parses to one [`DigestAlg`], and we answer in the spelling a partner is configured
//! for ([`MicSpelling`]), by default the RFC 5751 names (`sha1`, `sha-256`, ...).

use serde::{Deserialize, Serialize};

/// A message digest algorithm used for MICs and CMS signatures. Read from any spelling
/// [`DigestAlg::parse`] knows (configuration, and the variant names it is written as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum DigestAlg {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// How we write a digest name back to a partner: `rfc5751`, `compact` or `hyphenated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum MicSpelling {
    /// RFC 5751: md5, sha1, sha224, sha-256, sha-384, sha-512... (sha-224 for consistency).
    #[default]
    Rfc5751,
    /// RFC 3851 / older products: md5, sha1, sha256, sha384, sha512.
    Compact,
    /// Some gateways: sha-1, sha-256 (hyphenated everything).
    Hyphenated,
}

from_words!(MicSpelling: "rfc5751" => Rfc5751, "compact" => Compact, "hyphenated" => Hyphenated);

impl DigestAlg {
    pub const ALL: [DigestAlg; 6] = [
        DigestAlg::Md5,
        DigestAlg::Sha1,
        DigestAlg::Sha224,
        DigestAlg::Sha256,
        DigestAlg::Sha384,
        DigestAlg::Sha512,
    ];

    /// Parse any common spelling (case-insensitive, surrounding whitespace ignored).
    pub fn parse(name: &str) -> Option<DigestAlg> {
        let n: String = name
            .trim()
            .trim_matches('"')
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_' && *c != ' ')
            .collect();
        Some(match n.as_str() {
            "md5" | "rsamd5" => DigestAlg::Md5,
            "sha1" | "sha" | "rsasha1" => DigestAlg::Sha1,
            "sha224" | "sha2224" => DigestAlg::Sha224,
            "sha256" | "sha2256" | "rsasha256" => DigestAlg::Sha256,
            "sha384" | "sha2384" | "rsasha384" => DigestAlg::Sha384,
            "sha512" | "sha2512" | "rsasha512" => DigestAlg::Sha512,
            _ => return None,
        })
    }

    /// The name as we write it to a partner.
    pub fn name(self, spelling: MicSpelling) -> &'static str {
        use DigestAlg::*;
        match (spelling, self) {
            (_, Md5) => "md5",
            (MicSpelling::Hyphenated, Sha1) => "sha-1",
            (_, Sha1) => "sha1",
            (MicSpelling::Compact, Sha224) => "sha224",
            (_, Sha224) => "sha-224",
            (MicSpelling::Compact, Sha256) => "sha256",
            (_, Sha256) => "sha-256",
            (MicSpelling::Compact, Sha384) => "sha384",
            (_, Sha384) => "sha-384",
            (MicSpelling::Compact, Sha512) => "sha512",
            (_, Sha512) => "sha-512",
        }
    }

    pub fn message_digest(self) -> openssl::hash::MessageDigest {
        use openssl::hash::MessageDigest as M;
        match self {
            DigestAlg::Md5 => M::md5(),
            DigestAlg::Sha1 => M::sha1(),
            DigestAlg::Sha224 => M::sha224(),
            DigestAlg::Sha256 => M::sha256(),
            DigestAlg::Sha384 => M::sha384(),
            DigestAlg::Sha512 => M::sha512(),
        }
    }

    /// The digest algorithm's OID (as in CMS digestAlgorithm fields).
    pub(crate) fn oid(self) -> &'static str {
        match self {
            DigestAlg::Md5 => "1.2.840.113549.2.5",
            DigestAlg::Sha1 => "1.3.14.3.2.26",
            DigestAlg::Sha224 => "2.16.840.1.101.3.4.2.4",
            DigestAlg::Sha256 => "2.16.840.1.101.3.4.2.1",
            DigestAlg::Sha384 => "2.16.840.1.101.3.4.2.2",
            DigestAlg::Sha512 => "2.16.840.1.101.3.4.2.3",
        }
    }

    pub(crate) fn from_oid(oid: &str) -> Option<DigestAlg> {
        DigestAlg::ALL.into_iter().find(|d| d.oid() == oid)
    }
}

impl TryFrom<String> for DigestAlg {
    type Error = String;

    fn try_from(name: String) -> Result<DigestAlg, String> {
        DigestAlg::parse(&name).ok_or_else(|| format!("unknown digest {name:?}: expected md5, sha1, sha224, sha256, sha384 or sha512 (any spelling: sha-256, SHA256, sha2-256)"))
    }
}

/// Content-encryption algorithm of an EnvelopedData / AuthEnvelopedData. Read from any spelling
/// [`ContentCipher::parse`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum ContentCipher {
    Des3,
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl ContentCipher {
    pub fn parse(name: &str) -> Option<ContentCipher> {
        let n = name.trim().to_ascii_lowercase().replace(['-', '_'], "");
        Some(match n.as_str() {
            "3des" | "des3" | "tripledes" | "desede3cbc" | "des3cbc" => ContentCipher::Des3,
            "aes128" | "aes128cbc" => ContentCipher::Aes128Cbc,
            "aes192" | "aes192cbc" => ContentCipher::Aes192Cbc,
            "aes256" | "aes256cbc" => ContentCipher::Aes256Cbc,
            "aes128gcm" => ContentCipher::Aes128Gcm,
            "aes256gcm" => ContentCipher::Aes256Gcm,
            _ => return None,
        })
    }

    pub fn cipher(self) -> openssl::symm::Cipher {
        use openssl::symm::Cipher as C;
        match self {
            ContentCipher::Des3 => C::des_ede3_cbc(),
            ContentCipher::Aes128Cbc => C::aes_128_cbc(),
            ContentCipher::Aes192Cbc => C::aes_192_cbc(),
            ContentCipher::Aes256Cbc => C::aes_256_cbc(),
            ContentCipher::Aes128Gcm => C::aes_128_gcm(),
            ContentCipher::Aes256Gcm => C::aes_256_gcm(),
        }
    }
}

impl TryFrom<String> for ContentCipher {
    type Error = String;

    fn try_from(name: String) -> Result<ContentCipher, String> {
        ContentCipher::parse(&name).ok_or_else(|| format!("unknown cipher {name:?}: expected 3des, aes128-cbc, aes192-cbc, aes256-cbc, aes128-gcm or aes256-gcm"))
    }
}

/// RSA key transport for the content-encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyTransport {
    #[default]
    RsaPkcs1v15,
    RsaOaep,
}

/// RSA signature padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignaturePadding {
    #[default]
    Pkcs1v15,
    Pss,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses() {
        for (s, d) in [
            ("sha1", DigestAlg::Sha1),
            ("SHA-1", DigestAlg::Sha1),
            ("SHA1", DigestAlg::Sha1),
            ("sha256", DigestAlg::Sha256),
            ("sha-256", DigestAlg::Sha256),
            ("sha2-256", DigestAlg::Sha256),
            (" SHA-384 ", DigestAlg::Sha384),
            ("sha512", DigestAlg::Sha512),
            ("MD5", DigestAlg::Md5),
            ("sha-224", DigestAlg::Sha224),
        ] {
            assert_eq!(DigestAlg::parse(s), Some(d), "{s}");
        }
        assert_eq!(DigestAlg::parse("sha3-256"), None);
        assert_eq!(DigestAlg::parse(""), None);
    }

    #[test]
    fn names_round_trip_in_every_spelling() {
        for d in DigestAlg::ALL {
            for sp in [MicSpelling::Rfc5751, MicSpelling::Compact, MicSpelling::Hyphenated] {
                assert_eq!(DigestAlg::parse(d.name(sp)), Some(d));
            }
        }
        assert_eq!(DigestAlg::Sha256.name(MicSpelling::Rfc5751), "sha-256");
        assert_eq!(DigestAlg::Sha1.name(MicSpelling::Rfc5751), "sha1");
    }

    fn from_str<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
        T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s)).map_err(|e| e.to_string())
    }

    #[test]
    fn deserialized_from_any_spelling_and_from_what_they_serialize_to() {
        assert_eq!(from_str::<DigestAlg>("SHA-256"), Ok(DigestAlg::Sha256));
        assert_eq!(from_str::<ContentCipher>("3des"), Ok(ContentCipher::Des3));
        assert_eq!(from_str::<ContentCipher>("AES256_GCM"), Ok(ContentCipher::Aes256Gcm));
        // Envelopes and stored state carry the serialized names: they still read back.
        for d in DigestAlg::ALL {
            assert_eq!(rmp_serde::from_slice::<DigestAlg>(&rmp_serde::to_vec_named(&d).unwrap()).unwrap(), d);
        }
        for c in [ContentCipher::Des3, ContentCipher::Aes128Cbc, ContentCipher::Aes192Cbc, ContentCipher::Aes256Cbc, ContentCipher::Aes128Gcm, ContentCipher::Aes256Gcm] {
            assert_eq!(rmp_serde::from_slice::<ContentCipher>(&rmp_serde::to_vec_named(&c).unwrap()).unwrap(), c);
        }
        let e = from_str::<DigestAlg>("sha3-256").unwrap_err();
        assert!(e.contains("sha3-256") && e.contains("sha512"), "{e}");
        let e = from_str::<ContentCipher>("aes512").unwrap_err();
        assert!(e.contains("aes512") && e.contains("aes256-gcm"), "{e}");
    }
}
