//! What bureau-svc, collection-svc and the WeChat sandbox share: the gRPC contracts, the WeChat
//! API client with its token cache, and the callback (event push) toolkit.

pub mod callback;
pub mod clock;
pub mod pdf;
pub mod proto;
pub mod secret;
pub mod tls;
pub mod wechat;

pub use secret::Secret;
