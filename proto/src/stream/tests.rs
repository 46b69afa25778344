//! Edge cases of the streaming pieces that whole messages rarely hit (see also
//! proto/tests/streaming.rs, which compares whole messages with the in-memory path).

use super::entity::Base64;
use super::multipart::{Event, Splitter};
use super::octets::{OctetStream, Outer};
use super::Codec;
use crate::mime::MimeLimits;

/// Split `body` fed `chunk` bytes at a time; the parts as byte strings.
fn split(boundary: &str, body: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut s = Splitter::new(boundary, &MimeLimits::default()).map_err(|e| e.to_string())?;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut on = |ev: Event<'_>| {
        if let Event::Data(n, d) = ev {
            while parts.len() <= n {
                parts.push(Vec::new());
            }
            parts[n].extend_from_slice(d);
        }
        Ok(())
    };
    for c in body.chunks(chunk) {
        s.push(c, &mut on).map_err(|e| e.to_string())?;
    }
    s.finish(&mut on).map_err(|e| e.to_string())?;
    Ok(parts)
}

#[test]
fn splitter_matches_the_in_memory_split_at_every_chunk_size() {
    let bodies: [&[u8]; 5] = [
        b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue",
        b"--b\nx\n--bb is not a delimiter\n--b  \t\ny\r\n--b--",
        // No close delimiter: the last part runs to the end, line breaks dropped.
        b"--b\r\nfirst\r\n--b\r\nlast\r\n\r\n",
        // A part that is only a line break.
        b"--b\r\n\r\n\r\n--b\r\nz\r\n--b--",
        b"\r\n--b\r\nA\r\n-\r\n--\r\n--b\r\n\r\n--b-\r\n--b--",
    ];
    for body in bodies {
        let want: Vec<Vec<u8>> = crate::mime::split_multipart(body, "b", &MimeLimits::default()).unwrap().into_iter().map(<[u8]>::to_vec).collect();
        for chunk in 1..body.len() + 1 {
            let got = split("b", body, chunk).unwrap();
            let got: Vec<Vec<u8>> = got.into_iter().chain(std::iter::repeat(Vec::new())).take(want.len()).collect();
            assert_eq!(got, want, "{} chunk {chunk}", String::from_utf8_lossy(body));
        }
    }
    assert!(split("b", b"no delimiter at all", 4).is_err());
    assert!(split("", b"--\r\n", 4).is_err());
}

#[test]
fn base64_across_chunks_with_line_breaks_and_padding() {
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let encoded = crate::mdn::base64_lines(&data);
    for chunk in [1, 2, 3, 5, 76, 77, 1000] {
        let mut b = Base64::default();
        let mut out = Vec::new();
        for c in encoded.chunks(chunk) {
            b.push(c, &mut out).unwrap();
        }
        b.finish(&mut out).unwrap();
        assert_eq!(out, data, "chunk {chunk}");
    }
    let mut b = Base64::default();
    let mut out = Vec::new();
    assert!(b.push(b"QQ==QUFB", &mut out).is_err(), "padding inside the data");
    let mut b = Base64::default();
    assert!(b.push(b"QUJD*EFG", &mut out).and_then(|_| b.finish(&mut out)).is_err(), "not base64");
}

#[test]
fn octet_stream_reads_primitive_chunked_and_nested_strings() {
    // [0] primitive "abc", then trailer bytes.
    let cases: [(&[u8], Outer, &[u8]); 4] = [
        (&[0x80, 3, b'a', b'b', b'c', 9, 9], Outer::ContextZero, b"abc"),
        // [0] constructed, indefinite: OCTET STRING "ab", nested constructed definite "cd", EOC.
        (&[0xA0, 0x80, 0x04, 2, b'a', b'b', 0x24, 4, 0x04, 2, b'c', b'd', 0, 0, 9], Outer::ContextZero, b"abcd"),
        // OCTET STRING constructed, definite length 8: two chunks.
        (&[0x24, 8, 0x04, 2, b'x', b'y', 0x04, 2, b'z', b'w', 1], Outer::OctetString, b"xyzw"),
        // Empty primitive.
        (&[0x04, 0], Outer::OctetString, b""),
    ];
    for (input, outer, want) in cases {
        for chunk in 1..=input.len() {
            let mut s = OctetStream::new(outer);
            let mut out = Vec::new();
            for c in input.chunks(chunk) {
                s.push(c, &mut out).unwrap();
            }
            s.finish().unwrap();
            assert_eq!(out, want, "{input:?} chunk {chunk}");
        }
    }
    // Wrong outer tag, a foreign chunk, a chunk running past its parent, truncation.
    let bad: [(&[u8], Outer); 4] = [
        (&[0x30, 0], Outer::OctetString),
        (&[0x24, 0x80, 0x02, 1, 0, 0, 0], Outer::OctetString),
        (&[0x24, 3, 0x04, 2, b'a', b'b'], Outer::OctetString),
        (&[0x24, 0x80, 0x04, 2, b'a'], Outer::OctetString),
    ];
    for (input, outer) in bad {
        let mut s = OctetStream::new(outer);
        let mut out = Vec::new();
        let r = s.push(input, &mut out).and_then(|_| s.finish());
        assert!(r.is_err(), "{input:?}");
    }
}
