//! The gRPC handlers: proto in, domain call, proto out. No SQL, no HTTP.

use std::sync::Arc;
use std::time::Duration;

use fiscalbill_common::lifecycle::AppCell;
use fiscalbill_common::proto::bureau as pb;
use fiscalbill_common::proto::bureau::bureau_service_server::BureauService;
use fiscalbill_common::trace::TraceContext;
use tonic::{Request, Response, Status};
use wechat::clock::unix_now;

use crate::app::App;
use crate::convert;
use crate::error::BureauError;

pub struct BureauGrpc {
    app: AppCell<App>,
}

impl BureauGrpc {
    pub fn new(app: AppCell<App>) -> Self {
        Self { app }
    }

    fn app(&self) -> Result<&Arc<App>, BureauError> {
        self.app.get().ok_or(BureauError::NotReady)
    }
}

/// How long IssueBill may wait for its bill: the caller's deadline (`grpc-timeout`) less a
/// margin to answer in time, or the configured default.
fn wait_budget<T>(request: &Request<T>, default: Duration) -> Duration {
    const MARGIN: Duration = Duration::from_millis(300);
    let Some(timeout) =
        request.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout)
    else {
        return default;
    };
    timeout.saturating_sub(MARGIN).min(Duration::from_secs(120))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[tonic::async_trait]
impl BureauService for BureauGrpc {
    async fn get_sp_app_id(
        &self,
        _request: Request<pb::GetSpAppIdRequest>,
    ) -> Result<Response<pb::GetSpAppIdResponse>, Status> {
        let app = self.app()?;
        let sp = app.sp_app_ids.get().await?;
        Ok(Response::new(pb::GetSpAppIdResponse {
            s_pappid: sp.s_pappid,
            invoice_url: sp.invoice_url,
            bureau_appid: sp.bureau_appid,
        }))
    }

    async fn create_card_template(
        &self,
        request: Request<pb::CreateCardTemplateRequest>,
    ) -> Result<Response<pb::CreateCardTemplateResponse>, Status> {
        let app = self.app()?;
        let (appid, payee, logo) =
            convert::template_request(request.into_inner(), app.image_host.as_deref()).map_err(BureauError::from)?;
        let (unit, created) = app.templates.create(&appid, &payee, &logo).await?;
        Ok(Response::new(pb::CreateCardTemplateResponse { template: Some(convert::template_to_proto(&unit)), created }))
    }

    async fn get_card_template(
        &self,
        request: Request<pb::GetCardTemplateRequest>,
    ) -> Result<Response<pb::GetCardTemplateResponse>, Status> {
        let app = self.app()?;
        let pb::GetCardTemplateRequest { unit_appid } = request.into_inner();
        convert::unit_appid(&unit_appid).map_err(BureauError::from)?;
        let unit = app.templates.get(&unit_appid).await?;
        Ok(Response::new(pb::GetCardTemplateResponse { template: Some(convert::template_to_proto(&unit)) }))
    }

    async fn list_card_templates(
        &self,
        request: Request<pb::ListCardTemplatesRequest>,
    ) -> Result<Response<pb::ListCardTemplatesResponse>, Status> {
        let app = self.app()?;
        let (after, limit) = convert::list_templates(request.into_inner()).map_err(BureauError::from)?;
        let page = app.templates.list(&after, limit).await?;
        Ok(Response::new(pb::ListCardTemplatesResponse {
            templates: page.items.iter().map(convert::template_to_proto).collect(),
            next_page_token: page.next_page_token(convert::template_page_token),
        }))
    }

    async fn issue_bill(
        &self,
        request: Request<pb::IssueBillRequest>,
    ) -> Result<Response<pb::IssueBillResponse>, Status> {
        let app = self.app()?;
        let wait = wait_budget(&request, Duration::from_millis(app.issuing.default_wait_ms));
        let trace = TraceContext::of_request(request.metadata());
        let issue = convert::issue_request(request.into_inner(), trace, app.issuing.pdf_max_bytes, unix_now())
            .map_err(BureauError::from)?;
        let span = tracing::info_span!(
            "IssueBill",
            unit_appid = %issue.key.unit_appid,
            order_id = %issue.key.order_id,
            trace_id = %issue.trace.trace_id
        );
        let bill = tracing::Instrument::instrument(app.issuer.issue(issue, wait), span).await?;
        Ok(Response::new(pb::IssueBillResponse { bill: Some(convert::bill_to_proto(&bill)) }))
    }

    async fn get_bill(&self, request: Request<pb::GetBillRequest>) -> Result<Response<pb::GetBillResponse>, Status> {
        let app = self.app()?;
        let pb::GetBillRequest { unit_appid, order_id } = request.into_inner();
        let key = convert::bill_key(unit_appid, order_id).map_err(BureauError::from)?;
        let bill = app.bills.get(&key).await?;
        Ok(Response::new(pb::GetBillResponse { bill: Some(convert::bill_to_proto(&bill)) }))
    }

    async fn list_bills(
        &self,
        request: Request<pb::ListBillsRequest>,
    ) -> Result<Response<pb::ListBillsResponse>, Status> {
        let app = self.app()?;
        let query = convert::list_bills(request.into_inner()).map_err(BureauError::from)?;
        let page = app.bills.list(&query).await?;
        Ok(Response::new(pb::ListBillsResponse {
            bills: page.items.iter().map(convert::bill_to_proto).collect(),
            next_page_token: page.next_page_token(|last| convert::bill_page_token(&query, last)),
        }))
    }

    async fn update_bill_status(
        &self,
        request: Request<pb::UpdateBillStatusRequest>,
    ) -> Result<Response<pb::UpdateBillStatusResponse>, Status> {
        let app = self.app()?;
        let pb::UpdateBillStatusRequest { unit_appid, order_id, reimburse_status } = request.into_inner();
        let key = convert::bill_key(unit_appid, order_id);
        let status = convert::reimburse_status(reimburse_status);
        let (key, status) = match (key, status) {
            (Ok(key), Ok(status)) => (key, status),
            (key, status) => {
                let mut all = fiscalbill_common::status::Violations::default();
                for error in [key.err(), status.err()].into_iter().flatten() {
                    for violation in error.violations {
                        all.add(violation.field, violation.description);
                    }
                }
                return Err(BureauError::from(all.into_result().unwrap_err()).into());
            }
        };
        let bill = app.reimburse.update(&key, status).await?;
        Ok(Response::new(pb::UpdateBillStatusResponse { bill: Some(convert::bill_to_proto(&bill)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_grpc_timeout("3H"), Some(Duration::from_secs(10_800)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("10Q"), None);
    }
}
