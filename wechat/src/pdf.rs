//! A structural check that bytes are a well-formed PDF file: header, trailer and a
//! cross-reference offset that points at a cross-reference section or stream. It does not
//! render the document; it rejects what is plainly not a PDF or is truncated.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PdfError {
    #[error("PDF is empty")]
    Empty,
    #[error("PDF is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not a PDF: no %PDF-1.x or %PDF-2.0 header")]
    Header,
    #[error("PDF is truncated: no %%EOF marker at the end")]
    Eof,
    #[error("PDF has no valid startxref offset")]
    StartXref,
    #[error("PDF startxref does not point at a cross-reference table or stream")]
    XrefTarget,
}

/// How far from the end the trailer keywords may sit.
const TAIL: usize = 1024;

/// Checks `pdf` against the structure of a PDF file and a size limit.
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
    let tail_start = pdf.len().saturating_sub(TAIL);
    let tail = &pdf[tail_start..];
    let eof_at = rfind(tail, b"%%EOF").ok_or(PdfError::Eof)?;
    if !tail[eof_at + 5..].iter().all(|b| b.is_ascii_whitespace()) {
        return Err(PdfError::Eof);
    }
    let startxref_at = rfind(&tail[..eof_at], b"startxref").ok_or(PdfError::StartXref)?;
    let digits: Vec<u8> = tail[startxref_at + 9..eof_at]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace)
        .take_while(u8::is_ascii_digit)
        .collect();
    let offset: usize = std::str::from_utf8(&digits).ok().and_then(|d| d.parse().ok()).ok_or(PdfError::StartXref)?;
    if offset >= tail_start + startxref_at {
        return Err(PdfError::StartXref);
    }
    let target = &pdf[offset..];
    if target.starts_with(b"xref") || is_object_header(target) { Ok(()) } else { Err(PdfError::XrefTarget) }
}

/// `<number> <generation> obj`, the start of an indirect object (a cross-reference stream).
fn is_object_header(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(32)];
    let Ok(text) =
        std::str::from_utf8(head.split(|b| *b == b'<' || *b == b'\n' || *b == b'\r').next().unwrap_or_default())
    else {
        return false;
    };
    let mut parts = text.split_ascii_whitespace();
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(n), Some(g), Some("obj")) if n.bytes().all(|b| b.is_ascii_digit()) && g.bytes().all(|b| b.is_ascii_digit())
    )
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// A minimal valid one-page PDF with `text` on it (ASCII only), for tests and demos.
pub fn sample(text: &str) -> Vec<u8> {
    let text: String =
        text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').filter(|c| !matches!(c, '(' | ')' | '\\')).collect();
    let content = format!("BT /F1 18 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", index + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    pdf
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(validate(&pdf[..pdf.len() - 20], 1 << 20), Err(PdfError::Eof));
        let mut trailing = pdf.clone();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(validate(&trailing, 1 << 20), Err(PdfError::Eof));
        let text = String::from_utf8_lossy(&pdf).into_owned();
        let wrong_offset = text.replace(&format!("startxref\n{}", text.rfind("xref\n0 ").unwrap()), "startxref\n9");
        assert_eq!(validate(wrong_offset.as_bytes(), 1 << 20), Err(PdfError::XrefTarget));
        let no_offset = text.replace("startxref\n", "startxref\nabc");
        assert_eq!(validate(no_offset.as_bytes(), 1 << 20), Err(PdfError::StartXref));
    }

    #[test]
    fn accepts_cross_reference_streams() {
        let mut pdf = b"%PDF-1.5\n".to_vec();
        let at = pdf.len();
        pdf.extend_from_slice(b"7 0 obj\n<< /Type /XRef /Size 8 >>\nstream\nendstream\nendobj\n");
        pdf.extend_from_slice(format!("startxref\n{at}\n%%EOF").as_bytes());
        assert_eq!(validate(&pdf, 1 << 20), Ok(()));
    }
}
