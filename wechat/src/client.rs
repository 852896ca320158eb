//! The HTTP client for the WeChat API: one method per endpoint, timeouts on every call, typed
//! errors, and resends only where the doc's error table allows them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::Endpoint;
use crate::error::{WechatError, split_errmsg};
use crate::image::LogoImage;
use crate::pdf_check::{Comparison, PdfCheck};
use crate::rulebook::ErrorKind;
use crate::secret::Secret;
use crate::types::*;

/// Where and how to reach WeChat. Durations are in milliseconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatHttpConfig {
    /// The API host, `https://api.weixin.qq.com` in production, the sandbox in development.
    pub base_url: String,
    /// Time allowed to open the connection (TCP + TLS).
    pub connect_timeout_ms: u64,
    /// Time allowed for one whole request, answer included.
    pub timeout_ms: u64,
    /// How often a failed call is sent again when that is safe (errcode -1, HTTP 5xx, lost
    /// connections; see [`Endpoint::resend_is_safe`]).
    pub max_resends: u32,
    /// Pause before the first resend; doubles each time, with jitter.
    pub resend_backoff_ms: u64,
    /// Outbound HTTP(S) proxy URL, e.g. `http://proxy.gov.local:3128`. None: connect directly
    /// (environment proxy variables are ignored, so the setting is the only truth).
    pub proxy: Option<String>,
}

impl Default for WechatHttpConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.weixin.qq.com".to_owned(),
            connect_timeout_ms: 3_000,
            timeout_ms: 10_000,
            max_resends: 2,
            resend_backoff_ms: 200,
            proxy: None,
        }
    }
}

/// The largest answer body read from WeChat; real ones are a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("wechat base_url {0:?} must be an http(s) URL without query or fragment")]
    BaseUrl(String),
    #[error("wechat proxy URL is invalid: {0}")]
    Proxy(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Told about every WeChat call: its endpoint, outcome (`0` for success, the errcode,
/// `http_503`, `timeout`, `transport`, `malformed`) and duration. Metrics implement it.
pub trait CallObserver: Send + Sync {
    fn observe(&self, endpoint: Endpoint, outcome: &str, elapsed: Duration);
}

/// A cheap-to-clone client for the WeChat API.
#[derive(Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    base_url: String,
    max_resends: u32,
    resend_backoff: Duration,
    observers: Vec<std::sync::Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for WechatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatClient").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

enum Payload {
    Empty,
    Json(Vec<u8>),
    /// multipart/form-data with one file part.
    File {
        field: &'static str,
        file_name: &'static str,
        mime: &'static str,
        bytes: Bytes,
    },
}

impl WechatClient {
    pub fn new(config: &WechatHttpConfig) -> Result<Self, ClientConfigError> {
        crate::install_crypto_provider();
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base_url).map_err(|_| ClientConfigError::BaseUrl(base_url.clone()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ClientConfigError::BaseUrl(base_url));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(concat!("fiscalbill/", env!("CARGO_PKG_VERSION")))
            .no_proxy();
        if let Some(proxy) = &config.proxy {
            let proxy =
                reqwest::Proxy::all(proxy).map_err(|e| ClientConfigError::Proxy(e.without_url().to_string()))?;
            builder = builder.proxy(proxy);
        }
        let http = builder.build().map_err(|e| ClientConfigError::Build(e.to_string()))?;
        Ok(Self {
            http,
            base_url,
            max_resends: config.max_resends,
            resend_backoff: Duration::from_millis(config.resend_backoff_ms),
            observers: Vec::new(),
        })
    }

    /// Reports every call to `observer` too (metrics, reachability).
    pub fn with_observer(mut self, observer: std::sync::Arc<dyn CallObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET cgi-bin/token`. Every fetch invalidates the account's previous token after five
    /// minutes, so this is never resent automatically.
    pub async fn token(&self, appid: &str, secret: &Secret) -> Result<AccessToken, WechatError> {
        let query = [("grant_type", "client_credential"), ("appid", appid), ("secret", secret.expose())];
        self.call(Endpoint::Token, None, &query, Payload::Empty).await
    }

    /// `POST cgi-bin/stable_token`. Automatic paths always pass `force_refresh = false`.
    pub async fn stable_token(
        &self,
        appid: &str,
        secret: &Secret,
        force_refresh: bool,
    ) -> Result<AccessToken, WechatError> {
        let body =
            StableTokenRequest { grant_type: "client_credential", appid, secret: secret.expose(), force_refresh };
        self.call(Endpoint::StableToken, None, &[], json(&body)).await
    }

    /// `GET cgi-bin/ticket/getticket?type=wx_card`.
    pub async fn get_card_ticket(&self, access_token: &Secret) -> Result<Ticket, WechatError> {
        self.call(Endpoint::GetTicket, Some(access_token), &[("type", "wx_card")], Payload::Empty).await
    }

    /// `POST card/invoice/seturl`, with the s_pappid parsed out of invoice_url.
    pub async fn set_url(&self, access_token: &Secret) -> Result<SpAppId, WechatError> {
        let response: SetUrlResponse =
            self.call(Endpoint::SetUrl, Some(access_token), &[], Payload::Json(b"{}".to_vec())).await?;
        let s_pappid = parse_s_pappid(&response.invoice_url).ok_or_else(|| WechatError::Malformed {
            endpoint: Endpoint::SetUrl,
            message: "invoice_url carries no s_pappid".to_owned(),
        })?;
        Ok(SpAppId { invoice_url: response.invoice_url, s_pappid })
    }

    /// `POST nontax/getbillauthurl`.
    pub async fn get_bill_auth_url(
        &self,
        access_token: &Secret,
        request: &GetBillAuthUrlRequest,
    ) -> Result<AuthUrl, WechatError> {
        self.call(Endpoint::GetBillAuthUrl, Some(access_token), &[], json(request)).await
    }

    /// `POST card/invoice/getauthdata`.
    pub async fn get_auth_data(&self, access_token: &Secret, order: &OrderRef) -> Result<AuthData, WechatError> {
        self.call(Endpoint::GetAuthData, Some(access_token), &[], json(order)).await
    }

    /// `POST card/invoice/rejectinsert`.
    pub async fn reject_insert(&self, access_token: &Secret, request: &RejectInsertRequest) -> Result<(), WechatError> {
        let _: Value = self.call(Endpoint::RejectInsert, Some(access_token), &[], json(request)).await?;
        Ok(())
    }

    /// `POST cgi-bin/media/uploadimg` (multipart, part `media`, a JPG or PNG of at most 1 MB):
    /// the image's URL on WeChat's image host, for a template's logo_url.
    pub async fn upload_image(&self, access_token: &Secret, image: &LogoImage) -> Result<String, WechatError> {
        let payload = Payload::File {
            field: "media",
            file_name: image.kind().file_name(),
            mime: image.kind().mime(),
            bytes: image.bytes().clone(),
        };
        let response: UploadImgResponse = self.call(Endpoint::UploadImg, Some(access_token), &[], payload).await?;
        Ok(response.url)
    }

    /// `POST nontax/createbillcard`; returns the card_id.
    pub async fn create_bill_card(&self, access_token: &Secret, info: &BillCardInfo) -> Result<String, WechatError> {
        let body = CreateBillCardRequest {
            invoice_info: InvoiceInfo { payee: &info.payee, base_info: BaseInfo { logo_url: &info.logo_url } },
        };
        let response: CreateBillCardResponse =
            self.call(Endpoint::CreateBillCard, Some(access_token), &[], json(&body)).await?;
        Ok(response.card_id)
    }

    /// `POST card/invoice/platform/setpdf` (multipart, part `pdf`); returns the s_media_id.
    pub async fn set_pdf(&self, access_token: &Secret, pdf: Bytes) -> Result<String, WechatError> {
        let payload = Payload::File { field: "pdf", file_name: "bill.pdf", mime: "application/pdf", bytes: pdf };
        let response: SetPdfResponse = self.call(Endpoint::SetPdf, Some(access_token), &[], payload).await?;
        Ok(response.s_media_id)
    }

    /// `POST card/invoice/platform/getpdf` with `action=get_url` in the body.
    pub async fn get_pdf(&self, access_token: &Secret, s_media_id: &str) -> Result<PdfUrl, WechatError> {
        let body = GetPdfRequest { action: "get_url", s_media_id };
        self.call(Endpoint::GetPdf, Some(access_token), &[], json(&body)).await
    }

    /// Downloads the file at a getpdf `pdf_url`, reading at most `max_bytes` and never holding
    /// the whole file, and compares it with the PDF `uploaded` when given, else digests it: the
    /// check that WeChat keeps the PDF that was uploaded. Errors name getpdf, whose check this is.
    pub async fn check_pdf(
        &self,
        pdf_url: &str,
        max_bytes: usize,
        uploaded: Option<&[u8]>,
    ) -> Result<PdfCheck, WechatError> {
        let endpoint = Endpoint::GetPdf;
        let started = Instant::now();
        let span =
            tracing::info_span!("wechat.pdf_download", otel.kind = "client", otel.status_code = tracing::field::Empty);
        let result = self.download_compared(pdf_url, max_bytes, uploaded).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        let outcome = format!("download_{}", outcome_label(&result));
        for observer in &self.observers {
            observer.observe(endpoint, &outcome, started.elapsed());
        }
        if let Err(error) = &result {
            tracing::warn!(%error, "cannot download the uploaded PDF from pdf_url");
        }
        result
    }

    async fn download_compared(
        &self,
        pdf_url: &str,
        max_bytes: usize,
        uploaded: Option<&[u8]>,
    ) -> Result<PdfCheck, WechatError> {
        let endpoint = Endpoint::GetPdf;
        let url = url::Url::parse(pdf_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| WechatError::Malformed { endpoint, message: "pdf_url is not an http(s) URL".to_owned() })?;
        let mut response = self.http.get(url).send().await.map_err(|e| transport_error(endpoint, e))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(WechatError::HttpStatus { endpoint, status: response.status().as_u16() });
        }
        let mut comparison = Comparison::new(uploaded);
        while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(endpoint, e))? {
            if comparison.size() + chunk.len() > max_bytes {
                return Err(WechatError::Malformed {
                    endpoint,
                    message: format!("the PDF at pdf_url is larger than {max_bytes} bytes"),
                });
            }
            comparison.add(&chunk);
        }
        Ok(comparison.finish())
    }

    /// `POST nontax/insertbill`. Never resent here: the bureau's state machine decides.
    pub async fn insert_bill(
        &self,
        access_token: &Secret,
        request: &InsertBillRequest,
    ) -> Result<InsertedBill, WechatError> {
        self.call(Endpoint::InsertBill, Some(access_token), &[], json(request)).await
    }

    /// `POST card/invoice/platform/updatestatus`.
    pub async fn update_status(&self, access_token: &Secret, request: &UpdateStatusRequest) -> Result<(), WechatError> {
        let _: Value = self.call(Endpoint::UpdateStatus, Some(access_token), &[], json(request)).await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        access_token: Option<&Secret>,
        query: &[(&str, &str)],
        payload: Payload,
    ) -> Result<T, WechatError> {
        let mut resends = 0;
        loop {
            let started = Instant::now();
            // A client span per attempt; the URL's path only (its query holds the token).
            let span = tracing::info_span!(
                "wechat.call",
                otel.name = endpoint.path(),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                url.path = endpoint.path(),
                wechat.errcode = tracing::field::Empty,
                wechat.rid = tracing::field::Empty,
            );
            let result = self.send_once(endpoint, access_token, query, &payload).instrument(span.clone()).await;
            if let Err(error) = &result {
                span.record("otel.status_code", "ERROR");
                span.record("wechat.errcode", error.errcode());
                span.record("wechat.rid", error.rid());
            }
            drop(span);
            let elapsed = started.elapsed();
            let elapsed_ms = elapsed.as_millis() as u64;
            let outcome = outcome_label(&result);
            for observer in &self.observers {
                observer.observe(endpoint, &outcome, elapsed);
            }
            match &result {
                Ok(_) => tracing::debug!(%endpoint, elapsed_ms, "wechat call ok"),
                Err(error) if error.kind().tells_order_state() => tracing::info!(
                    %endpoint, elapsed_ms, errcode = error.errcode(), rid = error.rid(), %error, "wechat answered the order's state"
                ),
                Err(error) => tracing::warn!(
                    %endpoint, elapsed_ms, errcode = error.errcode(), rid = error.rid(), %error, "wechat call failed"
                ),
            }
            match result {
                Err(error) if resends < self.max_resends && may_resend(endpoint, &error) => {
                    resends += 1;
                    tokio::time::sleep(crate::backoff::jittered(
                        self.resend_backoff,
                        self.resend_backoff * 16,
                        resends,
                    ))
                    .await;
                }
                other => return other,
            }
        }
    }

    async fn send_once<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        access_token: Option<&Secret>,
        query: &[(&str, &str)],
        payload: &Payload,
    ) -> Result<T, WechatError> {
        let url = format!("{}{}", self.base_url, endpoint.path());
        let mut request = if endpoint.is_get() { self.http.get(url) } else { self.http.post(url) };
        if let Some(token) = access_token {
            request = request.query(&[("access_token", token.expose())]);
        }
        if !query.is_empty() {
            request = request.query(query);
        }
        request = match payload {
            Payload::Empty => request,
            Payload::Json(body) => {
                request.header(http::header::CONTENT_TYPE, "application/json; charset=utf-8").body(body.clone())
            }
            Payload::File { field, file_name, mime, bytes } => {
                let part = reqwest::multipart::Part::stream_with_length(bytes.clone(), bytes.len() as u64)
                    .file_name(*file_name)
                    .mime_str(mime)
                    .expect("static mime types parse");
                request.multipart(reqwest::multipart::Form::new().part(*field, part))
            }
        };
        let response = request.send().await.map_err(|e| transport_error(endpoint, e))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(WechatError::HttpStatus { endpoint, status: status.as_u16() });
        }
        let body = read_capped(endpoint, response).await?;
        parse_answer(endpoint, &body)
    }
}

fn outcome_label<T>(result: &Result<T, WechatError>) -> String {
    match result {
        Ok(_) => "0".to_owned(),
        Err(WechatError::Api { errcode, .. }) => errcode.to_string(),
        Err(WechatError::HttpStatus { status, .. }) => format!("http_{status}"),
        Err(WechatError::Timeout { .. }) => "timeout".to_owned(),
        Err(WechatError::Transport { .. }) => "transport".to_owned(),
        Err(WechatError::Malformed { .. }) => "malformed".to_owned(),
    }
}

fn json<T: Serialize>(body: &T) -> Payload {
    Payload::Json(serde_json::to_vec(body).expect("request bodies serialize"))
}

async fn read_capped(endpoint: Endpoint, mut response: reqwest::Response) -> Result<Vec<u8>, WechatError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(endpoint, e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(WechatError::Malformed {
                endpoint,
                message: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Turns WeChat's JSON answer into `T`, or into an `Api` error when errcode is non-zero.
pub(crate) fn parse_answer<T: DeserializeOwned>(endpoint: Endpoint, body: &[u8]) -> Result<T, WechatError> {
    let malformed = |message: String| WechatError::Malformed { endpoint, message };
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let Value::Object(fields) = &value else {
        return Err(malformed("not a JSON object".to_owned()));
    };
    let errcode = match fields.get("errcode") {
        None => 0,
        Some(code) => code.as_i64().ok_or_else(|| malformed("errcode is not an integer".to_owned()))?,
    };
    if errcode != 0 {
        let raw = fields.get("errmsg").and_then(Value::as_str).unwrap_or_default();
        let (errmsg, rid, hint) = split_errmsg(raw);
        return Err(WechatError::Api { endpoint, errcode, errmsg, rid, hint });
    }
    serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
}

/// Turns a reqwest failure into a typed error whose text holds neither the URL (it carries the
/// access_token) nor anything else from the request: reqwest's own message without the URL,
/// then its causes, on one line.
fn transport_error(endpoint: Endpoint, error: reqwest::Error) -> WechatError {
    if error.is_timeout() {
        return WechatError::Timeout { endpoint };
    }
    let connected = !error.is_connect();
    let message = crate::error::with_causes(&error.without_url());
    WechatError::Transport { endpoint, connected, message }
}

fn may_resend(endpoint: Endpoint, error: &WechatError) -> bool {
    match error {
        // The request never left: always safe.
        WechatError::Transport { connected: false, .. } => true,
        WechatError::Api { .. } => error.kind() == ErrorKind::Busy && endpoint.resend_is_safe(),
        WechatError::HttpStatus { status, .. } => *status >= 500 && endpoint.resend_is_safe(),
        WechatError::Timeout { .. } | WechatError::Transport { .. } => endpoint.resend_is_safe(),
        WechatError::Malformed { .. } => false,
    }
}

/// Extracts and percent-decodes `s_pappid` from seturl's invoice_url. `+` stays `+`: the value
/// is base64 and WeChat does not form-encode it.
pub fn parse_s_pappid(invoice_url: &str) -> Option<String> {
    let query = invoice_url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if key != "s_pappid" || value.is_empty() {
            return None;
        }
        percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|v| v.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s_pappid_is_percent_decoded_and_keeps_plus() {
        let url = "https://mp.weixin.qq.com/bizmall/authinvoice?action=list&s_pappid=d3g1MjM0X2Fi%2B%2Fc%3D";
        assert_eq!(parse_s_pappid(url).as_deref(), Some("d3g1MjM0X2Fi+/c="));
        let raw_plus = "https://mp.weixin.qq.com/bizmall/authinvoice?action=list&s_pappid=ab+cd==";
        assert_eq!(parse_s_pappid(raw_plus).as_deref(), Some("ab+cd=="));
        assert_eq!(parse_s_pappid("https://mp.weixin.qq.com/bizmall/authinvoice?action=list"), None);
        assert_eq!(parse_s_pappid("no query"), None);
    }

    #[test]
    fn answers_parse_into_values_or_api_errors() {
        let ok: AuthUrl =
            parse_answer(Endpoint::GetBillAuthUrl, br#"{"errcode":0,"errmsg":"ok","auth_url":"u","expire_time":7200}"#)
                .unwrap();
        assert_eq!(ok, AuthUrl { auth_url: "u".into(), expire_time: 7200 });
        let token: AccessToken = parse_answer(Endpoint::Token, br#"{"access_token":"T","expires_in":7200}"#).unwrap();
        assert_eq!(token.access_token.expose(), "T");
        let code = crate::rulebook::INVALID_CREDENTIAL.errcode;
        let body = format!(r#"{{"errcode":{code},"errmsg":"invalid credential rid: a-b-c"}}"#);
        let err = parse_answer::<AuthUrl>(Endpoint::GetBillAuthUrl, body.as_bytes()).unwrap_err();
        assert_eq!(err.errcode(), Some(code));
        assert_eq!(err.rid(), Some("a-b-c"));
        let bad = parse_answer::<AuthUrl>(Endpoint::GetBillAuthUrl, b"<html>").unwrap_err();
        assert!(matches!(bad, WechatError::Malformed { .. }));
        let missing = parse_answer::<AuthUrl>(Endpoint::GetBillAuthUrl, br#"{"errcode":0,"errmsg":"ok"}"#).unwrap_err();
        assert!(matches!(missing, WechatError::Malformed { .. }));
    }

    #[test]
    fn resends_follow_the_error_table() {
        let busy = |endpoint| WechatError::Api {
            endpoint,
            errcode: crate::rulebook::SYSTEM_BUSY.errcode,
            errmsg: String::new(),
            rid: None,
            hint: None,
        };
        assert!(may_resend(Endpoint::GetAuthData, &busy(Endpoint::GetAuthData)));
        assert!(!may_resend(Endpoint::InsertBill, &busy(Endpoint::InsertBill)));
        assert!(!may_resend(Endpoint::Token, &busy(Endpoint::Token)));
        let refused =
            WechatError::Transport { endpoint: Endpoint::InsertBill, connected: false, message: String::new() };
        assert!(may_resend(Endpoint::InsertBill, &refused));
        let timeout = WechatError::Timeout { endpoint: Endpoint::InsertBill };
        assert!(!may_resend(Endpoint::InsertBill, &timeout));
        let quota = WechatError::Api {
            endpoint: Endpoint::GetPdf,
            errcode: crate::rulebook::MINUTE_QUOTA.errcode,
            errmsg: String::new(),
            rid: None,
            hint: None,
        };
        assert!(!may_resend(Endpoint::GetPdf, &quota));
    }
}
