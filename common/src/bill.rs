//! The bill content both services handle, validated from its proto form, and the identifier
//! rules of the contracts (appid, order_id, request_id).

use serde::{Deserialize, Serialize};

use crate::proto::types as pb;
use crate::status::Violations;

/// 1e13 fen = 100 billion yuan: far above any bill, far below i64 overflow when summed.
pub const MAX_FEE: i64 = 10_000_000_000_000;
pub const MAX_ITEMS: usize = 200;

/// A validated bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillContent {
    /// Fen.
    pub fee: i64,
    pub payer_title: String,
    pub billing_no: String,
    pub billing_code: String,
    /// Unix seconds.
    pub billing_time: i64,
    pub items: Vec<BillItem>,
    pub remarks: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillItem {
    pub name: String,
    /// A positive decimal with at most 4 decimal places.
    pub quantity: String,
    pub unit: String,
    pub unit_price: i64,
    pub amount: i64,
}

fn check_text(violations: &mut Violations, field: &str, value: &str, min: usize, max: usize) {
    let chars = value.chars().count();
    if chars < min {
        violations.add(field, "must not be empty");
    } else if chars > max {
        violations.add(field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        violations.add(field, "must not contain control characters");
    } else if value.trim() != value {
        violations.add(field, "must not start or end with whitespace");
    }
}

fn check_billing_number(violations: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        violations.add(field, "must not be empty");
    } else if value.len() > 20 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        violations.add(field, "must be 1 to 20 ASCII letters or digits");
    }
}

fn valid_quantity(quantity: &str) -> bool {
    let (whole, fraction) = quantity.split_once('.').unwrap_or((quantity, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && whole.len() <= 12
        && digits(whole)
        && fraction.len() <= 4
        && digits(fraction)
        && !(quantity.contains('.') && fraction.is_empty())
        && quantity.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

impl BillContent {
    /// Validates `content` (the proto message at `field`); violations are named
    /// `field.member`. `now` is Unix seconds.
    pub fn from_proto(
        content: Option<&pb::BillContent>,
        field: &str,
        now: i64,
        violations: &mut Violations,
    ) -> Option<Self> {
        let Some(content) = content else {
            violations.add(field, "is required");
            return None;
        };
        let pb::BillContent { fee, payer_title, billing_no, billing_code, billing_time, items, remarks } = content;
        let before = violations.fields().count();
        let at = |member: &str| format!("{field}.{member}");
        if *fee <= 0 || *fee > MAX_FEE {
            violations.add(at("fee"), format!("must be between 1 and {MAX_FEE} fen"));
        }
        check_text(violations, &at("payer_title"), payer_title, 1, 64);
        check_billing_number(violations, &at("billing_no"), billing_no);
        check_billing_number(violations, &at("billing_code"), billing_code);
        let billing_time = match billing_time {
            None => {
                violations.add(at("billing_time"), "is required");
                0
            }
            Some(time) if !wechat::clock::is_plausible(time.seconds, now) => {
                violations.add(at("billing_time"), "must lie between 2000-01-01 and one day from now");
                0
            }
            Some(time) if !(0..=999_999_999).contains(&time.nanos) => {
                violations.add(at("billing_time"), "nanos must lie in 0..=999999999");
                0
            }
            Some(time) => time.seconds,
        };
        if items.len() > MAX_ITEMS {
            violations.add(at("items"), format!("must have at most {MAX_ITEMS} entries"));
        }
        let mut total: i64 = 0;
        for (index, item) in items.iter().enumerate() {
            let pb::BillItem { name, quantity, unit, unit_price, amount } = item;
            let at = |member: &str| format!("{field}.items[{index}].{member}");
            check_text(violations, &at("name"), name, 1, 64);
            if !valid_quantity(quantity) {
                violations
                    .add(at("quantity"), "must be a positive decimal with at most 4 decimal places, e.g. 1 or 2.5");
            }
            check_text(violations, &at("unit"), unit, 0, 16);
            if *unit_price < 0 || *unit_price > MAX_FEE {
                violations.add(at("unit_price"), format!("must be between 0 and {MAX_FEE} fen"));
            }
            if *amount <= 0 || *amount > MAX_FEE {
                violations.add(at("amount"), format!("must be between 1 and {MAX_FEE} fen"));
            }
            total = total.saturating_add((*amount).clamp(0, MAX_FEE));
        }
        if !items.is_empty() && total != *fee {
            violations.add(at("items"), format!("amounts add up to {total} fen, not the fee of {fee} fen"));
        }
        check_text(violations, &at("remarks"), remarks, 0, 200);
        if violations.fields().count() != before {
            return None;
        }
        Some(Self {
            fee: *fee,
            payer_title: payer_title.clone(),
            billing_no: billing_no.clone(),
            billing_code: billing_code.clone(),
            billing_time,
            items: items
                .iter()
                .map(|i| BillItem {
                    name: i.name.clone(),
                    quantity: i.quantity.clone(),
                    unit: i.unit.clone(),
                    unit_price: i.unit_price,
                    amount: i.amount,
                })
                .collect(),
            remarks: remarks.clone(),
        })
    }

    pub fn to_proto(&self) -> pb::BillContent {
        pb::BillContent {
            fee: self.fee,
            payer_title: self.payer_title.clone(),
            billing_no: self.billing_no.clone(),
            billing_code: self.billing_code.clone(),
            billing_time: Some(prost_types::Timestamp { seconds: self.billing_time, nanos: 0 }),
            items: self
                .items
                .iter()
                .map(|i| pb::BillItem {
                    name: i.name.clone(),
                    quantity: i.quantity.clone(),
                    unit: i.unit.clone(),
                    unit_price: i.unit_price,
                    amount: i.amount,
                })
                .collect(),
            remarks: self.remarks.clone(),
        }
    }
}

/// Why issuing failed for good, as recorded on a bill or an authorization.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failure {
    /// UPPER_SNAKE_CASE, stable.
    pub reason: String,
    pub message: String,
    pub wechat_errcode: i64,
    pub wechat_errmsg: String,
    pub wechat_rid: String,
    /// Unix milliseconds.
    pub at: i64,
}

impl Failure {
    /// The failure stored in a row's `failure_*` columns (the same in both services' tables),
    /// if it has one.
    pub fn from_row(row: &sqlx::any::AnyRow) -> Result<Option<Failure>, sqlx::Error> {
        use sqlx::Row;
        let Some(reason) = row.try_get::<Option<String>, _>("failure_reason")? else {
            return Ok(None);
        };
        Ok(Some(Failure {
            reason,
            message: row.try_get::<Option<String>, _>("failure_message")?.unwrap_or_default(),
            wechat_errcode: row.try_get("failure_errcode")?,
            wechat_errmsg: row.try_get::<Option<String>, _>("failure_errmsg")?.unwrap_or_default(),
            wechat_rid: row.try_get::<Option<String>, _>("failure_rid")?.unwrap_or_default(),
            at: row.try_get("failed_at")?,
        }))
    }
}

/// Failures caused by the order's own stored data: the same request to the bureau meets them
/// again, so a retry cannot help (a new order with corrected data can).
const FAILURES_A_RETRY_CANNOT_FIX: &[&str] = &[
    "BILLING_NUMBER_TAKEN",
    "ORDER_CONFLICT",
    "INVALID_ARGUMENT",
    "WECHAT_BILLING_NUMBER_REPEATED",
    "WECHAT_BILLING_NUMBER_SIZE",
    "WECHAT_ORDER_REJECTED",
];

impl Failure {
    /// Whether issuing again might succeed.
    pub fn retry_may_help(&self) -> bool {
        !FAILURES_A_RETRY_CANNOT_FIX.contains(&self.reason.as_str())
    }

    pub fn to_proto(&self) -> pb::Failure {
        pb::Failure {
            reason: self.reason.clone(),
            message: self.message.clone(),
            wechat_errcode: self.wechat_errcode,
            wechat_errmsg: self.wechat_errmsg.clone(),
            wechat_rid: self.wechat_rid.clone(),
            time: optional_timestamp(self.at),
        }
    }

    /// A failure reported by another service, recorded at `at`.
    pub fn from_proto(failure: pb::Failure, at: i64) -> Self {
        let pb::Failure { reason, message, wechat_errcode, wechat_errmsg, wechat_rid, time: _ } = failure;
        Self { reason, message, wechat_errcode, wechat_errmsg, wechat_rid, at }
    }
}

/// `wx` followed by 16 lowercase hex digits.
pub fn is_appid(value: &str) -> bool {
    value.len() == 18
        && value.starts_with("wx")
        && value[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn check_appid(violations: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        violations.add(field, "is required");
    } else if !is_appid(value) {
        violations.add(field, "must be a WeChat appid: wx followed by 16 lowercase hex digits");
    }
}

/// 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn check_order_id(violations: &mut Violations, field: &str, value: &str) {
    if value.is_empty() {
        violations.add(field, "is required");
    } else if value.len() > 64 || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        violations.add(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -");
    }
}

/// Optional; up to 64 printable ASCII characters.
pub fn check_request_id(violations: &mut Violations, field: &str, value: &str) {
    if value.len() > 64 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        violations.add(field, "must be at most 64 printable ASCII characters without spaces");
    }
}

/// Page size of list calls: 0 means 100; at most 1000.
pub fn check_page_size(violations: &mut Violations, field: &str, value: i32) -> i64 {
    match value {
        0 => 100,
        1..=1000 => i64::from(value),
        _ => {
            violations.add(field, "must be between 0 and 1000");
            100
        }
    }
}

/// Milliseconds since the epoch as a protobuf Timestamp.
pub fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: millis.div_euclid(1000), nanos: (millis.rem_euclid(1000) * 1_000_000) as i32 }
}

/// A set timestamp, or None for 0.
pub fn optional_timestamp(millis: i64) -> Option<prost_types::Timestamp> {
    (millis != 0).then(|| timestamp(millis))
}

/// Bill contents for tests of the services' stores.
pub mod test_support {
    use super::{BillContent, BillItem};

    /// One registration fee of 1.00 yuan, under billing number 44010125 and `billing_code`.
    pub fn registration_fee(billing_code: &str) -> BillContent {
        BillContent {
            fee: 100,
            payer_title: "张三".into(),
            billing_no: "44010125".into(),
            billing_code: billing_code.into(),
            billing_time: 1_760_000_000,
            items: vec![BillItem {
                name: "门诊挂号费".into(),
                quantity: "1".into(),
                unit: "次".into(),
                unit_price: 100,
                amount: 100,
            }],
            remarks: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::BillContent {
        pb::BillContent {
            fee: 1500,
            payer_title: "张三".into(),
            billing_no: "44010125".into(),
            billing_code: "0000012345".into(),
            billing_time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            items: vec![
                pb::BillItem {
                    name: "挂号费".into(),
                    quantity: "1".into(),
                    unit: "次".into(),
                    unit_price: 500,
                    amount: 500,
                },
                pb::BillItem {
                    name: "检查费".into(),
                    quantity: "2.5".into(),
                    unit: "项".into(),
                    unit_price: 400,
                    amount: 1000,
                },
            ],
            remarks: String::new(),
        }
    }

    fn check(content: pb::BillContent) -> Vec<String> {
        let mut violations = Violations::default();
        let parsed = BillContent::from_proto(Some(&content), "content", 1_800_000_000, &mut violations);
        assert_eq!(parsed.is_some(), violations.is_empty());
        violations.fields().map(str::to_owned).collect()
    }

    #[test]
    fn accepts_a_valid_bill_and_round_trips() {
        let mut violations = Violations::default();
        let content = BillContent::from_proto(Some(&valid()), "content", 1_800_000_000, &mut violations).unwrap();
        assert_eq!(content.to_proto(), valid());
    }

    #[test]
    fn reports_every_violation_by_field() {
        assert_eq!(check(pb::BillContent { fee: 0, items: vec![], ..valid() }), ["content.fee"]);
        assert_eq!(check(pb::BillContent { fee: MAX_FEE + 1, items: vec![], ..valid() }), ["content.fee"]);
        assert_eq!(check(pb::BillContent { payer_title: "".into(), ..valid() }), ["content.payer_title"]);
        assert_eq!(check(pb::BillContent { payer_title: "张".repeat(65), ..valid() }), ["content.payer_title"]);
        assert_eq!(check(pb::BillContent { billing_no: "12-34".into(), ..valid() }), ["content.billing_no"]);
        assert_eq!(check(pb::BillContent { billing_code: "9".repeat(21), ..valid() }), ["content.billing_code"]);
        assert_eq!(check(pb::BillContent { billing_time: None, ..valid() }), ["content.billing_time"]);
        let future = Some(prost_types::Timestamp { seconds: 1_800_000_000 + 86_401, nanos: 0 });
        assert_eq!(check(pb::BillContent { billing_time: future, ..valid() }), ["content.billing_time"]);
        for (seconds, nanos) in
            [(i64::MAX, 0), (253_402_300_800, 0), (1_700_000_000, -1), (1_700_000_000, 2_000_000_000)]
        {
            let time = Some(prost_types::Timestamp { seconds, nanos });
            assert_eq!(
                check(pb::BillContent { billing_time: time, ..valid() }),
                ["content.billing_time"],
                "{seconds}.{nanos}"
            );
        }
        assert_eq!(check(pb::BillContent { fee: 1600, ..valid() }), ["content.items"]);
        let mut bad_item = valid();
        bad_item.items[1].quantity = "2.50001".into();
        bad_item.items[0].amount = -1;
        assert_eq!(check(bad_item), ["content.items[0].amount", "content.items[1].quantity", "content.items"]);
        let mut violations = Violations::default();
        assert!(BillContent::from_proto(None, "bill", 0, &mut violations).is_none());
        assert_eq!(violations.fields().collect::<Vec<_>>(), ["bill"]);
    }

    #[test]
    fn quantities() {
        for good in ["1", "2.5", "0.0001", "100.25", "000001"] {
            assert!(valid_quantity(good), "{good}");
        }
        for bad in ["", "0", "0.0", "1.", ".5", "-1", "1e3", "1.23456", "1,5"] {
            assert!(!valid_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn identifiers() {
        assert!(is_appid("wxb0000000000000b1"));
        assert!(!is_appid("wxB0000000000000b1") && !is_appid("wx123") && !is_appid("ab0000000000000000"));
        let mut violations = Violations::default();
        check_order_id(&mut violations, "order_id", "order-1_A");
        check_order_id(&mut violations, "bad", "order 1");
        check_request_id(&mut violations, "request_id", "");
        check_request_id(&mut violations, "bad_request", "a b");
        assert_eq!(violations.fields().collect::<Vec<_>>(), ["bad", "bad_request"]);
        assert_eq!(timestamp(1_500), prost_types::Timestamp { seconds: 1, nanos: 500_000_000 });
    }
}
