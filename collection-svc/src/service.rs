//! The gRPC handlers: proto in, domain call, proto out.

use std::pin::Pin;
use std::sync::Arc;

use fiscalbill_common::bill::timestamp;
use fiscalbill_common::lifecycle::AppCell;
use fiscalbill_common::proto::collection as pb;
use fiscalbill_common::proto::collection::collection_service_server::CollectionService;
use fiscalbill_common::trace::TraceContext;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use wechat::Credential;
use wechat::clock::unix_now;

use crate::app::App;
use crate::convert;
use crate::error::CollectionError;

pub struct CollectionGrpc {
    app: AppCell<App>,
}

impl CollectionGrpc {
    pub fn new(app: AppCell<App>) -> Self {
        Self { app }
    }

    fn app(&self) -> Result<&Arc<App>, CollectionError> {
        self.app.get().ok_or(CollectionError::NotReady)
    }
}

fn expire_time(credential: &Credential) -> Option<prost_types::Timestamp> {
    Some(timestamp(credential.expires_at * 1000))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchAuthorizationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl CollectionService for CollectionGrpc {
    type WatchAuthorizationsStream = WatchStream;

    async fn create_authorization(
        &self,
        request: Request<pb::CreateAuthorizationRequest>,
    ) -> Result<Response<pb::CreateAuthorizationResponse>, Status> {
        let app = self.app()?;
        let trace = TraceContext::of_request(request.metadata());
        let request = convert::create_request(request.into_inner(), trace, app.config.pdf_max_bytes, unix_now())
            .map_err(CollectionError::from)?;
        let span = tracing::info_span!(
            "CreateAuthorization",
            unit_appid = %request.key.unit_appid,
            order_id = %request.key.order_id,
            trace_id = %request.trace.trace_id
        );
        let authorization = tracing::Instrument::instrument(app.authorizations.create(request), span).await?;
        Ok(Response::new(pb::CreateAuthorizationResponse { authorization: Some(convert::to_proto(&authorization)) }))
    }

    async fn get_authorization(
        &self,
        request: Request<pb::GetAuthorizationRequest>,
    ) -> Result<Response<pb::GetAuthorizationResponse>, Status> {
        let app = self.app()?;
        let pb::GetAuthorizationRequest { unit_appid, order_id } = request.into_inner();
        let key = convert::order_key(unit_appid, order_id).map_err(CollectionError::from)?;
        let authorization = app.authorizations.get(&key).await?;
        Ok(Response::new(pb::GetAuthorizationResponse { authorization: Some(convert::to_proto(&authorization)) }))
    }

    async fn list_authorizations(
        &self,
        request: Request<pb::ListAuthorizationsRequest>,
    ) -> Result<Response<pb::ListAuthorizationsResponse>, Status> {
        let app = self.app()?;
        let query = convert::list_request(request.into_inner()).map_err(CollectionError::from)?;
        let page = app.authorizations.list(&query).await?;
        Ok(Response::new(pb::ListAuthorizationsResponse {
            authorizations: page.items.iter().map(convert::to_proto).collect(),
            next_page_token: page.next_page_token(|last| convert::page_token(&query, last)),
        }))
    }

    async fn watch_authorizations(
        &self,
        request: Request<pb::WatchAuthorizationsRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let app = self.app()?;
        let (filter, from) = convert::watch_request(request.into_inner()).map_err(CollectionError::from)?;
        let receiver = app.watches.start(filter, from).await?;
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            let item = receiver.recv().await?;
            Some((item, receiver))
        })
        .map(|item| item.map(convert::watch_response).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn reject_authorization(
        &self,
        request: Request<pb::RejectAuthorizationRequest>,
    ) -> Result<Response<pb::RejectAuthorizationResponse>, Status> {
        let app = self.app()?;
        let (key, reason, url) = convert::reject_request(request.into_inner()).map_err(CollectionError::from)?;
        let authorization = app.authorizations.reject(&key, reason, url).await?;
        Ok(Response::new(pb::RejectAuthorizationResponse { authorization: Some(convert::to_proto(&authorization)) }))
    }

    async fn sync_authorization(
        &self,
        request: Request<pb::SyncAuthorizationRequest>,
    ) -> Result<Response<pb::SyncAuthorizationResponse>, Status> {
        let app = self.app()?;
        let pb::SyncAuthorizationRequest { unit_appid, order_id } = request.into_inner();
        let key = convert::order_key(unit_appid, order_id).map_err(CollectionError::from)?;
        let (authorization, status) = app.authorizations.sync(&key).await?;
        Ok(Response::new(pb::SyncAuthorizationResponse {
            authorization: Some(convert::to_proto(&authorization)),
            wechat_invoice_status: status.unwrap_or_default(),
        }))
    }

    async fn retry_issue(
        &self,
        request: Request<pb::RetryIssueRequest>,
    ) -> Result<Response<pb::RetryIssueResponse>, Status> {
        let app = self.app()?;
        let pb::RetryIssueRequest { unit_appid, order_id } = request.into_inner();
        let key = convert::order_key(unit_appid, order_id).map_err(CollectionError::from)?;
        let authorization = app.authorizations.retry_issue(&key).await?;
        Ok(Response::new(pb::RetryIssueResponse { authorization: Some(convert::to_proto(&authorization)) }))
    }

    async fn get_access_token(
        &self,
        request: Request<pb::GetAccessTokenRequest>,
    ) -> Result<Response<pb::GetAccessTokenResponse>, Status> {
        let app = self.app()?;
        let pb::GetAccessTokenRequest { appid } = request.into_inner();
        convert::appid("appid", &appid).map_err(CollectionError::from)?;
        if !app.units.serves_account(&appid) {
            return Err(CollectionError::AccountNotServed(appid).into());
        }
        let token = app.credentials.access_token(&appid).await.map_err(CollectionError::from)?;
        Ok(Response::new(pb::GetAccessTokenResponse {
            access_token: token.value.expose().to_owned(),
            expire_time: expire_time(&token),
        }))
    }

    async fn get_card_ticket(
        &self,
        request: Request<pb::GetCardTicketRequest>,
    ) -> Result<Response<pb::GetCardTicketResponse>, Status> {
        let app = self.app()?;
        let pb::GetCardTicketRequest { appid } = request.into_inner();
        convert::appid("appid", &appid).map_err(CollectionError::from)?;
        if !app.units.serves_account(&appid) {
            return Err(CollectionError::AccountNotServed(appid).into());
        }
        let ticket = app.credentials.card_ticket(&appid).await.map_err(CollectionError::from)?;
        Ok(Response::new(pb::GetCardTicketResponse {
            ticket: ticket.value.expose().to_owned(),
            expire_time: expire_time(&ticket),
        }))
    }
}
