//! Streaming CMS through OpenSSL's BIO chains: a SignedData signed, or an EnvelopedData /
//! AuthEnvelopedData encoded, as its content arrives a piece at a time (the `openssl` crate
//! wraps neither).

use std::ffi::c_int;
use std::ptr;

use foreign_types_shared::ForeignType;
use openssl::cms::CmsContentInfo;
use openssl_sys::{CMS_ContentInfo, BIO};

use super::{last_openssl_error, CmsError};

// SAFETY (declarations): as in OpenSSL 3.0's <openssl/cms.h> and <openssl/bio.h>; the streaming
// calls `CMS_final` and `i2d_CMS_bio_stream` make internally, taken one step at a time.
unsafe extern "C" {
    fn CMS_dataInit(cms: *mut CMS_ContentInfo, icont: *mut BIO) -> *mut BIO;
    fn CMS_dataFinal(cms: *mut CMS_ContentInfo, bio: *mut BIO) -> c_int;
    fn BIO_new_CMS(out: *mut BIO, cms: *mut CMS_ContentInfo) -> *mut BIO;
    fn BIO_pop(b: *mut BIO) -> *mut BIO;
    fn BIO_free(b: *mut BIO) -> c_int;
}

const BIO_CTRL_FLUSH: c_int = 11;

/// A CMS structure (built with CMS_PARTIAL | CMS_STREAM) finished as its content streams
/// through it, a piece at a time:
/// - [`ContentStream::digest`]: a detached SignedData: the content is only hashed (the chain
///   `CMS_dataInit` builds ends in a null BIO); `finish` signs.
/// - [`ContentStream::encode`]: the whole structure written as indefinite-length BER
///   (`BIO_new_CMS`): the content goes through the cipher, the encoding collects in a memory
///   BIO that [`ContentStream::write`] drains after every piece.
pub struct ContentStream {
    cms: CmsContentInfo,
    /// The head of the BIO chain the content is written to (null once finished).
    head: *mut BIO,
    /// The memory BIO at the end of an encoding chain (null for a digest).
    sink: *mut BIO,
}

// SAFETY: the CMS structure and the BIO chain are owned by this value alone and used by one
// thread at a time (nothing in them is tied to the thread that made them).
unsafe impl Send for ContentStream {}

impl ContentStream {
    pub fn digest(cms: CmsContentInfo) -> Result<ContentStream, CmsError> {
        // SAFETY: cms is live; the chain returned is owned by the ContentStream.
        let head = unsafe { CMS_dataInit(cms.as_ptr(), ptr::null_mut()) };
        if head.is_null() {
            return Err(last_openssl_error("CMS_dataInit"));
        }
        Ok(ContentStream { cms, head, sink: ptr::null_mut() })
    }

    pub fn encode(cms: CmsContentInfo) -> Result<ContentStream, CmsError> {
        // SAFETY: a new memory BIO, owned by the ContentStream.
        let sink = unsafe { openssl_sys::BIO_new(openssl_sys::BIO_s_mem()) };
        if sink.is_null() {
            return Err(last_openssl_error("BIO_new"));
        }
        // SAFETY: cms and sink are live; the chain on top of sink is owned by the ContentStream
        // and freed before cms (Drop).
        let head = unsafe { BIO_new_CMS(sink, cms.as_ptr()) };
        if head.is_null() {
            // SAFETY: we own sink.
            unsafe { BIO_free(sink) };
            return Err(last_openssl_error("BIO_new_CMS"));
        }
        Ok(ContentStream { cms, head, sink })
    }

    /// Puts content in; appends what the encoding produced so far to `out`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CmsError> {
        if self.head.is_null() {
            return Err(CmsError::Openssl("content written after the end".into()));
        }
        for piece in data.chunks(1 << 30) {
            // SAFETY: head is live; OpenSSL reads piece.len() bytes.
            let n = unsafe { openssl_sys::BIO_write(self.head, piece.as_ptr().cast(), piece.len() as c_int) };
            if n != piece.len() as c_int {
                return Err(last_openssl_error("BIO_write"));
            }
        }
        self.drain(out);
        Ok(())
    }

    /// The content ended: finishes the structure (signature, final cipher block, GCM tag, end
    /// of the encoding) and appends the rest of the encoding to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), CmsError> {
        if self.head.is_null() {
            return Err(CmsError::Openssl("finished twice".into()));
        }
        // SAFETY: head is live. Flushing an encoding chain finishes the cipher, then writes the
        // rest of the structure (CMS_dataFinal runs inside); a digest chain is finished here.
        let ok = unsafe {
            openssl_sys::BIO_ctrl(self.head, BIO_CTRL_FLUSH, 0, ptr::null_mut()) > 0
                && (!self.sink.is_null() || CMS_dataFinal(self.cms.as_ptr(), self.head) > 0)
        };
        self.free_chain();
        if !ok {
            return Err(last_openssl_error("finishing the CMS structure"));
        }
        self.drain(out);
        Ok(())
    }

    /// The finished structure (a digest stream's signature).
    pub fn cms(&self) -> &CmsContentInfo {
        &self.cms
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        if self.sink.is_null() {
            return;
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            // SAFETY: sink is live; OpenSSL writes at most buf.len() bytes.
            let n = unsafe { openssl_sys::BIO_read(self.sink, buf.as_mut_ptr().cast(), buf.len() as c_int) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }

    /// Frees the chain above the sink (as i2d_ASN1_bio_stream does), or the whole digest chain.
    fn free_chain(&mut self) {
        let mut b = std::mem::replace(&mut self.head, ptr::null_mut());
        // SAFETY: we own every BIO of the chain; each is popped before it is freed, and the
        // sink (owned separately) is never freed here.
        unsafe {
            if self.sink.is_null() {
                if !b.is_null() {
                    openssl_sys::BIO_free_all(b);
                }
                return;
            }
            while !b.is_null() && b != self.sink {
                let next = BIO_pop(b);
                BIO_free(b);
                b = next;
            }
        }
    }
}

impl Drop for ContentStream {
    fn drop(&mut self) {
        self.free_chain();
        if !self.sink.is_null() {
            // SAFETY: we own the sink; nothing above it is left.
            unsafe { BIO_free(self.sink) };
        }
    }
}
