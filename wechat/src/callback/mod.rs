//! The callback toolkit: signatures, safe-mode encryption and push bodies. collection-svc and
//! bureau-svc use it to receive pushes; the sandbox uses it to send them.

pub mod crypto;
mod keys;
pub mod message;
mod receiver;
mod sender;
pub mod signature;

pub use crypto::AesKey;
pub use keys::{CallbackKeys, KeysError, PushMode};
pub use message::{AuthorizeEvent, MAX_PUSH_BYTES, MessageError, PushFormat, PushMessage, StatusEvent};
pub use receiver::{CallbackError, CallbackQuery, OpenedPush, open_push, verify_url};
pub use sender::{SealedPush, encrypted_reply, seal_push};

#[cfg(test)]
mod tests;
