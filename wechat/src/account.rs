//! One WeChat account's calls. Each method fetches the account's access token from the cache,
//! calls its endpoint, and when WeChat rejects the token (`TokenRejected`) expires it if still
//! current and calls once more with a fresh one: the rule lives here once, not at every call.

use bytes::Bytes;

use crate::credentials::{CallError, Credential, Credentials};
use crate::image::LogoImage;
use crate::types::{
    AuthData, AuthUrl, BillCardInfo, GetBillAuthUrlRequest, InsertBillRequest, InsertedBill, OrderRef, PdfUrl,
    RejectInsertRequest, SpAppId, Ticket, UpdateStatusRequest,
};

/// The calls of one account (an appid this process has the secret of).
#[derive(Clone, Copy)]
pub struct Account<'a> {
    credentials: &'a Credentials,
    appid: &'a str,
}

impl<'a> Account<'a> {
    pub(crate) fn new(credentials: &'a Credentials, appid: &'a str) -> Self {
        Self { credentials, appid }
    }

    pub fn appid(&self) -> &str {
        self.appid
    }

    /// The account's current access token (cached, refreshed ahead of expiry).
    pub async fn access_token(&self) -> Result<Credential, CallError> {
        self.credentials.access_token(self.appid).await
    }

    /// The account's current wx_card ticket (cached for its lifetime).
    pub async fn card_ticket(&self) -> Result<Credential, CallError> {
        self.credentials.card_ticket(self.appid).await
    }

    /// `cgi-bin/ticket/getticket`, bypassing the cache (the cache's own refresh).
    pub(crate) async fn fetch_card_ticket(&self) -> Result<Ticket, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.get_card_ticket(&token).await })
            .await
    }

    /// `card/invoice/seturl`: the account's s_pappid.
    pub async fn set_url(&self) -> Result<SpAppId, CallError> {
        let client = self.credentials.client();
        self.credentials.with_access_token(self.appid, |token| async move { client.set_url(&token).await }).await
    }

    /// `nontax/getbillauthurl`.
    pub async fn get_bill_auth_url(&self, request: &GetBillAuthUrlRequest) -> Result<AuthUrl, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.get_bill_auth_url(&token, request).await })
            .await
    }

    /// `card/invoice/getauthdata`.
    pub async fn get_auth_data(&self, order: &OrderRef) -> Result<AuthData, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.get_auth_data(&token, order).await })
            .await
    }

    /// `card/invoice/rejectinsert`.
    pub async fn reject_insert(&self, request: &RejectInsertRequest) -> Result<(), CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.reject_insert(&token, request).await })
            .await
    }

    /// `cgi-bin/media/uploadimg`: the image's URL on WeChat's image host.
    pub async fn upload_image(&self, image: &LogoImage) -> Result<String, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.upload_image(&token, image).await })
            .await
    }

    /// `nontax/createbillcard`: the new template's card_id.
    pub async fn create_bill_card(&self, info: &BillCardInfo) -> Result<String, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.create_bill_card(&token, info).await })
            .await
    }

    /// `card/invoice/platform/setpdf`: the s_media_id.
    pub async fn set_pdf(&self, pdf: &Bytes) -> Result<String, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.set_pdf(&token, pdf.clone()).await })
            .await
    }

    /// `card/invoice/platform/getpdf`.
    pub async fn get_pdf(&self, s_media_id: &str) -> Result<PdfUrl, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.get_pdf(&token, s_media_id).await })
            .await
    }

    /// `nontax/insertbill`. Sent at most twice (the second time only with a fresh token after
    /// WeChat refused the first's token, which means the first did nothing).
    pub async fn insert_bill(&self, request: &InsertBillRequest) -> Result<InsertedBill, CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.insert_bill(&token, request).await })
            .await
    }

    /// `card/invoice/platform/updatestatus`.
    pub async fn update_status(&self, request: &UpdateStatusRequest) -> Result<(), CallError> {
        let client = self.credentials.client();
        self.credentials
            .with_access_token(self.appid, |token| async move { client.update_status(&token, request).await })
            .await
    }
}
