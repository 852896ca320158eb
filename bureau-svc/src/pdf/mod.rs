//! The bill PDF: rendering (with its embedded font) and the bureau's signature. A supplied PDF
//! is validated in `wechat::pdf`.

pub mod amount;
pub mod font;
pub mod render;
pub mod sign;
