//! The rendered bill in a real PDF toolchain: poppler lists its fonts as embedded (pdffonts),
//! extracts its Chinese text (pdftotext), draws its glyphs with no CJK font on the machine
//! (pdftoppm) and verifies the bureau's signature (pdfsig), which breaks when one byte changes.
//! Needs poppler-utils (`./run-tests` installs it). Missing tools fail the test: it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use bureau_svc::pdf::render::{BillHeader, render};
use bureau_svc::pdf::sign::BillSigner;
use fiscalbill_common::bill::{BillContent, BillItem};
use sha2::{Digest, Sha256};

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

fn signer() -> &'static BillSigner {
    static SIGNER: OnceLock<BillSigner> = OnceLock::new();
    SIGNER.get_or_init(|| BillSigner::generate_throwaway("沙箱市财政局").unwrap().0)
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fiscalbill-poppler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rendered(content: &BillContent) -> Vec<u8> {
    let header = BillHeader {
        title: "广东省非税收入统一票据（电子）",
        bureau: "沙箱市财政局",
        payee: "沙箱市人民医院",
        order_id: "order-42",
    };
    render(&header, content, Some((signer(), 1_700_000_000))).unwrap()
}

fn write_pdf(name: &str) -> PathBuf {
    let path = dir().join(name);
    std::fs::write(&path, rendered(&bill())).unwrap();
    path
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    run_with(program, args, &[])
}

fn run_with(program: &str, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut command = Command::new(program);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output =
        command.output().unwrap_or_else(|e| panic!("{program} is required (./run-tests installs poppler-utils): {e}"));
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

/// A fontconfig that knows no font at all: whatever poppler draws comes from the PDF.
fn no_fonts_config() -> PathBuf {
    let dir = dir();
    let empty = dir.join("no-fonts");
    std::fs::create_dir_all(&empty).unwrap();
    let config = dir.join("fonts.conf");
    let xml = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE fontconfig SYSTEM \"fonts.dtd\">\n<fontconfig><dir>{}</dir><cachedir>{}</cachedir></fontconfig>\n",
        empty.display(),
        dir.join("fc-cache").display()
    );
    std::fs::write(&config, xml).unwrap();
    config
}

/// Dark pixels of the title row (35..56 pt from the top, at 72 dpi), drawn with `env`.
fn title_ink(path: &Path, env: &[(&str, &Path)]) -> usize {
    let prefix = path.with_extension(format!("{}", env.len()));
    run_with("pdftoppm", &["-gray", "-r", "72", "-singlefile", path.to_str().unwrap(), prefix.to_str().unwrap()], env);
    let pgm = std::fs::read(format!("{}.pgm", prefix.display())).unwrap();
    dark_pixels(&pgm, 35, 56)
}

#[test]
fn pdftoppm_draws_the_chinese_glyphs_without_any_font_installed() {
    let path = write_pdf("draw.pdf");
    let config = no_fonts_config();
    let bare = title_ink(&path, &[("FONTCONFIG_FILE", &config)]);
    let with_fonts = title_ink(&path, &[]);
    // Without a CJK font on the machine poppler drew empty boxes or nothing for the title;
    // with the font embedded it draws the same glyphs either way.
    assert!(bare > 300, "the title's Chinese glyphs were not drawn without fonts ({bare} dark pixels)");
    assert_eq!(bare, with_fonts, "the same glyphs with and without the machine's fonts");
}

#[test]
fn pdffonts_lists_every_font_embedded() {
    let path = write_pdf("fonts.pdf");
    let output = String::from_utf8(run("pdffonts", &[path.to_str().unwrap()]).stdout).unwrap();
    let fonts: Vec<&str> = output.lines().skip(2).collect();
    assert!(!fonts.is_empty(), "{output}");
    for font in fonts {
        let columns: Vec<&str> = font.split_whitespace().collect();
        // name type encoding emb sub uni object ID
        assert!(font.contains("CID TrueType") && font.contains("Identity-H"), "{output}");
        assert_eq!(
            &columns[columns.len() - 5..columns.len() - 2],
            ["yes", "yes", "yes"],
            "embedded, subset, ToUnicode:\n{output}"
        );
    }
}

#[test]
fn pdfsig_verifies_the_signature_and_sees_one_changed_byte() {
    let path = write_pdf("signed.pdf");
    let output = String::from_utf8(run("pdfsig", &[path.to_str().unwrap()]).stdout).unwrap();
    assert!(output.contains("Signature Validation: Signature is Valid."), "{output}");
    assert!(output.contains("Total document signed"), "{output}");
    assert!(output.contains("Signer Certificate Common Name: 沙箱市财政局"), "{output}");
    assert!(output.contains("adbe.pkcs7.detached"), "{output}");

    // One byte changed in the signed range: a digit of the billing code in the document
    // information.
    let mut tampered = std::fs::read(&path).unwrap();
    let at = tampered.windows(10).position(|w| w == b"0000012345").expect("the billing code");
    tampered[at + 9] = b'6';
    let tampered_path = dir().join("tampered.pdf");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let output = Command::new("pdfsig").arg(&tampered_path).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Signature Validation: Digest Mismatch."), "{text}");
}

#[test]
fn a_ten_item_bill_stays_small() {
    let mut content = bill();
    content.items = (0..10)
        .map(|i| BillItem {
            name: format!("检查项目第{i}项（含影像、化验及诊疗）"),
            quantity: "1".into(),
            unit: "次".into(),
            unit_price: 10_000,
            amount: 10_000,
        })
        .collect();
    content.fee = 100_000;
    let pdf = rendered(&content);
    assert!(pdf.len() < 200 * 1024, "{} bytes", pdf.len());
    eprintln!("a signed 10-item bill: {} bytes", pdf.len());
}

#[test]
fn a_supplied_pdf_is_signed_by_an_incremental_update_that_keeps_its_bytes() {
    let supplied = wechat::pdf::sample("Supplied by the hospital");
    let signed = signer().sign_supplied(supplied.clone(), "沙箱市财政局", 1_700_000_000).unwrap();
    assert_eq!(signed.sha256, hex::encode(Sha256::digest(&signed.pdf)), "the digest is of the signed file's bytes");
    assert_eq!(signed.original_sha256, hex::encode(Sha256::digest(&supplied)), "and of the PDF as supplied");
    let signed = signed.pdf;
    assert_eq!(&signed[..supplied.len()], &supplied[..], "the supplied bytes are kept as they were");
    wechat::pdf::validate(&signed, 1 << 20).unwrap();
    let path = dir().join("supplied-signed.pdf");
    std::fs::write(&path, &signed).unwrap();
    let output = String::from_utf8(run("pdfsig", &[path.to_str().unwrap()]).stdout).unwrap();
    assert!(output.contains("Signature Validation: Signature is Valid."), "{output}");
    assert!(output.contains("Total document signed"), "{output}");
    let text = String::from_utf8(run("pdftotext", &[path.to_str().unwrap(), "-"]).stdout).unwrap();
    assert!(text.contains("Supplied by the hospital"), "{text}");

    // A PDF signed before (here: by us again) keeps its first signature; both verify.
    let twice = signer().sign_supplied(signed.clone(), "沙箱市财政局", 1_700_000_100).unwrap();
    assert_eq!(twice.sha256, hex::encode(Sha256::digest(&twice.pdf)));
    assert_eq!(twice.original_sha256, hex::encode(Sha256::digest(&signed)));
    let twice = twice.pdf;
    let twice_path = dir().join("supplied-signed-twice.pdf");
    std::fs::write(&twice_path, &twice).unwrap();
    let output = String::from_utf8(run("pdfsig", &[twice_path.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(output.matches("Signature Validation: Signature is Valid.").count(), 2, "{output}");

    // Changing the hospital's own bytes breaks the signature.
    let mut tampered = signed.clone();
    let at = tampered.windows(8).position(|w| w == b"Supplied").unwrap();
    tampered[at] = b's';
    let tampered_path = dir().join("supplied-tampered.pdf");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let output = Command::new("pdfsig").arg(&tampered_path).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("Digest Mismatch"));
}
