//! Renders a fiscal e-bill (财政电子票据) as a PDF: title, bill code and number, payer,
//! collection unit, detail items, the total in figures and in capital numerals, issue date,
//! issuing bureau and the bureau's seal, written with `pdf-writer`. All text is drawn in the
//! embedded subset of the bill font (see `font.rs`), so that any viewer shows it and it stays
//! extractable. With a signer, the seal is also the box of the PDF's digital signature (see
//! `sign.rs`).

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use fiscalbill_common::bill::{BillContent, BillItem};

use super::amount::{capital, figures};
use super::font::{GlyphSet, deflate, font};
use super::sign::{BillSigner, SignatureSlot};

const WIDTH: f32 = 595.0;
const HEIGHT: f32 = 420.0;
const MARGIN: f32 = 36.0;
const ITEMS_PER_PAGE: usize = 10;
const ROW: f32 = 17.0;
/// Frame and rule colour: the brownish red of printed fiscal bills.
const FRAME_RGB: (f32, f32, f32) = (0.62, 0.16, 0.12);
/// The seal's red.
const SEAL_RGB: (f32, f32, f32) = (0.85, 0.1, 0.1);
/// The seal: a circle at the lower right of the last page, over the remarks.
const SEAL_CENTER: (f32, f32) = (WIDTH - MARGIN - 70.0, MARGIN + 52.0);
const SEAL_RADIUS: f32 = 40.0;
const FONT_NAME: Name<'static> = Name(b"F1");

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

fn em_width(text: &str) -> f32 {
    font().width_em(text)
}

/// `text` shortened with `…` to fit `width` points at `size`.
fn fit(text: &str, size: f32, width: f32) -> String {
    if em_width(text) * size <= width {
        return text.to_owned();
    }
    let ellipsis = em_width("…");
    let mut out = String::new();
    let mut used = 0.0;
    for ch in text.chars() {
        let advance = em_width(ch.encode_utf8(&mut [0; 4]));
        if (used + advance + ellipsis) * size > width {
            break;
        }
        used += advance;
        out.push(ch);
    }
    out.push('…');
    out
}

/// One page's drawing, its glyphs going into the document's set.
struct Page<'g> {
    content: Content,
    glyphs: &'g mut GlyphSet,
}

impl<'g> Page<'g> {
    fn new(glyphs: &'g mut GlyphSet) -> Self {
        let mut content = Content::new();
        content.set_stroke_rgb(FRAME_RGB.0, FRAME_RGB.1, FRAME_RGB.2).set_line_width(0.6);
        Self { content, glyphs }
    }

    /// Draws `text` with its baseline starting at (x, y).
    fn text(&mut self, x: f32, y: f32, size: f32, text: &str) {
        let codes = self.glyphs.encode(text);
        self.content.begin_text().set_font(FONT_NAME, size).next_line(x, y).show(Str(&codes)).end_text();
    }

    fn text_right(&mut self, right: f32, y: f32, size: f32, text: &str) {
        self.text(right - em_width(text) * size, y, size, text);
    }

    fn text_center(&mut self, center: f32, y: f32, size: f32, text: &str) {
        self.text(center - em_width(text) * size / 2.0, y, size, text);
    }

    fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32) {
        self.content.move_to(x1, y1).line_to(x2, y2).stroke();
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32) {
        self.content.rect(x, y, w, h).stroke();
    }

    /// The bureau's seal: a red ring with a star, the bureau's name above it and the seal's
    /// purpose below, drawn over whatever lies there as a stamp is.
    fn seal(&mut self, bureau: &str) {
        let (cx, cy) = SEAL_CENTER;
        let r = SEAL_RADIUS;
        // A circle from four cubic Béziers (k = 4/3·(√2−1)).
        let k = 0.552_284_8 * r;
        self.content
            .save_state()
            .set_stroke_rgb(SEAL_RGB.0, SEAL_RGB.1, SEAL_RGB.2)
            .set_fill_rgb(SEAL_RGB.0, SEAL_RGB.1, SEAL_RGB.2)
            .set_line_width(1.8)
            .move_to(cx + r, cy)
            .cubic_to(cx + r, cy + k, cx + k, cy + r, cx, cy + r)
            .cubic_to(cx - k, cy + r, cx - r, cy + k, cx - r, cy)
            .cubic_to(cx - r, cy - k, cx - k, cy - r, cx, cy - r)
            .cubic_to(cx + k, cy - r, cx + r, cy - k, cx + r, cy)
            .stroke();
        // A five-pointed star in the middle.
        let points: Vec<(f32, f32)> = (0..10)
            .map(|i| {
                let angle = std::f32::consts::FRAC_PI_2 + i as f32 * std::f32::consts::PI / 5.0;
                let radius = if i % 2 == 0 { 9.0 } else { 3.6 };
                (cx + radius * angle.cos(), cy + radius * angle.sin())
            })
            .collect();
        self.content.move_to(points[0].0, points[0].1);
        for (x, y) in &points[1..] {
            self.content.line_to(*x, *y);
        }
        self.content.close_path().fill_nonzero();
        let name = fit(bureau, 7.5, 2.0 * r - 12.0);
        self.text_center(cx, cy + 15.0, 7.5, &name);
        self.text_center(cx, cy - 22.0, 7.0, "财政票据专用章");
        self.content.restore_state();
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

/// Renders the bill, signed when a signer is given (its seal then holds the signature).
/// Deterministic for the same input, signer and signing time.
pub fn render(
    header: &BillHeader<'_>,
    content: &BillContent,
    signer: Option<(&BillSigner, i64)>,
) -> Result<Vec<u8>, String> {
    let rows = rows(content);
    let page_count = rows.len().div_ceil(ITEMS_PER_PAGE).max(1);
    let mut glyphs = GlyphSet::default();
    let mut contents = Vec::with_capacity(page_count);
    for (number, chunk) in rows.chunks(ITEMS_PER_PAGE).enumerate() {
        let mut page = Page::new(&mut glyphs);
        draw_page(&mut page, header, content, chunk, number + 1, page_count);
        contents.push(page.content.finish());
    }

    let mut next_id = 1;
    let mut alloc = || {
        let id = Ref::new(next_id);
        next_id += 1;
        id
    };
    let (catalog_id, pages_id, font_id, info_id) = (alloc(), alloc(), alloc(), alloc());
    let page_ids: Vec<(Ref, Ref)> = (0..page_count).map(|_| (alloc(), alloc())).collect();
    let slot = signer.map(|_| SignatureSlot { field: alloc(), signature: alloc() });

    let mut pdf = Pdf::new();
    pdf.set_version(1, 7);
    let mut catalog = pdf.catalog(catalog_id);
    catalog.pages(pages_id);
    if let Some(slot) = &slot {
        slot.write_form(&mut catalog);
    }
    catalog.finish();
    pdf.pages(pages_id).kids(page_ids.iter().map(|(page, _)| *page)).count(page_count as i32);
    for (index, ((page_id, content_id), stream)) in page_ids.iter().zip(&contents).enumerate() {
        let mut page = pdf.page(*page_id);
        page.parent(pages_id).media_box(Rect::new(0.0, 0.0, WIDTH, HEIGHT)).contents(*content_id);
        page.resources().fonts().pair(FONT_NAME, font_id);
        let last = index + 1 == page_count;
        if let (Some(slot), true) = (&slot, last) {
            page.annotations([slot.field]);
        }
        page.finish();
        pdf.stream(*content_id, &deflate(stream.as_slice())).filter(pdf_writer::Filter::FlateDecode);
    }
    let subject = format!("{} {}", content.billing_no, content.billing_code);
    pdf.document_info(info_id)
        .title(TextStr(header.title))
        .author(TextStr(header.bureau))
        .subject(TextStr(&subject))
        .producer(TextStr("fiscalbill bureau-svc"));
    glyphs.embed(&mut pdf, font_id, &mut alloc)?;
    let (Some(slot), Some((signer, signed_at))) = (slot, signer) else {
        return Ok(pdf.finish());
    };
    let last_page = page_ids.last().expect("at least one page").0;
    let (cx, cy) = SEAL_CENTER;
    let seal = Rect::new(cx - SEAL_RADIUS, cy - SEAL_RADIUS, cx + SEAL_RADIUS, cy + SEAL_RADIUS);
    slot.write_signature(&mut pdf, last_page, seal, header.bureau, signed_at);
    signer.sign(pdf.finish(), signed_at)
}

fn draw_page(
    page: &mut Page<'_>,
    header: &BillHeader<'_>,
    content: &BillContent,
    rows: &[BillItem],
    number: usize,
    count: usize,
) {
    let right = WIDTH - MARGIN;

    page.text_center(WIDTH / 2.0, HEIGHT - 52.0, 17.0, &fit(header.title, 17.0, WIDTH - 2.0 * MARGIN));
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
    if number == count {
        page.seal(header.bureau);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdf::sign::BillSigner;

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
    fn renders_a_valid_pdf_with_its_font_embedded() {
        let pdf = render(&header(), &content(3), None).unwrap();
        wechat::pdf::validate(&pdf, 1 << 20).unwrap();
        assert_eq!(render(&header(), &content(3), None).unwrap(), pdf, "deterministic");
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("/FontFile2") && text.contains("/Identity-H") && text.contains("/ToUnicode"));
        assert!(text.contains("/Count 1"));
        assert!(!text.contains("/Sig"), "unsigned without a signer");
    }

    #[test]
    fn long_bills_continue_on_more_pages() {
        let pdf = render(&header(), &content(25), None).unwrap();
        wechat::pdf::validate(&pdf, 1 << 20).unwrap();
        assert!(String::from_utf8_lossy(&pdf).contains("/Count 3"));
    }

    #[test]
    fn a_signed_bill_carries_its_signature_over_the_whole_file() {
        let (signer, _, _) = BillSigner::generate_throwaway("某市财政局").unwrap();
        let pdf = render(&header(), &content(3), Some((&signer, 1_700_000_000))).unwrap();
        wechat::pdf::validate(&pdf, 1 << 20).unwrap();
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("/SubFilter /adbe.pkcs7.detached"));
        let ranges = text.split("/ByteRange [").nth(1).unwrap().split(']').next().unwrap();
        let ranges: Vec<usize> = ranges.split_whitespace().map(|n| n.parse().unwrap()).collect();
        assert_eq!(ranges[0], 0);
        assert_eq!(ranges[2] + ranges[3], pdf.len(), "the second range runs to the end");
        assert_eq!(pdf[ranges[1]], b'<');
        assert_eq!(pdf[ranges[2] - 1], b'>');
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
        assert!(long.ends_with('…') && em_width(&long) * 9.0 <= 90.0, "{long}");
        assert!(em_width("检") > em_width("1"), "CJK wider than digits");
    }
}
