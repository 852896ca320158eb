//! The WeChat endpoints this project calls (wechat-fiscal-api.md), with their method and the
//! retry rule the doc's error table allows.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Token,
    StableToken,
    GetTicket,
    SetUrl,
    GetBillAuthUrl,
    GetAuthData,
    RejectInsert,
    UploadImg,
    CreateBillCard,
    SetPdf,
    GetPdf,
    InsertBill,
    UpdateStatus,
}

impl Endpoint {
    pub const ALL: [Endpoint; 13] = [
        Endpoint::Token,
        Endpoint::StableToken,
        Endpoint::GetTicket,
        Endpoint::SetUrl,
        Endpoint::GetBillAuthUrl,
        Endpoint::GetAuthData,
        Endpoint::RejectInsert,
        Endpoint::UploadImg,
        Endpoint::CreateBillCard,
        Endpoint::SetPdf,
        Endpoint::GetPdf,
        Endpoint::InsertBill,
        Endpoint::UpdateStatus,
    ];

    /// The URL path under the API host.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Token => "/cgi-bin/token",
            Endpoint::StableToken => "/cgi-bin/stable_token",
            Endpoint::GetTicket => "/cgi-bin/ticket/getticket",
            Endpoint::SetUrl => "/card/invoice/seturl",
            Endpoint::GetBillAuthUrl => "/nontax/getbillauthurl",
            Endpoint::GetAuthData => "/card/invoice/getauthdata",
            Endpoint::RejectInsert => "/card/invoice/rejectinsert",
            Endpoint::UploadImg => "/cgi-bin/media/uploadimg",
            Endpoint::CreateBillCard => "/nontax/createbillcard",
            Endpoint::SetPdf => "/card/invoice/platform/setpdf",
            Endpoint::GetPdf => "/card/invoice/platform/getpdf",
            Endpoint::InsertBill => "/nontax/insertbill",
            Endpoint::UpdateStatus => "/card/invoice/platform/updatestatus",
        }
    }

    pub fn from_path(path: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    /// Short name for logs and metrics: the last path segment.
    pub fn name(self) -> &'static str {
        let path = self.path();
        &path[path.rfind('/').map_or(0, |i| i + 1)..]
    }

    /// `cgi-bin/token` and `getticket` are GET; everything else is POST.
    pub fn is_get(self) -> bool {
        matches!(self, Endpoint::Token | Endpoint::GetTicket)
    }

    /// Whether sending the same request again after errcode -1, HTTP 5xx or a lost answer is
    /// harmless. Creating a template or uploading a PDF or an image twice leaves garbage behind, a second
    /// insert must be decided by the bureau's state machine, and every cgi-bin/token fetch
    /// invalidates the previous token: those are never resent by the client itself. A request
    /// that never connected is always safe to resend.
    pub fn resend_is_safe(self) -> bool {
        match self {
            Endpoint::StableToken
            | Endpoint::GetTicket
            | Endpoint::SetUrl
            | Endpoint::GetBillAuthUrl
            | Endpoint::GetAuthData
            | Endpoint::RejectInsert
            | Endpoint::GetPdf
            | Endpoint::UpdateStatus => true,
            Endpoint::Token
            | Endpoint::UploadImg
            | Endpoint::CreateBillCard
            | Endpoint::SetPdf
            | Endpoint::InsertBill => false,
        }
    }

    /// Whether the call takes `?access_token=` (all but the two token fetches).
    pub fn needs_access_token(self) -> bool {
        !matches!(self, Endpoint::Token | Endpoint::StableToken)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_names_are_last_segments() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(endpoint.path()), Some(endpoint));
            assert!(endpoint.path().ends_with(endpoint.name()));
        }
        assert_eq!(Endpoint::InsertBill.name(), "insertbill");
        assert_eq!(Endpoint::from_path("/nontax/unknown"), None);
    }
}
