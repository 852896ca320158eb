//! All of bureau-svc's SQL. Statements are written once for both SQLite and PostgreSQL
//! (`$n` placeholders work on both); the two that differ are chosen with `Db::sql`. Every
//! update of a bill being driven is conditional on holding its lease, so a replica that lost
//! the lease cannot overwrite another's progress.

use bytes::Bytes;
use fiscalbill_common::bill::{BillContent, BillItem};
use fiscalbill_common::db::{Backend, Db, Migration, Statement, sql_list};
use fiscalbill_common::paging::Cursor;
use fiscalbill_common::pdf_store::PdfTable;
use fiscalbill_common::telemetry::storage_span;
use fiscalbill_common::trace::TraceContext;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Error, Row};
use wechat::types::ReimburseStatus;

use crate::domain::{Bill, BillEvent, BillKey, BillQuery, BillState, Failure, Logo, NewBill, PdfOrigin, SpApp, Unit};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        set: "bureau",
        version: 1,
        name: "initial schema",
        sql: include_str!("../migrations/0001_init.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "bureau",
        version: 2,
        name: "PDFs in chunks",
        sql: include_str!("../migrations/0002_pdf_chunks.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "bureau",
        version: 3,
        name: "bounded card status retries, PDF checks, uploaded logos",
        sql: include_str!("../migrations/0003_fidelity.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "bureau",
        version: 4,
        name: "trace parent span",
        sql: include_str!("../migrations/0004_trace.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "bureau",
        version: 5,
        name: "bill signer",
        sql: include_str!("../migrations/0005_signature.sql"),
        postgres_sql: None,
    },
];

const BILL_PDF: PdfTable = PdfTable("bill_pdf_chunk");

macro_rules! bill_columns {
    () => {
        "unit_appid, order_id, authorized_appid, request_id, trace_id, trace_parent_id, state, fee, payer_title, billing_no, billing_code, \
         billing_time, items, remarks, pdf_sha256, pdf_size, pdf_origin, signer_sha256, supplied_sha256, card_id, s_media_id, media_expires_at, \
         insert_pending, card_code, openid, reimburse_status, failure_reason, failure_message, failure_errcode, \
         failure_errmsg, failure_rid, failed_at, attempts, last_error, never_authorized_since, next_attempt_at, \
         created_at, updated_at, inserted_at, card_status_failures, pdf_mismatches"
    };
}

/// See [`Store::bills_in_the_way`].
#[derive(Debug, Default)]
pub struct BillsInTheWay {
    pub order: Option<Bill>,
    pub request_id: Option<Bill>,
    pub billing_number: Option<Bill>,
}

/// What a change does with the bill's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Kept (renewed) until this time.
    Until(i64),
    /// Given up with the change: the drive ends with it.
    Release,
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Decode(format!("stored {what} {value:?} is not valid").into())
}

fn bill_from_row(row: &AnyRow) -> Result<Bill, Error> {
    let state: String = row.try_get("state")?;
    let origin: String = row.try_get("pdf_origin")?;
    let items: String = row.try_get("items")?;
    let reimburse: Option<String> = row.try_get("reimburse_status")?;
    let failure = Failure::from_row(row)?;
    Ok(Bill {
        key: BillKey { unit_appid: row.try_get("unit_appid")?, order_id: row.try_get("order_id")? },
        authorized_appid: row.try_get("authorized_appid")?,
        request_id: row.try_get("request_id")?,
        trace: TraceContext { trace_id: row.try_get("trace_id")?, parent_id: row.try_get("trace_parent_id")? },
        state: BillState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        content: BillContent {
            fee: row.try_get("fee")?,
            payer_title: row.try_get("payer_title")?,
            billing_no: row.try_get("billing_no")?,
            billing_code: row.try_get("billing_code")?,
            billing_time: row.try_get("billing_time")?,
            items: serde_json::from_str::<Vec<BillItem>>(&items).map_err(|_| corrupt("items", &items))?,
            remarks: row.try_get("remarks")?,
        },
        pdf_sha256: row.try_get("pdf_sha256")?,
        signer_sha256: row.try_get("signer_sha256")?,
        supplied_sha256: row.try_get("supplied_sha256")?,
        pdf_size: row.try_get("pdf_size")?,
        pdf_origin: PdfOrigin::parse(&origin).ok_or_else(|| corrupt("pdf_origin", &origin))?,
        card_id: row.try_get("card_id")?,
        s_media_id: row.try_get("s_media_id")?,
        media_expires_at: row.try_get("media_expires_at")?,
        insert_pending: row.try_get::<i64, _>("insert_pending")? != 0,
        card_code: row.try_get("card_code")?,
        openid: row.try_get("openid")?,
        reimburse_status: match reimburse {
            Some(value) => Some(ReimburseStatus::parse(&value).ok_or_else(|| corrupt("reimburse_status", &value))?),
            None => None,
        },
        failure,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        never_authorized_since: row.try_get("never_authorized_since")?,
        card_status_failures: row.try_get("card_status_failures")?,
        pdf_mismatches: row.try_get("pdf_mismatches")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        inserted_at: row.try_get("inserted_at")?,
    })
}

/// The unit columns of a logo: its URL (empty until an image is uploaded), image and digest.
fn logo_columns(logo: &Logo) -> (&str, Option<&[u8]>, Option<&str>) {
    match logo {
        Logo::Url(url) => (url, None, None),
        Logo::Image { image, sha256 } => ("", Some(image.bytes().as_ref()), Some(sha256)),
    }
}

fn unit_from_row(row: &AnyRow) -> Result<Unit, Error> {
    Ok(Unit {
        appid: row.try_get("appid")?,
        payee: row.try_get("payee")?,
        logo_url: row.try_get("logo_url")?,
        logo_sha256: row.try_get("logo_sha256")?,
        card_id: row.try_get("card_id")?,
        template_created_at: row.try_get("template_created_at")?,
    })
}

/// What happened to an `update_invoice_status` push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Seen before (a retry or replay): nothing changed.
    Duplicate,
    /// Recorded and applied to a bill.
    Applied,
    /// Recorded; no bill matched, or it carried an older status than the bill's.
    Recorded,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Applied => "applied",
            EventOutcome::Recorded => "recorded",
        }
    }
}

/// A verified status push, ready to store.
#[derive(Clone, Debug)]
pub struct StatusEventRow<'a> {
    pub dedupe_key: &'a str,
    pub openid: &'a str,
    pub card_id: &'a str,
    pub code: &'a str,
    pub status: ReimburseStatus,
    pub create_time: i64,
    pub body: &'a str,
}

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    // --- s_pappid ---

    pub async fn sp_app(&self, bureau_appid: &str) -> Result<Option<SpApp>, Error> {
        let sql = "SELECT bureau_appid, s_pappid, invoice_url FROM sp_app WHERE bureau_appid = $1";
        let row = self.db.read_row(sql, |query| query.bind(bureau_appid)).await?;
        row.map(|row| {
            Ok(SpApp {
                bureau_appid: row.try_get("bureau_appid")?,
                s_pappid: row.try_get("s_pappid")?,
                invoice_url: row.try_get("invoice_url")?,
            })
        })
        .transpose()
    }

    /// Stores the s_pappid unless another replica stored one first; returns the stored one.
    pub async fn save_sp_app(&self, sp: &SpApp, now: i64) -> Result<SpApp, Error> {
        let _span = storage_span("save_sp_app");
        sqlx::query(
            "INSERT INTO sp_app (bureau_appid, s_pappid, invoice_url, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (bureau_appid) DO NOTHING",
        )
        .bind(&sp.bureau_appid)
        .bind(&sp.s_pappid)
        .bind(&sp.invoice_url)
        .bind(now)
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(self.sp_app(&sp.bureau_appid).await?.unwrap_or_else(|| sp.clone()))
    }

    // --- units and templates ---

    pub async fn unit(&self, appid: &str) -> Result<Option<Unit>, Error> {
        let sql = "SELECT appid, payee, logo_url, logo_sha256, card_id, template_created_at FROM unit WHERE appid = $1";
        self.db.read_row(sql, |query| query.bind(appid)).await?.as_ref().map(unit_from_row).transpose()
    }

    /// Adds a unit; false if it existed.
    pub async fn insert_unit(&self, appid: &str, payee: &str, logo: &Logo, now: i64) -> Result<bool, Error> {
        let _span = storage_span("insert_unit");
        let (url, image, sha256) = logo_columns(logo);
        let done = sqlx::query(
            "INSERT INTO unit (appid, payee, logo_url, logo_image, logo_sha256, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (appid) DO NOTHING",
        )
        .bind(appid)
        .bind(payee)
        .bind(url)
        .bind(image)
        .bind(sha256)
        .bind(now)
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Changes payee and logo of a unit whose template does not exist yet.
    pub async fn update_unit_before_template(
        &self,
        appid: &str,
        payee: &str,
        logo: &Logo,
        now: i64,
    ) -> Result<bool, Error> {
        let _span = storage_span("update_unit_before_template");
        let (url, image, sha256) = logo_columns(logo);
        let done = sqlx::query(
            "UPDATE unit SET payee = $2, logo_url = $3, logo_image = $4, logo_sha256 = $5, updated_at = $6
             WHERE appid = $1 AND card_id IS NULL",
        )
        .bind(appid)
        .bind(payee)
        .bind(url)
        .bind(image)
        .bind(sha256)
        .bind(now)
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The logo image of a unit, to upload.
    pub async fn logo_image(&self, appid: &str) -> Result<Option<Vec<u8>>, Error> {
        let row = sqlx::query("SELECT logo_image FROM unit WHERE appid = $1")
            .bind(appid)
            .fetch_optional(&mut *self.db.read().await?)
            .await?;
        Ok(row.map(|row| row.try_get::<Option<Vec<u8>>, _>(0)).transpose()?.flatten())
    }

    /// Stores the URL WeChat answered for the unit's uploaded logo (once).
    pub async fn set_logo_url(&self, appid: &str, url: &str, now: i64) -> Result<(), Error> {
        let _span = storage_span("set_logo_url");
        sqlx::query("UPDATE unit SET logo_url = $2, updated_at = $3 WHERE appid = $1 AND logo_url = ''")
            .bind(appid)
            .bind(url)
            .bind(now)
            .execute(&mut *self.db.write().await?)
            .await?;
        Ok(())
    }

    /// Units with a template, by appid, after `after`.
    pub async fn list_templates(&self, after: &str, limit: i64) -> Result<Vec<Unit>, Error> {
        sqlx::query(
            "SELECT appid, payee, logo_url, logo_sha256, card_id, template_created_at FROM unit
             WHERE card_id IS NOT NULL AND appid > $1 ORDER BY appid LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db.read().await?)
        .await?
        .iter()
        .map(unit_from_row)
        .collect()
    }

    pub async fn claim_template(&self, appid: &str, holder: &str, now: i64, until: i64) -> Result<bool, Error> {
        let _span = storage_span("claim_template");
        let done = sqlx::query(
            "UPDATE unit SET claim_holder = $2, claim_until = $4
             WHERE appid = $1 AND card_id IS NULL AND (claim_holder IS NULL OR claim_holder = $2 OR claim_until <= $3)",
        )
        .bind(appid)
        .bind(holder)
        .bind(now)
        .bind(until)
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores the template and releases the claim.
    pub async fn set_card_id(&self, appid: &str, card_id: &str, now: i64) -> Result<(), Error> {
        let _span = storage_span("set_card_id");
        sqlx::query(
            "UPDATE unit SET card_id = $2, template_created_at = $3, updated_at = $3, claim_holder = NULL, claim_until = 0
             WHERE appid = $1 AND card_id IS NULL",
        )
        .bind(appid)
        .bind(card_id)
        .bind(now)
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(())
    }

    pub async fn release_template_claim(&self, appid: &str, holder: &str) -> Result<(), Error> {
        let _span = storage_span("release_template_claim");
        sqlx::query("UPDATE unit SET claim_holder = NULL, claim_until = 0 WHERE appid = $1 AND claim_holder = $2")
            .bind(appid)
            .bind(holder)
            .execute(&mut *self.db.write().await?)
            .await?;
        Ok(())
    }

    // --- bills ---

    pub async fn bill(&self, key: &BillKey) -> Result<Option<Bill>, Error> {
        let _span = storage_span("bill");
        let sql = concat!("SELECT ", bill_columns!(), " FROM bill WHERE unit_appid = $1 AND order_id = $2");
        self.db
            .read_row(sql, |query| query.bind(&key.unit_appid).bind(&key.order_id))
            .await?
            .as_ref()
            .map(bill_from_row)
            .transpose()
    }

    /// The bill's trace (for the spans of its later work).
    pub async fn trace(&self, key: &BillKey) -> Result<Option<TraceContext>, Error> {
        let sql = "SELECT trace_id, trace_parent_id FROM bill WHERE unit_appid = $1 AND order_id = $2";
        let row = self.db.read_row(sql, |query| query.bind(&key.unit_appid).bind(&key.order_id)).await?;
        row.map(|row| {
            Ok(TraceContext { trace_id: row.try_get("trace_id")?, parent_id: row.try_get("trace_parent_id")? })
        })
        .transpose()
    }

    /// The bills a new IssueBill could collide with, in one read: the order's own, the one
    /// holding its request_id, the one holding its billing number (any of them may be the same).
    pub async fn bills_in_the_way(
        &self,
        key: &BillKey,
        request_id: Option<&str>,
        billing_no: &str,
        billing_code: &str,
    ) -> Result<BillsInTheWay, Error> {
        let _span = storage_span("bills_in_the_way");
        let sql = concat!(
            "SELECT 'order' AS matched, ",
            bill_columns!(),
            " FROM bill WHERE unit_appid = $1 AND order_id = $2
              UNION ALL SELECT 'request_id', ",
            bill_columns!(),
            " FROM bill WHERE request_id = $3
              UNION ALL SELECT 'billing_number', ",
            bill_columns!(),
            " FROM bill WHERE billing_no = $4 AND billing_code = $5"
        );
        let rows = self
            .db
            .read_rows(sql, |query| {
                query.bind(&key.unit_appid).bind(&key.order_id).bind(request_id).bind(billing_no).bind(billing_code)
            })
            .await?;
        let mut found = BillsInTheWay::default();
        for row in &rows {
            let matched: String = row.try_get("matched")?;
            let slot = match matched.as_str() {
                "order" => &mut found.order,
                "request_id" => &mut found.request_id,
                _ => &mut found.billing_number,
            };
            *slot = Some(bill_from_row(row)?);
        }
        Ok(found)
    }

    /// Records a new bill and its PDF, leased to `holder` until `lease_until` (the caller drives
    /// it at once), and returns it as stored: one write unit, no claim or read after it. A
    /// unique-key race surfaces as the database error; the caller re-reads to explain it.
    pub async fn insert_bill(&self, bill: &NewBill, now: i64, holder: &str, lease_until: i64) -> Result<Bill, Error> {
        let _span = storage_span("insert_bill");
        let items = serde_json::to_string(&bill.content.items).expect("items serialize");
        let insert = concat!(
            "INSERT INTO bill (unit_appid, order_id, authorized_appid, request_id, state, fee, payer_title, billing_no,
                billing_code, billing_time, items, remarks, pdf_sha256, pdf_size, pdf_origin, next_attempt_at, created_at, updated_at, trace_id,
                trace_parent_id, signer_sha256, supplied_sha256, lease_holder, lease_until)
             VALUES ($1, $2, $3, $4, 'accepted', $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $15, $16, $17, $18, $19, $21, $22)
             RETURNING ",
            bill_columns!()
        );
        // Never empty: a bill's PDF was checked or rendered.
        let pdf = BILL_PDF.in_unit(&bill.key.unit_appid, &bill.key.order_id, &bill.pdf, 20);
        let statements = match self.db.backend() {
            Backend::Sqlite => vec![insert.to_owned(), pdf.statement],
            // Only the last statement's rows come out of a WITH.
            Backend::Postgres => {
                vec![format!("WITH inserted AS ({insert}), chunk AS ({}) SELECT * FROM inserted", pdf.statement)]
            }
        };
        let bind = |query: Statement| {
            query
                .bind(&bill.key.unit_appid)
                .bind(&bill.key.order_id)
                .bind(&bill.authorized_appid)
                .bind(bill.request_id.as_deref())
                .bind(bill.content.fee)
                .bind(&bill.content.payer_title)
                .bind(&bill.content.billing_no)
                .bind(&bill.content.billing_code)
                .bind(bill.content.billing_time)
                .bind(items)
                .bind(&bill.content.remarks)
                .bind(&bill.pdf_sha256)
                .bind(bill.pdf.len() as i64)
                .bind(bill.pdf_origin.as_str())
                .bind(now)
                .bind(&bill.trace.trace_id)
                .bind(&bill.trace.parent_id)
                .bind(bill.signer_sha256.as_deref())
                .bind(bill.supplied_sha256.as_deref())
                .bind(pdf.first_chunk)
                .bind(holder)
                .bind(lease_until)
        };
        let rows = self.db.write_together(statements, bind, pdf.more).await?;
        let row = rows.first().ok_or_else(|| Error::Protocol("the inserted bill came back with no row".into()))?;
        bill_from_row(row)
    }

    pub async fn pdf(&self, key: &BillKey) -> Result<Option<Bytes>, Error> {
        let _span = storage_span("pdf");
        BILL_PDF.read(&mut *self.db.read().await?, &key.unit_appid, &key.order_id).await
    }

    /// Bills newest first, after the cursor.
    pub async fn list_bills(&self, query: &BillQuery) -> Result<Vec<Bill>, Error> {
        let cursor = query.after.clone().unwrap_or_else(Cursor::first);
        // `created_at <= $3` repeats what the cursor's OR implies, so that PostgreSQL starts
        // the index scan at the cursor instead of gathering every older row first.
        sqlx::query(concat!(
            "SELECT ",
            bill_columns!(),
            " FROM bill WHERE ($1 = '' OR unit_appid = $1) AND ($2 = '' OR state = $2)
              AND created_at <= $3
              AND (created_at < $3 OR (created_at = $3 AND (unit_appid > $4 OR (unit_appid = $4 AND order_id > $5))))
              ORDER BY created_at DESC, unit_appid, order_id LIMIT $6"
        ))
        .bind(query.unit_appid.as_deref().unwrap_or_default())
        .bind(query.state.map(BillState::as_str).unwrap_or_default())
        .bind(cursor.created_at)
        .bind(&cursor.unit_appid)
        .bind(&cursor.order_id)
        .bind(query.limit)
        .fetch_all(&mut *self.db.read().await?)
        .await?
        .iter()
        .map(bill_from_row)
        .collect()
    }

    /// Bills per state, for metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, Error> {
        sqlx::query("SELECT state, COUNT(*) FROM bill GROUP BY state")
            .fetch_all(&mut *self.db.read().await?)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Takes the lease of one open bill, if free (or already ours), and returns the bill as
    /// leased: no second read.
    pub async fn claim_bill(&self, key: &BillKey, holder: &str, now: i64, until: i64) -> Result<Option<Bill>, Error> {
        let _span = storage_span("claim_bill");
        sqlx::query(AssertSqlSafe(format!(
            concat!(
                "UPDATE bill SET lease_holder = $3, lease_until = $5
                 WHERE unit_appid = $1 AND order_id = $2 AND state IN ({})
                   AND (lease_holder IS NULL OR lease_holder = $3 OR lease_until <= $4)
                 RETURNING ",
                bill_columns!()
            ),
            states(&BillState::open())
        )))
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(holder)
        .bind(now)
        .bind(until)
        .fetch_optional(&mut *self.db.write().await?)
        .await?
        .as_ref()
        .map(bill_from_row)
        .transpose()
    }

    /// Frees the bill leases and template claims `holder` took before a restart (it holds none
    /// yet); returns how many bills.
    pub async fn release_leases(&self, holder: &str) -> Result<u64, Error> {
        let mut tx = self.db.begin_write().await?;
        let bills = sqlx::query("UPDATE bill SET lease_holder = NULL, lease_until = 0 WHERE lease_holder = $1")
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE unit SET claim_holder = NULL, claim_until = 0 WHERE claim_holder = $1")
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(bills.rows_affected())
    }

    /// Leases up to `limit` due open bills whose lease is free. On PostgreSQL, SKIP LOCKED
    /// keeps replicas from contending for the same rows.
    pub async fn claim_due(&self, holder: &str, now: i64, until: i64, limit: i64) -> Result<Vec<BillKey>, Error> {
        let sql = self.db.sql(
            "UPDATE bill SET lease_holder = $1, lease_until = $2 WHERE (unit_appid, order_id) IN (
                SELECT unit_appid, order_id FROM bill
                WHERE state IN ({open}) AND next_attempt_at <= $3 AND lease_until <= $3
                ORDER BY next_attempt_at LIMIT $4)
             RETURNING unit_appid, order_id",
            "UPDATE bill SET lease_holder = $1, lease_until = $2 WHERE (unit_appid, order_id) IN (
                SELECT unit_appid, order_id FROM bill
                WHERE state IN ({open}) AND next_attempt_at <= $3 AND lease_until <= $3
                ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING unit_appid, order_id",
        );
        sqlx::query(AssertSqlSafe(sql.replace("{open}", &states(&BillState::open()))))
            .bind(holder)
            .bind(until)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *self.db.write().await?)
            .await?
            .iter()
            .map(|row| Ok(BillKey { unit_appid: row.try_get(0)?, order_id: row.try_get(1)? }))
            .collect()
    }

    /// Gives up the lease (after driving, or when parking at shutdown).
    pub async fn release_bill(&self, key: &BillKey, holder: &str) -> Result<(), Error> {
        let _span = storage_span("release_bill");
        sqlx::query("UPDATE bill SET lease_holder = NULL, lease_until = 0 WHERE unit_appid = $1 AND order_id = $2 AND lease_holder = $3")
            .bind(&key.unit_appid)
            .bind(&key.order_id)
            .bind(holder)
            .execute(&mut *self.db.write().await?)
            .await?;
        Ok(())
    }

    /// Applies one step's result while holding the lease, if the bill is still in the state the
    /// change began from, and keeps or gives up the lease with it; returns the bill as changed,
    /// or None if the lease was lost.
    pub async fn advance(
        &self,
        key: &BillKey,
        holder: &str,
        change: &Change,
        now: i64,
        lease: Lease,
    ) -> Result<Option<Bill>, Error> {
        let _span = storage_span("advance");
        let failure = change.failure.as_ref();
        let (lease_until, release) = match lease {
            Lease::Until(until) => (until, 0_i64),
            Lease::Release => (0, 1),
        };
        let statement = concat!(
            "UPDATE bill SET state = $3, card_id = COALESCE($4, card_id), s_media_id = $5, media_expires_at = $6,
                insert_pending = $7, card_code = $8, openid = $9, reimburse_status = $10,
                failure_reason = $11, failure_message = $12, failure_errcode = $13, failure_errmsg = $14, failure_rid = $15,
                failed_at = $16, attempts = $17, last_error = $18, never_authorized_since = $19, next_attempt_at = $20,
                inserted_at = $21, updated_at = $22, lease_until = $23, card_status_failures = $25, pdf_mismatches = $26,
                lease_holder = CASE WHEN $27 = 1 THEN NULL ELSE lease_holder END
             WHERE unit_appid = $1 AND order_id = $2 AND lease_holder = $24 AND state = $28
             RETURNING ",
            bill_columns!()
        );
        // A write unit of one statement: committed with others waiting at the writer.
        let bind = |query: Statement| {
            query
                .bind(&key.unit_appid)
                .bind(&key.order_id)
                .bind(change.state.as_str())
                .bind(change.card_id.as_deref())
                .bind(change.s_media_id.as_deref())
                .bind(change.media_expires_at)
                .bind(i64::from(change.insert_pending))
                .bind(change.card_code.as_deref())
                .bind(change.openid.as_deref())
                .bind(change.reimburse_status.map(ReimburseStatus::as_str))
                .bind(failure.map(|f| f.reason.as_str()))
                .bind(failure.map(|f| f.message.as_str()))
                .bind(failure.map_or(0, |f| f.wechat_errcode))
                .bind(failure.map(|f| f.wechat_errmsg.as_str()))
                .bind(failure.map(|f| f.wechat_rid.as_str()))
                .bind(failure.map_or(0, |f| f.at))
                .bind(change.attempts)
                .bind(change.last_error.as_deref())
                .bind(change.never_authorized_since)
                .bind(change.next_attempt_at)
                .bind(change.inserted_at)
                .bind(now)
                .bind(lease_until)
                .bind(holder)
                .bind(change.card_status_failures)
                .bind(change.pdf_mismatches)
                .bind(release)
                .bind(change.stored_state.as_str())
        };
        let rows = self.db.write_together(vec![statement.to_owned()], bind, None).await?;
        rows.first().map(bill_from_row).transpose()
    }

    /// Starts a failed bill over (a repeated IssueBill after a fixable failure).
    pub async fn restart_failed(&self, key: &BillKey, now: i64) -> Result<bool, Error> {
        let _span = storage_span("restart_failed");
        let event = BillEvent::Restarted;
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE bill SET state = $4, s_media_id = NULL, media_expires_at = 0, failure_reason = NULL,
                failure_message = NULL, failure_errcode = 0, failure_errmsg = NULL, failure_rid = NULL, failed_at = 0,
                attempts = 0, last_error = NULL, never_authorized_since = 0, card_status_failures = 0, pdf_mismatches = 0,
                next_attempt_at = $3, updated_at = $3
             WHERE unit_appid = $1 AND order_id = $2 AND state IN ({})",
            states(&event.sources())
        )))
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(now)
        .bind(BillState::Failed.after(event).expect("a failed bill can restart").as_str())
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets the reimbursement status if it is still `from` (None: never set).
    pub async fn set_reimburse_status(
        &self,
        key: &BillKey,
        from: Option<ReimburseStatus>,
        to: ReimburseStatus,
        at_secs: i64,
        now: i64,
    ) -> Result<bool, Error> {
        let _span = storage_span("set_reimburse_status");
        let done = sqlx::query(
            "UPDATE bill SET reimburse_status = $3, reimburse_updated_secs = $4, updated_at = $5
             WHERE unit_appid = $1 AND order_id = $2 AND COALESCE(reimburse_status, '') = $6",
        )
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(to.as_str())
        .bind(at_secs)
        .bind(now)
        .bind(from.map(ReimburseStatus::as_str).unwrap_or_default())
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a status push once and applies it to its bill, in one transaction. A push older
    /// than the bill's last status change, or after a final status, is recorded but not applied.
    pub async fn record_status_event(&self, event: &StatusEventRow<'_>, now: i64) -> Result<EventOutcome, Error> {
        let _span = storage_span("record_status_event");
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO callback_event (dedupe_key, event, card_id, code, status, openid, create_time, matched, body, received_at)
             VALUES ($1, 'update_invoice_status', $2, $3, $4, $5, $6, 0, $7, $8) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(event.dedupe_key)
        .bind(event.card_id)
        .bind(event.code)
        .bind(event.status.as_str())
        .bind(event.openid)
        .bind(event.create_time)
        .bind(event.body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(EventOutcome::Duplicate);
        }
        let applied = sqlx::query(AssertSqlSafe(format!(
            "UPDATE bill SET reimburse_status = $3, reimburse_updated_secs = $4, updated_at = $5
             WHERE card_id = $1 AND card_code = $2 AND reimburse_updated_secs <= $4
               AND COALESCE(reimburse_status, $6) IN ({})",
            sql_list(ReimburseStatus::sources(event.status).iter().map(|status| status.as_str()))
        )))
        .bind(event.card_id)
        .bind(event.code)
        .bind(event.status.as_str())
        .bind(event.create_time)
        .bind(now)
        // A bill never given a status is at INIT.
        .bind(ReimburseStatus::Init.as_str())
        .execute(&mut *tx)
        .await?;
        let outcome = if applied.rows_affected() > 0 {
            sqlx::query("UPDATE callback_event SET matched = 1 WHERE dedupe_key = $1")
                .bind(event.dedupe_key)
                .execute(&mut *tx)
                .await?;
            EventOutcome::Applied
        } else {
            EventOutcome::Recorded
        };
        tx.commit().await?;
        Ok(outcome)
    }
}

/// The full new state of a bill after one step.
#[derive(Clone, Debug)]
pub struct Change {
    /// The state stored when the change began: the update is made only if the bill is still in
    /// it (a step may move the bill through several states before it is recorded).
    pub stored_state: BillState,
    pub state: BillState,
    pub card_id: Option<String>,
    pub s_media_id: Option<String>,
    pub media_expires_at: i64,
    pub insert_pending: bool,
    pub card_code: Option<String>,
    pub openid: Option<String>,
    pub reimburse_status: Option<ReimburseStatus>,
    pub failure: Option<Failure>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub never_authorized_since: i64,
    pub card_status_failures: i64,
    pub pdf_mismatches: i64,
    pub next_attempt_at: i64,
    pub inserted_at: i64,
}

impl Change {
    /// The bill as it is: start from here and change what the step changed.
    pub fn from(bill: &Bill) -> Self {
        Self {
            stored_state: bill.state,
            state: bill.state,
            card_id: bill.card_id.clone(),
            s_media_id: bill.s_media_id.clone(),
            media_expires_at: bill.media_expires_at,
            insert_pending: bill.insert_pending,
            card_code: bill.card_code.clone(),
            openid: bill.openid.clone(),
            reimburse_status: bill.reimburse_status,
            failure: bill.failure.clone(),
            attempts: bill.attempts,
            last_error: bill.last_error.clone(),
            never_authorized_since: bill.never_authorized_since,
            card_status_failures: bill.card_status_failures,
            pdf_mismatches: bill.pdf_mismatches,
            next_attempt_at: bill.next_attempt_at,
            inserted_at: bill.inserted_at,
        }
    }
}

impl Change {
    /// Records `event`, moving the state as the lifecycle table says. Panics when the table
    /// does not allow it: that is a bug in the issuer, not a condition of the data.
    pub fn apply(&mut self, event: BillEvent) {
        self.state = self
            .state
            .after(event)
            .unwrap_or_else(|| panic!("a {} bill does not allow {event:?}", self.state.as_str()));
    }

    /// The change so far is stored: what follows is guarded by the state it stored.
    pub fn stored(&mut self) {
        self.stored_state = self.state;
    }
}

/// The SQL list of `states` (see [`sql_list`]).
fn states(states: &[BillState]) -> String {
    sql_list(states.iter().map(|state| state.as_str()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fiscalbill_common::bill::test_support::registration_fee;
    use fiscalbill_common::db::{COMMON_MIGRATIONS, Db, test_support};
    use fiscalbill_common::pdf_store::test_support::whole_pdfs_survive_the_move_to_chunks;
    use fiscalbill_common::trace::TraceContext;

    use super::{BILL_PDF, Change, Lease, MIGRATIONS, Store};
    use crate::domain::{BillEvent, BillKey, BillState, NewBill, PdfOrigin};

    #[test]
    fn the_due_index_covers_exactly_the_open_states() {
        // The worker's query names the open states as literals; the partial index must name
        // the same, or the planner cannot use it.
        let index = format!(
            "CREATE INDEX bill_due ON bill (next_attempt_at) WHERE state IN ({});",
            super::states(&super::BillState::open())
        );
        assert!(MIGRATIONS[0].sql.contains(&index), "{index}");
    }

    #[tokio::test]
    async fn pdfs_stored_whole_survive_the_move_to_chunks() {
        whole_pdfs_survive_the_move_to_chunks(MIGRATIONS, "bill_pdf", BILL_PDF).await;
    }

    fn new_bill(order_id: &str, billing_code: &str, pdf: Bytes) -> NewBill {
        NewBill {
            key: BillKey { unit_appid: "wxu".into(), order_id: order_id.into() },
            authorized_appid: "wxu".into(),
            request_id: Some(format!("r-{order_id}")),
            trace: TraceContext::root(),
            content: registration_fee(billing_code),
            pdf_sha256: "ab".repeat(32),
            pdf,
            pdf_origin: PdfOrigin::Supplied,
            signer_sha256: None,
            supplied_sha256: None,
        }
    }

    /// A new bill comes back from its insert as stored and leased to the inserting replica
    /// (which drives it at once, without claiming it), with its PDF whole; on each backend,
    /// with a PDF of one chunk and one of several (the statements after the unit).
    #[tokio::test]
    async fn a_new_bill_comes_back_leased_to_its_inserter() {
        for config in test_support::both() {
            let db = Db::connect_until_ready(&config, "bureau", &[COMMON_MIGRATIONS, MIGRATIONS]).await;
            let store = Store::new(db.clone());
            let small = Bytes::from(vec![7_u8; 1_000]);
            let large = Bytes::from((0..600_000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            for (order_id, code, pdf) in [("o-1", "0000000001", small), ("o-2", "0000000002", large)] {
                let new = new_bill(order_id, code, pdf.clone());
                let bill = store.insert_bill(&new, 1_000, "replica-a", 61_000).await.unwrap();
                assert_eq!(bill.key, new.key, "{}", config.url);
                assert_eq!((bill.state, bill.pdf_size), (BillState::Accepted, pdf.len() as i64));
                assert_eq!((bill.content.billing_code.as_str(), bill.created_at), (code, 1_000));
                assert_eq!(store.pdf(&new.key).await.unwrap(), Some(pdf), "{}", config.url);
                // Leased: another replica cannot claim it before the lease ends, its holder can.
                assert!(store.claim_bill(&new.key, "replica-b", 2_000, 62_000).await.unwrap().is_none());
                assert!(store.claim_bill(&new.key, "replica-b", 61_000, 121_000).await.unwrap().is_some());
            }
            // The same order again: the unique key refuses it, and nothing of it is kept.
            let again = new_bill("o-1", "0000000009", Bytes::from_static(b"other"));
            assert!(store.insert_bill(&again, 3_000, "replica-a", 63_000).await.is_err());
            assert_eq!(store.pdf(&again.key).await.unwrap(), Some(Bytes::from(vec![7_u8; 1_000])));
            db.close().await;
        }
    }

    /// A step may move a bill through several states before it is recorded: the record is
    /// guarded by the state the step began from, so a change begun from a state the bill has
    /// since left writes nothing; once a change is stored, what follows is guarded by its state.
    #[tokio::test]
    async fn a_change_is_stored_only_from_the_state_it_began_in() {
        for config in test_support::both() {
            let db = Db::connect_until_ready(&config, "bureau", &[COMMON_MIGRATIONS, MIGRATIONS]).await;
            let store = Store::new(db.clone());
            let new = new_bill("o-1", "0000000001", Bytes::from_static(b"%PDF-1.4"));
            let accepted = store.insert_bill(&new, 1_000, "replica-a", 61_000).await.unwrap();

            // Uploaded and checked in one step, recorded with the insert's pending mark.
            let mut change = Change::from(&accepted);
            change.apply(BillEvent::PdfUploaded);
            change.s_media_id = Some("media-1".into());
            change.apply(BillEvent::PdfChecked);
            change.insert_pending = true;
            let checked = store.advance(&new.key, "replica-a", &change, 2_000, Lease::Until(62_000)).await.unwrap();
            let checked = checked.expect("recorded");
            assert_eq!((checked.state, checked.insert_pending), (BillState::PdfChecked, true), "{}", config.url);
            assert_eq!(checked.s_media_id.as_deref(), Some("media-1"));

            // A change begun from the bill as accepted comes too late: nothing is written.
            let mut stale = Change::from(&accepted);
            stale.apply(BillEvent::PdfUploaded);
            stale.s_media_id = Some("media-2".into());
            let refused = store.advance(&new.key, "replica-a", &stale, 3_000, Lease::Until(63_000)).await.unwrap();
            assert!(refused.is_none(), "{}", config.url);
            let stored = store.bill(&new.key).await.unwrap().unwrap();
            assert_eq!((stored.state, stored.s_media_id.as_deref()), (BillState::PdfChecked, Some("media-1")));

            // Unless told it is stored, the first change is still guarded by "accepted".
            let mut unstored = change.clone();
            unstored.apply(BillEvent::Inserted);
            let refused = store.advance(&new.key, "replica-a", &unstored, 4_000, Lease::Release).await.unwrap();
            assert!(refused.is_none(), "{}", config.url);
            change.stored();
            change.apply(BillEvent::Inserted);
            let inserted = store.advance(&new.key, "replica-a", &change, 4_000, Lease::Release).await.unwrap();
            assert_eq!(inserted.map(|bill| bill.state), Some(BillState::Inserted), "{}", config.url);
            db.close().await;
        }
    }
}
