//! Valid PDFs of a chosen size, for the benchmark and the tests.

/// A valid PDF of exactly `size` bytes: a one-page bill whose bulk is an image (a seal, say),
/// as a real bill's bulk is its images and embedded fonts: stream data, which a PDF parser
/// skips by its `/Length`. (Before 2026-12-06 the bulk was comment lines, which parsers read
/// byte by byte: 2–4% of each service's CPU went to reading the benchmark's padding.)
pub fn padded_pdf(size: usize) -> Vec<u8> {
    // The size grows with the image's length, one for one but for the digits of its
    // `/Length`: a few tries settle it.
    let mut image_len = size.saturating_sub(1024);
    for _ in 0..8 {
        let pdf = pdf_with_image(image_len);
        match size as isize - pdf.len() as isize {
            0 => return pdf,
            missing => image_len = (image_len as isize + missing).try_into().expect("size above the smallest bill's"),
        }
    }
    panic!("no image length gives a PDF of {size} bytes")
}

/// A one-page bill with an image XObject of `len` bytes (not drawn; its bytes stand for a
/// JPEG's: not compressible, never decoded here).
fn pdf_with_image(len: usize) -> Vec<u8> {
    use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str};
    let (catalog, pages, page, content, font, image) =
        (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4), Ref::new(5), Ref::new(6));
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page]).count(1);
    let mut page_writer = pdf.page(page);
    page_writer.parent(pages).media_box(Rect::new(0.0, 0.0, 595.0, 842.0)).contents(content);
    let mut resources = page_writer.resources();
    resources.fonts().pair(Name(b"F1"), font);
    resources.x_objects().pair(Name(b"Im1"), image);
    resources.finish();
    drop(page_writer);
    let mut drawing = Content::new();
    drawing.begin_text().set_font(Name(b"F1"), 18.0).next_line(72.0, 720.0).show(Str(b"Benchmark bill")).end_text();
    pdf.stream(content, &drawing.finish());
    pdf.type1_font(font).base_font(Name(b"Helvetica"));
    // xorshift: bytes that look like compressed data, the same in every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut xobject = pdf.image_xobject(image, &data);
    xobject.filter(Filter::DctDecode);
    xobject.width(256).height(256).bits_per_component(8);
    xobject.color_space().device_rgb();
    xobject.finish();
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_pdfs_have_the_size_asked_and_stay_valid() {
        for size in [4 * 1024, 64 * 1024, 64 * 1024 + 1, 1024 * 1024 + 3] {
            let pdf = padded_pdf(size);
            assert_eq!(pdf.len(), size);
            assert_eq!(wechat::pdf::validate(&pdf, size), Ok(()));
        }
    }
}
