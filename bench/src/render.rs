//! `--render-bills N`: the cost of a rendered bill alone, in this process: N bills of 10 items
//! rendered with the embedded font subset and signed, one after another; time per bill (render
//! and sign, and render alone) and size per bill.

use std::time::{Duration, Instant};

use bureau_svc::pdf::render::{BillHeader, render};
use bureau_svc::pdf::sign::BillSigner;
use fiscalbill_common::bill::{BillContent, BillItem};

fn bill(number: usize) -> BillContent {
    let items = (0..10)
        .map(|i| BillItem {
            name: format!("检查项目第{i}项（含影像、化验及诊疗）"),
            quantity: "1".into(),
            unit: "次".into(),
            unit_price: 10_000,
            amount: 10_000,
        })
        .collect();
    BillContent {
        fee: 100_000,
        payer_title: "张三丰".into(),
        billing_no: "44010125".into(),
        billing_code: format!("{number:010}"),
        billing_time: 1_760_000_000,
        items,
        remarks: "门诊收费".into(),
    }
}

pub fn run(count: usize) -> Result<String, String> {
    let (signer, _, _) = BillSigner::generate_throwaway("沙箱市财政局")?;
    let header = BillHeader {
        title: "沙箱省非税收入统一票据（电子）",
        bureau: "沙箱市财政局",
        payee: "沙箱市人民医院",
        order_id: "bench",
    };
    let time = |signed: bool| -> Result<(Duration, usize), String> {
        let started = Instant::now();
        let mut size = 0;
        for number in 0..count {
            let signer = signed.then_some((&signer, 1_760_000_000));
            size = render(&header, &bill(number), signer)?.len();
        }
        Ok((started.elapsed() / count as u32, size))
    };
    time(true)?; // warm-up: the font is parsed once per process
    let (signed, signed_size) = time(true)?;
    let (unsigned, unsigned_size) = time(false)?;
    Ok(format!(
        "rendered bill (10 items, release build, one core): render + sign {:.2} ms, {} bytes; render alone {:.2} ms, {} bytes ({count} bills each)\n",
        signed.as_secs_f64() * 1e3,
        signed_size,
        unsigned.as_secs_f64() * 1e3,
        unsigned_size,
    ))
}
