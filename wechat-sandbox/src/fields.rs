//! Reading WeChat JSON bodies the way WeChat does: 44002 for an empty body, 47001 for bad JSON
//! or wrong types, 72031 naming a missing field.

use serde_json::{Map, Value};
use wechat::rulebook;

use crate::world::WxError;

pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, WxError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(WxError::from(&rulebook::EMPTY_POST_DATA));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(WxError::data_format()),
    }
}

/// A required non-empty string.
pub fn string(object: &Map<String, Value>, field: &str) -> Result<String, WxError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(WxError::field_empty(field)),
        Some(Value::String(text)) if text.trim().is_empty() => Err(WxError::field_empty(field)),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(WxError::data_format()),
    }
}

/// An optional string; empty counts as absent.
pub fn optional_string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, WxError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(WxError::data_format()),
    }
}

/// A required integer; with `numeric_string` a string of digits is accepted too.
pub fn integer(object: &Map<String, Value>, field: &str, numeric_string: bool) -> Result<i64, WxError> {
    match object.get(field) {
        None | Some(Value::Null) => Err(WxError::field_empty(field)),
        Some(Value::Number(number)) => number.as_i64().ok_or_else(WxError::data_format),
        Some(Value::String(text)) if numeric_string => {
            if text.is_empty() {
                return Err(WxError::field_empty(field));
            }
            text.parse().map_err(|_| WxError::data_format())
        }
        Some(_) => Err(WxError::data_format()),
    }
}

/// A nested object, if present.
pub fn nested<'a>(object: &'a Map<String, Value>, field: &str) -> Result<Option<&'a Map<String, Value>>, WxError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(WxError::data_format()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_like_wechat() {
        assert_eq!(parse_object(b"").unwrap_err().errcode, 44002);
        assert_eq!(parse_object(b"{bad").unwrap_err().errcode, 47001);
        assert_eq!(parse_object(b"[]").unwrap_err().errcode, 47001);
        let object = parse_object(br#"{"a":"x","n":5,"s":"17","e":""}"#).unwrap();
        assert_eq!(string(&object, "a").unwrap(), "x");
        assert_eq!(string(&object, "e").unwrap_err().errmsg, "invalid params, e is empty");
        assert_eq!(string(&object, "n").unwrap_err().errcode, 47001);
        assert_eq!(integer(&object, "s", true).unwrap(), 17);
        assert_eq!(integer(&object, "s", false).unwrap_err().errcode, 47001);
        assert_eq!(integer(&object, "missing", true).unwrap_err().errcode, 72031);
    }
}
