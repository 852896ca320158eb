//! The baseline: the same WeChat calls a flow needs (getbillauthurl, the payer's answer,
//! setpdf, getpdf, insertbill), made directly with the WeChat client and its token cache, with
//! no service, database or gRPC in between. The services' cost is then a ratio to this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use wechat::Secret;
use wechat::clock::{SystemClock, unix_now};
use wechat::image::LogoImage;
use wechat::types::{AuthSource, BillCardInfo, GetBillAuthUrlRequest, InsertBillRequest, InvoiceUserData};
use wechat::{Credentials, MemoryCredentialStore, TokenMode, WechatClient, WechatHttpConfig};

use crate::stats::Latencies;

/// A unit of its own with no callback URL, so its payers' answers push nowhere.
const BASELINE_UNIT: &str = "wxd0000000000000d1";

struct Baseline {
    credentials: Credentials,
    http: reqwest::Client,
    sandbox_url: String,
    bureau: String,
    s_pappid: String,
    card_id: String,
    openid: String,
}

pub struct BaselineResult {
    pub completed: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// From getbillauthurl to insertbill's answer.
    pub flow: Latencies,
}

/// Runs baseline flows with `concurrency` workers for `duration`.
pub async fn run(
    sandbox_url: &str,
    openid: &str,
    concurrency: usize,
    duration: Duration,
    pdf: Bytes,
) -> BaselineResult {
    let baseline = Arc::new(Baseline::set_up(sandbox_url, openid).await.expect("baseline set-up"));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (baseline, pdf) = (baseline.clone(), pdf.clone());
            tokio::spawn(async move {
                let (mut done, mut failed, mut first_error, mut flow) = (0, 0, None, Latencies::default());
                for n in 0.. {
                    if started.elapsed() >= duration {
                        break;
                    }
                    let flow_started = Instant::now();
                    match baseline.flow(&format!("baseline-{worker}-{n}"), &pdf).await {
                        Ok(()) => {
                            done += 1;
                            flow.record(flow_started.elapsed());
                        }
                        Err(error) => {
                            failed += 1;
                            first_error.get_or_insert(error);
                        }
                    }
                }
                (done, failed, first_error, flow)
            })
        })
        .collect();
    let mut result = BaselineResult {
        completed: 0,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        flow: Latencies::default(),
    };
    for worker in workers {
        let (done, failed, first_error, flow) = worker.await.expect("baseline worker");
        result.completed += done;
        result.failed += failed;
        result.first_error = result.first_error.or(first_error);
        result.flow.extend(flow);
    }
    result.elapsed = started.elapsed();
    result
}

impl Baseline {
    async fn set_up(sandbox_url: &str, openid: &str) -> Result<Self, String> {
        let accounts = wechat_sandbox::demo_accounts();
        let demo = |appid: &str| accounts.iter().find(|a| a.appid == appid).expect("demo account").clone();
        let bureau = demo(wechat_sandbox::DEMO_BUREAU);
        let mut unit = demo(wechat_sandbox::DEMO_UNIT);
        unit.appid = BASELINE_UNIT.to_owned();
        unit.name = "基线单位".to_owned();
        unit.callback_url = None;
        let http = reqwest::Client::builder().no_proxy().build().expect("HTTP client");
        http.post(format!("{sandbox_url}/sandbox/accounts"))
            .json(&serde_json::to_value(&unit).expect("account JSON"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;

        let config = WechatHttpConfig { base_url: sandbox_url.to_owned(), ..WechatHttpConfig::default() };
        let client = WechatClient::new(&config).map_err(|e| e.to_string())?;
        let credentials = Credentials::new(
            client.clone(),
            [(bureau.appid.clone(), bureau.secret.clone()), (unit.appid.clone(), unit.secret.clone())],
            TokenMode::StableToken,
            Arc::new(MemoryCredentialStore::default()),
            Arc::new(SystemClock),
        );
        let token = credentials.access_token(&bureau.appid).await.map_err(|e| e.to_string())?.value;
        let s_pappid = client.set_url(&token).await.map_err(|e| e.to_string())?.s_pappid;
        let logo =
            LogoImage::new(bytes::Bytes::from_static(wechat_sandbox::DEMO_LOGO_PNG)).map_err(|e| e.to_string())?;
        let logo_url = client.upload_image(&token, &logo).await.map_err(|e| e.to_string())?;
        let info = BillCardInfo { payee: unit.name.clone(), logo_url };
        let card_id = client.create_bill_card(&token, &info).await.map_err(|e| e.to_string())?;
        Ok(Self {
            credentials,
            http,
            sandbox_url: sandbox_url.to_owned(),
            bureau: bureau.appid,
            s_pappid,
            card_id,
            openid: openid.to_owned(),
        })
    }

    async fn flow(&self, order_id: &str, pdf: &Bytes) -> Result<(), String> {
        let client = self.credentials.client();
        let error = |e: &dyn std::fmt::Display| format!("{order_id}: {e}");
        let unit_token = self.credentials.access_token(BASELINE_UNIT).await.map_err(|e| error(&e))?.value;
        let ticket = self.credentials.card_ticket(BASELINE_UNIT).await.map_err(|e| error(&e))?.value;
        let request = GetBillAuthUrlRequest {
            s_pappid: self.s_pappid.clone(),
            order_id: order_id.to_owned(),
            money: 2_500,
            timestamp: unix_now(),
            source: AuthSource::Web,
            redirect_url: Some("https://hospital.example/paid".to_owned()),
            ticket,
        };
        let link = client.get_bill_auth_url(&unit_token, &request).await.map_err(|e| error(&e))?;
        self.http
            .post(format!("{}/sandbox/authorize", self.sandbox_url))
            .json(&json!({"auth_url": link.auth_url, "openid": self.openid}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| error(&e))?;

        let token: Secret = self.credentials.access_token(&self.bureau).await.map_err(|e| error(&e))?.value;
        let media = client.set_pdf(&token, pdf.clone()).await.map_err(|e| error(&e))?;
        client.get_pdf(&token, &media).await.map_err(|e| error(&e))?;
        let data = InvoiceUserData {
            fee: 2_500,
            title: "张三".to_owned(),
            billing_time: 1_760_000_000,
            billing_no: "44010125".to_owned(),
            billing_code: order_id.to_owned(),
            s_pdf_media_id: media,
        };
        let insert = InsertBillRequest::new(order_id.to_owned(), self.card_id.clone(), BASELINE_UNIT.to_owned(), data);
        client.insert_bill(&token, &insert).await.map_err(|e| error(&e))?;
        Ok(())
    }
}
