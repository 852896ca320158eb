//! The rendered bill in a real PDF toolchain: poppler extracts its Chinese text (pdftotext) and
//! draws its glyphs (pdftoppm). Needs poppler-utils, poppler-data and a CJK font
//! (Debian: `apt-get install poppler-utils poppler-data fonts-wqy-microhei`); `.ci/run`
//! installs them. Missing tools fail the test: it never skips.

use std::process::Command;

use bureau_svc::pdf::render::{BillHeader, render};
use fiscalbill_common::bill::{BillContent, BillItem};

fn bill() -> BillContent {
    BillContent {
        fee: 168_032,
        payer_title: "张三丰".into(),
        billing_no: "44010125".into(),
        billing_code: "0000012345".into(),
        billing_time: 1_700_000_000,
        items: vec![
            BillItem {
                name: "门诊挂号费".into(),
                quantity: "1".into(),
                unit: "次".into(),
                unit_price: 1_000,
                amount: 1_000,
            },
            BillItem {
                name: "影像检查费".into(),
                quantity: "2.5".into(),
                unit: "项".into(),
                unit_price: 66_813,
                amount: 167_032,
            },
        ],
        remarks: "门诊收费".into(),
    }
}

fn write_pdf(name: &str) -> std::path::PathBuf {
    let header = BillHeader {
        title: "广东省非税收入统一票据（电子）",
        bureau: "沙箱市财政局",
        payee: "沙箱市人民医院",
        order_id: "order-42",
    };
    let dir = std::env::temp_dir().join(format!("fiscalbill-poppler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, render(&header, &bill())).unwrap();
    path
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("{program} is required (apt-get install poppler-utils poppler-data fonts-wqy-microhei): {e}")
    });
    assert!(output.status.success(), "{program} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

#[test]
fn pdftotext_extracts_the_chinese_text() {
    let path = write_pdf("text.pdf");
    let output = run("pdftotext", &["-layout", path.to_str().unwrap(), "-"]);
    let text = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "广东省非税收入统一票据（电子）",
        "票据代码：44010125",
        "票据号码：0000012345",
        "开票日期：2023-11-15",
        "交款人：张三丰",
        "执收单位：沙箱市人民医院",
        "门诊挂号费",
        "影像检查费",
        "金额合计（大写）：壹仟陆佰捌拾元叁角贰分",
        "￥1,680.32",
        "开票单位：沙箱市财政局",
        "订单号：order-42",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// Dark pixels of a binary PGM (P5) within rows `top..bottom`.
fn dark_pixels(pgm: &[u8], top: usize, bottom: usize) -> usize {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(std::str::from_utf8(&pgm[start..at]).unwrap().to_owned());
    }
    assert_eq!(fields[0], "P5");
    let width: usize = fields[1].parse().unwrap();
    let pixels = &pgm[at + 1..];
    pixels[top * width..bottom * width].iter().filter(|&&p| p < 128).count()
}

#[test]
fn pdftoppm_draws_the_chinese_glyphs() {
    let path = write_pdf("draw.pdf");
    let prefix = path.with_extension("");
    run("pdftoppm", &["-gray", "-r", "72", "-singlefile", path.to_str().unwrap(), prefix.to_str().unwrap()]);
    let pgm = std::fs::read(prefix.with_extension("pgm")).unwrap();
    // At 72 dpi a pixel is a point: the title's glyphs sit between 35 and 56 pt from the top,
    // above its rule. Without a CJK font poppler draws nothing there.
    let title = dark_pixels(&pgm, 35, 56);
    assert!(title > 300, "the title's Chinese glyphs were not drawn ({title} dark pixels)");
    // The rows between the title and the header line stay blank.
    assert!(dark_pixels(&pgm, 64, 70) < 20);
}
