//! The check that WeChat keeps the PDF that was uploaded: the file at getpdf's `pdf_url`,
//! compared as it is downloaded, chunk by chunk, never held whole.

use sha2::{Digest, Sha256};

/// What the file at `pdf_url` is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PdfCheck {
    /// Byte for byte the PDF it was compared with.
    Same,
    /// Its SHA-256 (hex) and size: it differs from the PDF it was compared with, or there was
    /// none to compare with.
    Digest { sha256: String, size: usize },
}

/// A download compared with the PDF uploaded, when at hand (a memory compare), else digested.
/// Once a byte differs, the digest takes the part that matched and goes on with the download:
/// one pass either way.
pub(crate) struct Comparison<'a> {
    /// The PDF uploaded, while every byte so far has matched it.
    matching: Option<&'a [u8]>,
    digest: Sha256,
    size: usize,
}

impl<'a> Comparison<'a> {
    pub(crate) fn new(uploaded: Option<&'a [u8]>) -> Self {
        Self { matching: uploaded, digest: Sha256::new(), size: 0 }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn add(&mut self, chunk: &[u8]) {
        let start = self.size;
        self.size += chunk.len();
        match self.matching {
            Some(uploaded) if uploaded.get(start..self.size) == Some(chunk) => {}
            Some(uploaded) => {
                self.digest.update(&uploaded[..start]);
                self.digest.update(chunk);
                self.matching = None;
            }
            None => self.digest.update(chunk),
        }
    }

    pub(crate) fn finish(mut self) -> PdfCheck {
        if let Some(uploaded) = self.matching {
            if uploaded.len() == self.size {
                return PdfCheck::Same;
            }
            // A prefix of the PDF uploaded.
            self.digest.update(&uploaded[..self.size]);
        }
        PdfCheck::Digest { sha256: hex::encode(self.digest.finalize()), size: self.size }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uploaded: Option<&[u8]>, chunks: &[&[u8]]) -> PdfCheck {
        let mut comparison = Comparison::new(uploaded);
        for chunk in chunks {
            comparison.add(chunk);
        }
        comparison.finish()
    }

    fn digest_of(bytes: &[u8]) -> PdfCheck {
        PdfCheck::Digest { sha256: hex::encode(Sha256::digest(bytes)), size: bytes.len() }
    }

    #[test]
    fn the_same_bytes_in_any_chunks_are_the_same() {
        let pdf = b"%PDF-1.7 a bill %%EOF";
        assert_eq!(check(Some(pdf), &[&pdf[..5], &pdf[5..12], &pdf[12..]]), PdfCheck::Same);
        assert_eq!(check(Some(pdf), &[pdf]), PdfCheck::Same);
        assert_eq!(check(Some(b""), &[]), PdfCheck::Same);
    }

    #[test]
    fn another_file_gives_its_own_digest_and_size() {
        let pdf = b"%PDF-1.7 a bill %%EOF";
        let altered = b"%PDF-1.7 a bilL %%EOF";
        assert_eq!(check(Some(pdf), &[&altered[..5], &altered[5..15], &altered[15..]]), digest_of(altered));
        let longer = b"%PDF-1.7 a bill %%EOF\n% altered\n";
        assert_eq!(check(Some(pdf), &[&longer[..21], &longer[21..]]), digest_of(longer));
        assert_eq!(check(Some(pdf), &[longer]), digest_of(longer));
        let shorter = b"%PDF-1.7 a bill";
        assert_eq!(check(Some(pdf), &[&shorter[..4], &shorter[4..]]), digest_of(shorter));
        assert_eq!(check(Some(pdf), &[]), digest_of(b""));
    }

    #[test]
    fn without_a_pdf_to_compare_with_the_download_is_digested() {
        let pdf = b"%PDF-1.7 a bill %%EOF";
        assert_eq!(check(None, &[&pdf[..3], &pdf[3..]]), digest_of(pdf));
    }
}
