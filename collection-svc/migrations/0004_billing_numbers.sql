-- Each billing number (billing_no + billing_code) belongs to one order, whichever unit of this
-- service it came from: a second order with the same number is refused at CreateAuthorization,
-- before a payer sees a link, not after the payer authorized it. The primary key decides when
-- two orders race; a number stays taken whatever becomes of its order (a fiscal bill number is
-- never handed out twice). Orders created before this migration are not listed; the bureau still
-- refuses their numbers if repeated.
CREATE TABLE billing_number (
    billing_no TEXT NOT NULL,
    billing_code TEXT NOT NULL,
    unit_appid TEXT NOT NULL,
    order_id TEXT NOT NULL,
    PRIMARY KEY (billing_no, billing_code)
);
