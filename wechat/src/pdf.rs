//! Whether bytes are a PDF a reader (and WeChat) can use, read with `lopdf`: within the size
//! limit, a PDF header, a cross-reference table that resolves as written (no repair needed),
//! not encrypted, and a document catalog whose page tree holds at least one page. It does not
//! render the document.
//!
//! Only the objects that say so are read (the trailer, the catalog, the page tree's root, the
//! document information), each where the table says it is: lopdf's metadata loader. A full
//! load would parse every object and copy every stream out of the bytes, a bill's images and
//! fonts, which is most of its size: the PDF held twice, for a check that needs none of it.
//! The page tree's size is taken from its `/Count`, as readers do to number pages (a tree whose
//! `/Count` says one page but whose `/Kids` hold none passes here; a bureau that signs
//! supplied PDFs walks the tree and refuses it). Objects the structure does not lead to are not parsed, so damage
//! there is not seen (a full load in lopdf's lenient mode skipped such objects too).

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
    #[error("PDF has no pages (or no document catalog with a page tree)")]
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
    let read = lopdf::Document::load_metadata_mem(pdf).map_err(|e| PdfError::Malformed(e.to_string()))?;
    // lopdf repairs a broken table by scanning the file; a reader should not have to.
    if read.xref_recovery.is_some() {
        return Err(PdfError::BrokenXref);
    }
    if read.encrypted {
        return Err(PdfError::Encrypted);
    }
    // Also 0 without a catalog, or without a page tree in it.
    if read.page_count == 0 {
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

    #[test]
    fn rejects_a_document_without_a_catalog_or_page_tree() {
        let pdf = sample("x");
        // The trailer's /Root names an object the table does not list: lopdf finds the catalog
        // by scanning the file, a repair.
        let no_catalog = replaced(&pdf, b"/Root 1 0 R", b"/Root 9 0 R");
        assert_eq!(validate(&no_catalog, 1 << 20), Err(PdfError::BrokenXref));
        // The catalog has no /Pages.
        let no_page_tree = replaced(&pdf, b"/Pages 2 0 R", b"/Xages 2 0 R");
        assert_eq!(validate(&no_page_tree, 1 << 20), Err(PdfError::NoPages));
    }

    /// Damage in an object no reader reaches for the catalog and page tree (here, the page's
    /// image) is not looked for, as lopdf's lenient full load skipped it.
    #[test]
    fn a_damaged_stream_outside_the_page_tree_is_not_read() {
        let pdf = sample_of_size(8 * 1024);
        let damaged = replaced(&pdf, b"endstream", b"endstrXam");
        assert_eq!(validate(&damaged, 1 << 20), Ok(()));
    }
}
