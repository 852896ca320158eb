//! Whether bytes are a PDF a reader (and WeChat) can use, parsed with `lopdf`: within the size
//! limit, a PDF header, a cross-reference table that resolves as written (no repair needed),
//! a document catalog, not encrypted, and at least one page. It does not render the document.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PdfError {
    #[error("PDF is empty")]
    Empty,
    #[error("PDF is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a PDF: no %PDF-1.x or %PDF-2.0 header")]
    Header,
    #[error("PDF is malformed: {0}")]
    Malformed(String),
    #[error("PDF's cross-reference table does not resolve (objects are not where it says)")]
    BrokenXref,
    #[error("PDF is encrypted: give it without a password or permissions")]
    Encrypted,
    #[error("PDF has no pages")]
    NoPages,
}

/// Checks `pdf` against a size limit and parses it.
pub fn validate(pdf: &[u8], max_bytes: usize) -> Result<(), PdfError> {
    if pdf.is_empty() {
        return Err(PdfError::Empty);
    }
    if pdf.len() > max_bytes {
        return Err(PdfError::TooLarge { size: pdf.len(), limit: max_bytes });
    }
    let version_ok = pdf.len() >= 8
        && pdf.starts_with(b"%PDF-")
        && ((pdf[5] == b'1' && pdf[6] == b'.' && (b'0'..=b'7').contains(&pdf[7])) || &pdf[5..8] == b"2.0");
    if !version_ok {
        return Err(PdfError::Header);
    }
    let document = lopdf::Document::load_mem(pdf).map_err(|e| PdfError::Malformed(e.to_string()))?;
    // lopdf repairs a broken table by scanning the file; a reader should not have to.
    if document.xref_recovery.is_some() {
        return Err(PdfError::BrokenXref);
    }
    if document.was_encrypted() || document.is_encrypted() {
        return Err(PdfError::Encrypted);
    }
    document.catalog().map_err(|e| PdfError::Malformed(format!("no document catalog ({e})")))?;
    if document.get_pages().is_empty() {
        return Err(PdfError::NoPages);
    }
    Ok(())
}

/// A minimal valid one-page PDF with `text` on it (ASCII only), for tests and demos.
pub fn sample(text: &str) -> Vec<u8> {
    let text: String = text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect();
    one_page(text.as_bytes(), None)
}

/// A valid PDF of exactly `size` bytes, for tests and the benchmark: a one-page bill whose bulk
/// is an image (a seal, say), as a real bill's bulk is its images and embedded fonts: stream
/// data, which a PDF parser skips by its `/Length`. (Bulk in comment lines, which parsers read
/// byte by byte, cost the benchmark's services 2–4% of their CPU.)
pub fn sample_of_size(size: usize) -> Vec<u8> {
    // The size grows with the image's length, one for one but for the digits of its
    // `/Length`: a few tries settle it.
    let mut image_len = size.saturating_sub(1024);
    for _ in 0..8 {
        let pdf = one_page(b"Benchmark bill", Some(&image_bytes(image_len)));
        match size as isize - pdf.len() as isize {
            0 => return pdf,
            missing => image_len = (image_len as isize + missing).try_into().expect("size above the smallest bill's"),
        }
    }
    panic!("no image length gives a PDF of {size} bytes")
}

/// `len` bytes that look like compressed image data (xorshift), the same in every run.
fn image_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// One page with `text` in Helvetica and, when given, an image XObject of those bytes (not
/// drawn; they stand for a JPEG's, never decoded here).
fn one_page(text: &[u8], image: Option<&[u8]>) -> Vec<u8> {
    use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str};
    let (catalog, pages, page, content, font, image_ref) =
        (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4), Ref::new(5), Ref::new(6));
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page]).count(1);
    let mut page_writer = pdf.page(page);
    page_writer.parent(pages).media_box(Rect::new(0.0, 0.0, 595.0, 842.0)).contents(content);
    let mut resources = page_writer.resources();
    resources.fonts().pair(Name(b"F1"), font);
    if image.is_some() {
        resources.x_objects().pair(Name(b"Im1"), image_ref);
    }
    resources.finish();
    drop(page_writer);
    let mut drawing = Content::new();
    drawing.begin_text().set_font(Name(b"F1"), 18.0).next_line(72.0, 720.0).show(Str(text)).end_text();
    pdf.stream(content, &drawing.finish());
    pdf.type1_font(font).base_font(Name(b"Helvetica"));
    if let Some(image) = image {
        let mut xobject = pdf.image_xobject(image_ref, image);
        xobject.filter(Filter::DctDecode);
        xobject.width(256).height(256).bits_per_component(8);
        xobject.color_space().device_rgb();
        xobject.finish();
    }
    pdf.finish()
}

fn replaced(pdf: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = pdf.windows(from.len()).position(|w| w == from).expect("found");
    [&pdf[..at], to, &pdf[at + from.len()..]].concat()
}

/// The sample, encrypted (RC4-128, an empty user password) by lopdf: for tests.
pub fn encrypted_sample() -> Vec<u8> {
    let mut document = lopdf::Document::load_mem(&sample("secret")).unwrap();
    let id = lopdf::Object::String(b"0123456789abcdef".to_vec(), lopdf::StringFormat::Hexadecimal);
    document.trailer.set("ID", lopdf::Object::Array(vec![id.clone(), id]));
    let state = lopdf::EncryptionState::try_from(lopdf::EncryptionVersion::V2 {
        document: &document,
        owner_password: "owner",
        user_password: "",
        key_length: 128,
        permissions: lopdf::Permissions::all(),
    })
    .unwrap();
    document.encrypt(&state).unwrap();
    let mut out = Vec::new();
    document.save_to(&mut out).unwrap();
    out
}

/// The sample with an empty page tree (the cross-reference table still resolves): for tests.
pub fn sample_without_pages() -> Vec<u8> {
    replaced(&replaced(&sample("x"), b"/Kids [3 0 R]", b"/Kids []     "), b"/Count 1", b"/Count 0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_a_size_have_it_and_stay_valid() {
        for size in [4 * 1024, 64 * 1024, 64 * 1024 + 1, 1024 * 1024 + 3] {
            let pdf = sample_of_size(size);
            assert_eq!(pdf.len(), size);
            assert_eq!(validate(&pdf, size), Ok(()));
        }
    }

    #[test]
    fn accepts_a_well_formed_pdf() {
        let pdf = sample("Bill 0001");
        assert_eq!(validate(&pdf, 1 << 20), Ok(()));
    }

    #[test]
    fn rejects_what_is_not_a_pdf_or_is_broken() {
        let pdf = sample("x");
        assert_eq!(validate(b"", 100), Err(PdfError::Empty));
        assert_eq!(validate(&pdf, 10), Err(PdfError::TooLarge { size: pdf.len(), limit: 10 }));
        assert_eq!(validate(b"<html>not a pdf</html>", 100), Err(PdfError::Header));
        assert_eq!(validate(b"%PDF-3.0 ...", 100), Err(PdfError::Header));
        assert!(matches!(validate(b"%PDF-1.4\n%%EOF\n", 100), Err(PdfError::Malformed(_) | PdfError::BrokenXref)));
        // Objects moved: the table's offsets point at nothing.
        let shifted = replaced(&pdf, b"1 0 obj", b"\n\n\n\n1 0 obj");
        assert_eq!(validate(&shifted, 1 << 20), Err(PdfError::BrokenXref));
        assert!(validate(&pdf[..pdf.len() / 2], 1 << 20).is_err(), "truncated");
    }

    #[test]
    fn rejects_encrypted_and_page_less_documents() {
        assert_eq!(validate(&sample_without_pages(), 1 << 20), Err(PdfError::NoPages));
        assert_eq!(validate(&encrypted_sample(), 1 << 20), Err(PdfError::Encrypted));
    }
}
