//! Renders a fiscal e-bill (财政电子票据) as a small PDF: title, bill code and number, payer,
//! collection unit, detail items, the total in figures and in capital numerals, issue date and
//! issuing bureau.
//!
//! Chinese text uses the standard Chinese font STSong-Light with the UniGB-UCS2-H encoding, and
//! ASCII runs the standard Helvetica (neither embedded: every common viewer supplies them, and
//! the file stays a few kilobytes). A ToUnicode map keeps the Chinese text extractable and
//! searchable; Helvetica's known metrics keep figures aligned.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use fiscalbill_common::bill::{BillContent, BillItem};

use super::amount::{capital, figures};
use super::writer::{PdfWriter, text_string};

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 420.0;
const MARGIN: f32 = 36.0;
const ITEMS_PER_PAGE: usize = 10;
const ROW: f32 = 17.0;
/// Frame and rule colour: the brownish red of printed fiscal bills.
const FRAME_RGB: &str = "0.62 0.16 0.12";

/// What goes on the bill besides its content.
#[derive(Clone, Debug)]
pub struct BillHeader<'a> {
    /// e.g. 非税收入统一票据（电子）
    pub title: &'a str,
    /// The issuing finance bureau.
    pub bureau: &'a str,
    /// The collection unit (payee).
    pub payee: &'a str,
    pub order_id: &'a str,
}

/// Table columns: header, left edge, right edge, right-aligned.
const COLUMNS: [(&str, f32, f32, bool); 5] = [
    ("项目名称", MARGIN, 250.0, false),
    ("单位", 250.0, 300.0, false),
    ("数量", 300.0, 370.0, true),
    ("标准（元）", 370.0, 460.0, true),
    ("金额（元）", 460.0, WIDTH - MARGIN, true),
];

/// Helvetica's advance widths (1/1000 em) for ASCII 32..=126, from its standard metrics.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556,
    556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334,
    260, 334, 584,
];

/// Width of one character in em: Helvetica's for printable ASCII, one em for everything else
/// (CJK and full-width forms).
fn char_em(ch: char) -> f32 {
    match ch {
        ' '..='~' => f32::from(HELVETICA[ch as usize - 32]) / 1000.0,
        _ => 1.0,
    }
}

fn em_width(text: &str) -> f32 {
    text.chars().map(char_em).sum()
}

/// `text` shortened with `…` to fit `width` points at `size`.
fn fit(text: &str, size: f32, width: f32) -> String {
    if em_width(text) * size <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    for ch in text.chars() {
        if (em_width(&out) + em_width(&ch.to_string()) + 1.0) * size > width {
            break;
        }
        out.push(ch);
    }
    out.push('…');
    out
}

/// Drawn in Helvetica: printable ASCII and space.
fn is_latin(ch: char) -> bool {
    matches!(ch, ' '..='~')
}

/// Characters outside the Basic Multilingual Plane cannot be encoded in UCS-2.
fn encodable(ch: char) -> char {
    if (ch as u32) <= 0xFFFF { ch } else { '?' }
}

struct Page {
    content: String,
    used: BTreeSet<u8>,
}

impl Page {
    fn new() -> Self {
        Self { content: String::new(), used: BTreeSet::new() }
    }

    /// Draws `text` from (x, y): ASCII runs in Helvetica (/F2), the rest in STSong (/F1).
    fn text(&mut self, x: f32, y: f32, size: f32, text: &str) {
        let mut x = x;
        let chars: Vec<char> = text.chars().map(encodable).collect();
        for run in chars.chunk_by(|a, b| is_latin(*a) == is_latin(*b)) {
            let run_text: String = run.iter().collect();
            if is_latin(run[0]) {
                let escaped = run_text.replace('\\', "\\\\").replace('(', "\\(").replace(')', "\\)");
                let _ = writeln!(self.content, "BT /F2 {size} Tf {x:.2} {y:.2} Td ({escaped}) Tj ET");
            } else {
                let mut hex = String::with_capacity(run.len() * 4);
                for ch in run {
                    let code = *ch as u32 as u16;
                    self.used.insert((code >> 8) as u8);
                    let _ = write!(hex, "{code:04X}");
                }
                let _ = writeln!(self.content, "BT /F1 {size} Tf {x:.2} {y:.2} Td <{hex}> Tj ET");
            }
            x += em_width(&run_text) * size;
        }
    }

    fn text_right(&mut self, right: f32, y: f32, size: f32, text: &str) {
        self.text(right - em_width(text) * size, y, size, text);
    }

    fn text_center(&mut self, y: f32, size: f32, text: &str) {
        self.text((WIDTH - em_width(text) * size) / 2.0, y, size, text);
    }

    fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32) {
        let _ = writeln!(self.content, "{x1:.2} {y1:.2} m {x2:.2} {y2:.2} l S");
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32) {
        let _ = writeln!(self.content, "{x:.2} {y:.2} {w:.2} {h:.2} re S");
    }
}

/// 2024-01-31 for a Unix time, in China Standard Time (UTC+8).
pub fn china_date(unix_secs: i64) -> String {
    let days = (unix_secs + 8 * 3600).div_euclid(86_400);
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The rows of the detail table: the items, or one line for the whole fee.
fn rows(content: &BillContent) -> Vec<BillItem> {
    if content.items.is_empty() {
        vec![BillItem {
            name: "非税收入".to_owned(),
            quantity: "1".to_owned(),
            unit: String::new(),
            unit_price: content.fee,
            amount: content.fee,
        }]
    } else {
        content.items.clone()
    }
}

/// Renders the bill. Deterministic: the same input gives the same bytes.
pub fn render(header: &BillHeader<'_>, content: &BillContent) -> Vec<u8> {
    let rows = rows(content);
    let page_count = rows.len().div_ceil(ITEMS_PER_PAGE).max(1);
    let mut pages = Vec::with_capacity(page_count);
    for (number, chunk) in rows.chunks(ITEMS_PER_PAGE).enumerate() {
        pages.push(page(header, content, chunk, number + 1, page_count));
    }

    let mut pdf = PdfWriter::default();
    let catalog = pdf.reserve();
    let pages_id = pdf.reserve();
    let font = pdf.reserve();
    let latin = pdf.add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>");
    let used: BTreeSet<u8> = pages.iter().flat_map(|p| p.used.iter().copied()).collect();
    let to_unicode = pdf.add_stream("", to_unicode_cmap(&used).as_bytes());
    let descriptor = pdf.add(
        "<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 /FontBBox [-25 -254 1000 880] /ItalicAngle 0 \
         /Ascent 880 /Descent -120 /CapHeight 880 /StemV 93 >>",
    );
    let cid_font = pdf.add(format!(
        "<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light \
         /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> /FontDescriptor {descriptor} 0 R \
         /DW 1000 /W [1 95 500 814 939 500] >>"
    ));
    pdf.set(
        font,
        format!(
            "<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H \
             /DescendantFonts [{cid_font} 0 R] /ToUnicode {to_unicode} 0 R >>"
        ),
    );
    let mut kids = Vec::new();
    for page in &pages {
        let stream = pdf.add_stream("", page.content.as_bytes());
        kids.push(pdf.add(format!(
            "<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {WIDTH} {HEIGHT}] \
             /Resources << /Font << /F1 {font} 0 R /F2 {latin} 0 R >> >> /Contents {stream} 0 R >>"
        )));
    }
    let kids: Vec<String> = kids.iter().map(|id| format!("{id} 0 R")).collect();
    pdf.set(pages_id, format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), kids.len()));
    pdf.set(catalog, format!("<< /Type /Catalog /Pages {pages_id} 0 R >>"));
    let info = pdf.add(format!(
        "<< /Title {} /Author {} /Subject {} /Producer (fiscalbill bureau-svc) >>",
        text_string(header.title),
        text_string(header.bureau),
        text_string(&format!("{} {}", content.billing_no, content.billing_code)),
    ));
    pdf.finish(catalog, Some(info))
}

fn page(header: &BillHeader<'_>, content: &BillContent, rows: &[BillItem], number: usize, count: usize) -> Page {
    let mut page = Page::new();
    let _ = writeln!(page.content, "{FRAME_RGB} RG 0.6 w");
    let right = WIDTH - MARGIN;

    page.text_center(HEIGHT - 52.0, 17.0, &fit(header.title, 17.0, WIDTH - 2.0 * MARGIN));
    page.line(WIDTH / 2.0 - 120.0, HEIGHT - 58.0, WIDTH / 2.0 + 120.0, HEIGHT - 58.0);

    let mut y = HEIGHT - 82.0;
    page.text(MARGIN, y, 9.0, &format!("票据代码：{}", content.billing_no));
    page.text(MARGIN + 190.0, y, 9.0, &format!("票据号码：{}", content.billing_code));
    page.text_right(right, y, 9.0, &format!("开票日期：{}", china_date(content.billing_time)));
    y -= 16.0;
    page.text(MARGIN, y, 9.0, &fit(&format!("交款人：{}", content.payer_title), 9.0, 250.0));
    page.text(MARGIN + 260.0, y, 9.0, &fit(&format!("执收单位：{}", header.payee), 9.0, right - MARGIN - 260.0));

    // The detail table.
    let top = y - 8.0;
    let header_y = top - ROW + 5.0;
    for (title, left, col_right, align_right) in COLUMNS {
        if align_right {
            page.text_right(col_right - 4.0, header_y, 9.0, title)
        } else {
            page.text(left + 4.0, header_y, 9.0, title)
        }
    }
    let mut row_y = top - ROW;
    for item in rows {
        page.line(MARGIN, row_y, right, row_y);
        let baseline = row_y - ROW + 5.0;
        let cells = [
            item.name.as_str(),
            item.unit.as_str(),
            item.quantity.as_str(),
            &yuan(item.unit_price),
            &yuan(item.amount),
        ];
        for ((_, left, col_right, align_right), cell) in COLUMNS.into_iter().zip(cells) {
            let cell = fit(cell, 9.0, col_right - left - 8.0);
            if align_right {
                page.text_right(col_right - 4.0, baseline, 9.0, &cell)
            } else {
                page.text(left + 4.0, baseline, 9.0, &cell)
            }
        }
        row_y -= ROW;
    }
    let table_bottom = top - ROW * (ITEMS_PER_PAGE as f32 + 1.0);
    page.rect(MARGIN, table_bottom, right - MARGIN, top - table_bottom);
    page.line(MARGIN, top - ROW, right, top - ROW);
    for (_, left, _, _) in COLUMNS.iter().skip(1) {
        page.line(*left, top, *left, table_bottom);
    }

    // Totals, remarks and footer.
    let mut y = table_bottom - ROW;
    page.rect(MARGIN, y, right - MARGIN, ROW);
    if number == count {
        page.text(MARGIN + 4.0, y + 5.0, 9.0, &format!("金额合计（大写）：{}", capital(content.fee)));
        page.text_right(right - 4.0, y + 5.0, 9.0, &format!("（小写）￥{}", figures(content.fee)));
    } else {
        page.text(MARGIN + 4.0, y + 5.0, 9.0, "（续下页）");
    }
    y -= ROW * 2.0;
    page.rect(MARGIN, y, right - MARGIN, ROW * 2.0);
    page.text(MARGIN + 4.0, y + ROW + 5.0, 9.0, "备注：");
    let remarks: Vec<char> = content.remarks.chars().collect();
    let per_line = ((right - MARGIN - 48.0) / 9.0) as usize;
    for (line, chunk) in remarks.chunks(per_line.max(1)).take(2).enumerate() {
        let text: String = chunk.iter().collect();
        page.text(MARGIN + 36.0, y + ROW + 5.0 - line as f32 * 12.0, 9.0, &fit(&text, 9.0, right - MARGIN - 44.0));
    }

    let footer = MARGIN + 6.0;
    page.text(MARGIN, footer, 9.0, &fit(&format!("开票单位：{}", header.bureau), 9.0, 220.0));
    page.text(MARGIN + 230.0, footer, 9.0, &fit(&format!("订单号：{}", header.order_id), 9.0, 200.0));
    page.text_right(right, footer, 9.0, &format!("第{number}页／共{count}页"));
    page
}

/// Maps each 2-byte UCS-2 code back to its Unicode value (they are the same), for the high
/// bytes the document uses; ranges never cross a high-byte boundary.
fn to_unicode_cmap(high_bytes: &BTreeSet<u8>) -> String {
    let mut cmap = String::from(
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
         /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
         /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
         1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
    );
    let bytes: Vec<u8> = high_bytes.iter().copied().collect();
    for chunk in bytes.chunks(100) {
        let _ = writeln!(cmap, "{} beginbfrange", chunk.len());
        for high in chunk {
            let _ = writeln!(cmap, "<{high:02X}00> <{high:02X}FF> <{high:02X}00>");
        }
        cmap.push_str("endbfrange\n");
    }
    cmap.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
    cmap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(items: usize) -> BillContent {
        let items: Vec<BillItem> = (0..items)
            .map(|i| BillItem {
                name: format!("检查费{i}"),
                quantity: "1".into(),
                unit: "次".into(),
                unit_price: 100,
                amount: 100,
            })
            .collect();
        BillContent {
            fee: 100 * items.len().max(1) as i64,
            payer_title: "张三".into(),
            billing_no: "44010125".into(),
            billing_code: "0000012345".into(),
            billing_time: 1_700_000_000,
            items,
            remarks: "门诊".into(),
        }
    }

    fn header() -> BillHeader<'static> {
        BillHeader {
            title: "非税收入统一票据（电子）",
            bureau: "某市财政局",
            payee: "某市人民医院",
            order_id: "order-1",
        }
    }

    #[test]
    fn renders_a_valid_small_pdf() {
        let pdf = render(&header(), &content(3));
        wechat::pdf::validate(&pdf, 1 << 20).unwrap();
        assert!(pdf.len() < 16 * 1024, "{} bytes", pdf.len());
        assert_eq!(render(&header(), &content(3)), pdf, "deterministic");
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("/BaseFont /STSong-Light") && text.contains("/Encoding /UniGB-UCS2-H"));
        assert!(text.contains("/Count 1"));
        // 叁元整 (U+53C1 U+5143 U+6574) is hex-encoded in STSong; the billing code is Helvetica.
        assert!(text.contains("53C151436574>"));
        assert!(text.contains("(0000012345) Tj"));
    }

    #[test]
    fn long_bills_continue_on_more_pages() {
        let pdf = render(&header(), &content(25));
        wechat::pdf::validate(&pdf, 1 << 20).unwrap();
        assert!(String::from_utf8_lossy(&pdf).contains("/Count 3"));
    }

    #[test]
    fn dates_are_in_china_time() {
        assert_eq!(china_date(1_700_000_000), "2023-11-15");
        assert_eq!(china_date(1_704_038_400), "2024-01-01");
        assert_eq!(china_date(1_704_038_399), "2023-12-31");
        assert_eq!(china_date(951_782_400), "2000-02-29");
    }

    #[test]
    fn text_is_fitted_to_columns() {
        assert_eq!(fit("abc", 10.0, 100.0), "abc");
        let long = fit(&"检".repeat(40), 9.0, 90.0);
        assert!((em_width("10.00") - 2.502).abs() < 0.001);
        assert!(long.ends_with('…') && em_width(&long) * 9.0 <= 90.0);
    }
}
