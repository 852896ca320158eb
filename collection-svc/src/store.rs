//! All of collection-svc's SQL, for SQLite and PostgreSQL alike. A verified push is recorded
//! (deduplicated), applied to its authorization and turned into an outbox job in one
//! transaction; outbox jobs are leased so that one replica at a time delivers each.

use std::sync::Arc;

use bytes::Bytes;
use fiscalbill_common::bill::BillContent;
use fiscalbill_common::db::{Backend, Db, Migration, Statement, WriteTx, sql_list};
use fiscalbill_common::paging::Cursor;
use fiscalbill_common::pdf_store::PdfTable;
use fiscalbill_common::telemetry::storage_span;
use fiscalbill_common::trace::TraceContext;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Error, Row};
use tokio::sync::watch;
use wechat::types::AuthSource;

use crate::domain::{
    AuthChange, AuthEvent, AuthQuery, AuthState, Authorization, ChangePosition, Failure, Job, JobPhase, OrderKey,
};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        set: "collection",
        version: 1,
        name: "initial schema",
        sql: include_str!("../migrations/0001_init.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "collection",
        version: 2,
        name: "PDFs in chunks",
        sql: include_str!("../migrations/0002_pdf_chunks.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "collection",
        version: 3,
        name: "trace parent span",
        sql: include_str!("../migrations/0003_trace.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "collection",
        version: 4,
        name: "billing numbers",
        sql: include_str!("../migrations/0004_billing_numbers.sql"),
        postgres_sql: None,
    },
    Migration {
        set: "collection",
        version: 5,
        name: "authorization changes",
        sql: include_str!("../migrations/0005_authorization_changes.sql"),
        postgres_sql: Some(include_str!("../migrations/0005_authorization_changes.postgres.sql")),
    },
];

const AUTHORIZATION_PDF: PdfTable = PdfTable("payer_authorization_pdf_chunk");

macro_rules! auth_columns {
    () => {
        "unit_appid, order_id, authorized_appid, source, money, bill, pdf_sha256, redirect_url, request_id, trace_id, trace_parent_id, \
         s_pappid, \
         auth_url, auth_url_expires_at, state, openid, authorize_time, card_id, card_code, failure_reason, failure_message, \
         failure_errcode, failure_errmsg, failure_rid, failed_at, issue_attempts, reject_reason, wechat_invoice_status, \
         created_at, updated_at"
    };
}

/// One authorization, by `$1` = unit_appid and `$2` = order_id.
const AUTHORIZATION_BY_KEY: &str =
    concat!("SELECT ", auth_columns!(), " FROM payer_authorization WHERE unit_appid = $1 AND order_id = $2");

/// Authorizes a waiting order: `$1` unit_appid, `$2` order_id, `$3` openid and `$5` WeChat's
/// invoice status (NULL: kept), `$4` authorize_time, `$6` now; only an order created under `$7`
/// s_pappid and `$8` authorized appid (NULL: not checked).
fn authorize_sql() -> AssertSqlSafe<String> {
    event_sql(
        "UPDATE payer_authorization SET state = '{to}', openid = COALESCE($3, openid), authorize_time = $4,
            wechat_invoice_status = COALESCE($5, wechat_invoice_status), updated_at = $6
         WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})
            AND s_pappid = COALESCE($7, s_pappid) AND authorized_appid = COALESCE($8, authorized_appid)",
        AuthEvent::PayerAuthorized,
    )
}

/// Binds [`authorize_sql`]'s `$1` ... `$8`.
fn bind_authorize(
    query: Statement,
    unit_appid: &str,
    order_id: &str,
    payer: &PayerAuthorized<'_>,
    now: i64,
) -> Statement {
    query
        .bind(unit_appid)
        .bind(order_id)
        .bind(payer.openid)
        .bind(payer.authorize_time)
        .bind(payer.invoice_status)
        .bind(now)
        .bind(payer.s_pappid)
        .bind(payer.authorized_appid)
}

/// Queues an order's IssueBill job, due at once (again, if it had one): `{row}` gives its
/// unit_appid, order_id, `'issue'`, the time twice, and its lease's holder and end (NULL and 0:
/// for whichever replica claims it). A job queued before keeps its lease.
const QUEUE_JOB: &str =
    "INSERT INTO outbox (unit_appid, order_id, phase, next_attempt_at, created_at, lease_holder, lease_until) {row}
     ON CONFLICT (unit_appid, order_id) DO UPDATE SET phase = 'issue', attempts = 0,
        next_attempt_at = excluded.next_attempt_at, last_error = NULL";

/// Ends an order's job (`$1`, `$2`) only while `$3` holds its lease.
const DELETE_LEASED_JOB: &str = "DELETE FROM outbox WHERE unit_appid = $1 AND order_id = $2 AND lease_holder = $3";

/// Records a push; the values follow.
const INSERT_PUSH_EVENT: &str = "INSERT INTO push_event
    (dedupe_key, unit_appid, event, order_id, openid, authorize_appid, create_time, outcome, body, received_at)";

/// The SQL of a change of state by `event`: `{to}` becomes the event's target state and
/// `{from}` the states that allow it. The rule is the domain's; the SQL only takes its "from"
/// set as data.
fn event_sql(sql: &str, event: AuthEvent) -> AssertSqlSafe<String> {
    let from = sql_list(event.sources().iter().map(|state| state.as_str()));
    AssertSqlSafe(sql.replace("{from}", &from).replace("{to}", event.target().as_str()))
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Decode(format!("stored {what} {value:?} is not valid").into())
}

fn change_from_row(row: &AnyRow) -> Result<AuthChange, Error> {
    let state: String = row.try_get("state")?;
    Ok(AuthChange {
        position: ChangePosition { txid: row.try_get("txid")?, seq: row.try_get("seq")? },
        key: OrderKey { unit_appid: row.try_get("unit_appid")?, order_id: row.try_get("order_id")? },
        state: AuthState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        card_id: row.try_get("card_id")?,
        card_code: row.try_get("card_code")?,
        failure: Failure::from_row(row)?,
        changed_at: row.try_get("changed_at")?,
    })
}

fn auth_from_row(row: &AnyRow) -> Result<Authorization, Error> {
    let state: String = row.try_get("state")?;
    let source: String = row.try_get("source")?;
    let bill: String = row.try_get("bill")?;
    let failure = Failure::from_row(row)?;
    Ok(Authorization {
        key: OrderKey { unit_appid: row.try_get("unit_appid")?, order_id: row.try_get("order_id")? },
        authorized_appid: row.try_get("authorized_appid")?,
        source: AuthSource::parse(&source).ok_or_else(|| corrupt("source", &source))?,
        money: row.try_get("money")?,
        bill: serde_json::from_str::<BillContent>(&bill).map_err(|_| corrupt("bill", &bill))?,
        pdf_sha256: row.try_get("pdf_sha256")?,
        redirect_url: row.try_get("redirect_url")?,
        request_id: row.try_get("request_id")?,
        trace: TraceContext { trace_id: row.try_get("trace_id")?, parent_id: row.try_get("trace_parent_id")? },
        s_pappid: row.try_get("s_pappid")?,
        auth_url: row.try_get("auth_url")?,
        auth_url_expires_at: row.try_get("auth_url_expires_at")?,
        state: AuthState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        openid: row.try_get("openid")?,
        authorize_time: row.try_get("authorize_time")?,
        card_id: row.try_get("card_id")?,
        card_code: row.try_get("card_code")?,
        failure,
        issue_attempts: row.try_get("issue_attempts")?,
        reject_reason: row.try_get("reject_reason")?,
        wechat_invoice_status: row.try_get("wechat_invoice_status")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A read of a unit's change log: the changes after a position, each with the position the
/// log is pruned through when read.
#[derive(Debug)]
pub struct ChangesRead {
    pub changes: Vec<(AuthChange, ChangePosition)>,
    /// On PostgreSQL, committed changes wait behind a transaction still running (they come in
    /// a later read): read again soon rather than at the next poll.
    pub held_back: bool,
}

/// See [`Store::orders_in_the_way`].
#[derive(Clone, Debug, Default)]
pub struct OrdersInTheWay {
    /// The order was created before.
    pub created: bool,
    pub request_id: Option<OrderKey>,
    pub billing_number: Option<OrderKey>,
}

/// A verified `user_authorize_invoice` push, ready to record.
#[derive(Clone, Debug)]
pub struct PushRow<'a> {
    pub dedupe_key: &'a str,
    pub unit_appid: &'a str,
    pub order_id: &'a str,
    pub openid: &'a str,
    pub authorize_appid: Option<&'a str>,
    /// The push's SPAppId, when it carries one.
    pub s_pappid: Option<&'a str>,
    pub authorized: bool,
    /// Unix seconds, from the push.
    pub create_time: i64,
    pub body: &'a str,
}

/// An authorization and, when asked for and stored, its PDF: what a delivery sends.
pub type ToDeliver = (Authorization, Option<Bytes>);

/// The lease a replica takes on a job it queues and delivers at once.
pub struct JobLease<'a> {
    pub holder: &'a str,
    pub until: i64,
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Seen before: a retry or a replay. Nothing changed.
    Duplicate,
    /// The order is now authorized and its IssueBill job queued.
    Authorized,
    Declined,
    /// The authorization was already past this answer (e.g. issued, rejected).
    NoChange,
    /// No such order: kept for inspection.
    UnknownOrder,
    /// The push names another appid than the order was authorized under: kept, not applied.
    AppidMismatch,
    /// The push names another s_pappid than the order was created under: refused, not kept.
    SpAppIdMismatch,
}

impl PushOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Duplicate => "duplicate",
            PushOutcome::Authorized => "authorized",
            PushOutcome::Declined => "declined",
            PushOutcome::NoChange => "no_change",
            PushOutcome::UnknownOrder => "unknown_order",
            PushOutcome::AppidMismatch => "appid_mismatch",
            PushOutcome::SpAppIdMismatch => "spappid_mismatch",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// Bumped after each write that may have changed a state: wakes this process's
    /// WatchAuthorizations streams (other replicas' changes are found by their timer).
    changed: Arc<watch::Sender<()>>,
}

/// The columns WatchAuthorizations reads of a change, with where the deleted part of the log
/// ends (read in the same statement: one snapshot).
macro_rules! change_columns {
    () => {
        "seq, txid, unit_appid, order_id, state, card_id, card_code, failure_reason, failure_message,
         failure_errcode, failure_errmsg, failure_rid, failed_at, changed_at,
         (SELECT txid FROM authorization_change_pruned WHERE id = 1) AS pruned_txid,
         (SELECT seq FROM authorization_change_pruned WHERE id = 1) AS pruned_seq"
    };
}

// A unit's changes after a position ($2, $3) and before the horizon ($4), at most $5. The
// position is written so that the index on (unit_appid, txid, seq) starts there instead of
// scanning the unit's whole retained log: on SQLite txid is always 0 and the horizon 1, so the
// position is its seq; on PostgreSQL a row comparison.
const CHANGES_AFTER_SQLITE: &str = concat!(
    "SELECT ",
    change_columns!(),
    " FROM authorization_change WHERE unit_appid = $1 AND txid = $2 AND seq > $3 ORDER BY txid, seq LIMIT $5"
);
const CHANGES_AFTER_POSTGRES: &str = concat!(
    "SELECT ",
    change_columns!(),
    " FROM authorization_change WHERE unit_appid = $1 AND (txid, seq) > ($2, $3) AND txid < $4
     ORDER BY txid, seq LIMIT $5"
);

// The changes up to a position ($1, $2), deleted. On SQLite (txid always 0) a range of seq,
// the table's rowid, instead of a scan of the whole log while the writer is held.
const PRUNE_CHANGES_SQLITE: &str = "DELETE FROM authorization_change WHERE txid = $1 AND seq <= $2";
const PRUNE_CHANGES_POSTGRES: &str = "DELETE FROM authorization_change WHERE txid < $1 OR (txid = $1 AND seq <= $2)";

impl Store {
    pub fn new(db: Db) -> Self {
        Self { db, changed: Arc::new(watch::channel(()).0) }
    }

    /// Wakes when a write of this process may have changed an authorization's state.
    pub fn subscribe_changes(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    fn wake_watchers(&self) {
        self.changed.send_replace(());
    }

    // --- settings ---

    pub async fn setting(&self, name: &str) -> Result<Option<String>, Error> {
        self.db
            .read_row("SELECT value FROM setting WHERE name = $1", |query| query.bind(name))
            .await?
            .map(|row| row.try_get(0))
            .transpose()
    }

    /// Stores a setting unless it exists; returns the stored value.
    pub async fn put_setting(&self, name: &str, value: &str) -> Result<String, Error> {
        sqlx::query("INSERT INTO setting (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&mut *self.db.write().await?)
            .await?;
        Ok(self.setting(name).await?.unwrap_or_else(|| value.to_owned()))
    }

    // --- authorizations ---

    pub async fn authorization(&self, key: &OrderKey) -> Result<Option<Authorization>, Error> {
        let _span = storage_span("authorization");
        self.db
            .read_row(AUTHORIZATION_BY_KEY, |query| query.bind(&key.unit_appid).bind(&key.order_id))
            .await?
            .as_ref()
            .map(auth_from_row)
            .transpose()
    }

    /// An authorization and, when `with_pdf`, the PDF stored with it: what the dispatcher
    /// sends to the bureau, read in one statement.
    pub async fn authorization_to_deliver(&self, key: &OrderKey, with_pdf: bool) -> Result<Option<ToDeliver>, Error> {
        let _span = storage_span("authorization_to_deliver");
        let sql = AUTHORIZATION_PDF.beside_sql(AUTHORIZATION_BY_KEY, "$3");
        let query = sqlx::query(AssertSqlSafe(sql)).bind(&key.unit_appid).bind(&key.order_id).bind(with_pdf);
        AUTHORIZATION_PDF.read_beside(query, &mut *self.db.read().await?, auth_from_row).await
    }

    /// The order that holds a billing number, if any.
    pub async fn billing_number_holder(&self, billing_no: &str, billing_code: &str) -> Result<Option<OrderKey>, Error> {
        let _span = storage_span("billing_number_holder");
        let sql = "SELECT unit_appid, order_id FROM billing_number WHERE billing_no = $1 AND billing_code = $2";
        let row = self.db.read_row(sql, |query| query.bind(billing_no).bind(billing_code)).await?;
        row.map(|row| Ok(OrderKey { unit_appid: row.try_get("unit_appid")?, order_id: row.try_get("order_id")? }))
            .transpose()
    }

    /// The order's trace (for the spans of its later work).
    pub async fn trace(&self, key: &OrderKey) -> Result<Option<TraceContext>, Error> {
        let sql = "SELECT trace_id, trace_parent_id FROM payer_authorization WHERE unit_appid = $1 AND order_id = $2";
        let row = self.db.read_row(sql, |query| query.bind(&key.unit_appid).bind(&key.order_id)).await?;
        row.map(|row| {
            Ok(TraceContext { trace_id: row.try_get("trace_id")?, parent_id: row.try_get("trace_parent_id")? })
        })
        .transpose()
    }

    /// The orders a new CreateAuthorization could collide with, in one read: the order itself
    /// (if created before), the one holding its request_id, the one holding its billing number.
    pub async fn orders_in_the_way(
        &self,
        key: &OrderKey,
        request_id: Option<&str>,
        billing_no: &str,
        billing_code: &str,
    ) -> Result<OrdersInTheWay, Error> {
        let _span = storage_span("orders_in_the_way");
        let sql = "SELECT 'order' AS matched, unit_appid, order_id FROM payer_authorization WHERE unit_appid = $1 AND order_id = $2
             UNION ALL SELECT 'request_id', unit_appid, order_id FROM payer_authorization WHERE request_id = $3
             UNION ALL SELECT 'billing_number', unit_appid, order_id FROM billing_number WHERE billing_no = $4 AND billing_code = $5";
        let rows = self
            .db
            .read_rows(sql, |query| {
                query.bind(&key.unit_appid).bind(&key.order_id).bind(request_id).bind(billing_no).bind(billing_code)
            })
            .await?;
        let mut found = OrdersInTheWay::default();
        for row in &rows {
            let matched: String = row.try_get("matched")?;
            let holder = OrderKey { unit_appid: row.try_get("unit_appid")?, order_id: row.try_get("order_id")? };
            match matched.as_str() {
                "order" => found.created = true,
                "request_id" => found.request_id = Some(holder),
                _ => found.billing_number = Some(holder),
            }
        }
        Ok(found)
    }

    /// Records a new authorization, its billing number and its PDF: one write unit.
    pub async fn insert_authorization(&self, auth: &Authorization, pdf: Option<&Bytes>) -> Result<(), Error> {
        let _span = storage_span("insert_authorization");
        let bill = serde_json::to_string(&auth.bill).expect("bill serializes");
        let mut statements = vec![
            "INSERT INTO payer_authorization (unit_appid, order_id, authorized_appid, source, money, bill, pdf_sha256, redirect_url,
                request_id, s_pappid, auth_url, auth_url_expires_at, state, created_at, updated_at, trace_id,
                trace_parent_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13, $13, $14, $15)"
                .to_owned(),
            "INSERT INTO billing_number (billing_no, billing_code, unit_appid, order_id) VALUES ($16, $17, $1, $2)".to_owned(),
        ];
        let pdf = pdf.filter(|pdf| !pdf.is_empty());
        let (first_chunk, more) = match pdf {
            Some(pdf) => {
                let pdf = AUTHORIZATION_PDF.in_unit(&auth.key.unit_appid, &auth.key.order_id, pdf, 18);
                statements.push(pdf.statement);
                (Some(pdf.first_chunk), pdf.more)
            }
            None => (None, None),
        };
        let bind = |query: Statement| {
            let query = query
                .bind(&auth.key.unit_appid)
                .bind(&auth.key.order_id)
                .bind(&auth.authorized_appid)
                .bind(auth.source.as_str())
                .bind(auth.money)
                .bind(bill)
                .bind(auth.pdf_sha256.as_deref())
                .bind(auth.redirect_url.as_deref())
                .bind(auth.request_id.as_deref())
                .bind(&auth.s_pappid)
                .bind(&auth.auth_url)
                .bind(auth.auth_url_expires_at)
                .bind(auth.created_at)
                .bind(&auth.trace.trace_id)
                .bind(&auth.trace.parent_id)
                .bind(&auth.bill.billing_no)
                .bind(&auth.bill.billing_code);
            match first_chunk {
                Some(chunk) => query.bind(chunk),
                None => query,
            }
        };
        self.db.write_together(statements, bind, more).await?;
        self.wake_watchers();
        Ok(())
    }

    /// A new link for an expired authorization: pending again.
    pub async fn renew_link(&self, key: &OrderKey, auth_url: &str, expires_at: i64, now: i64) -> Result<bool, Error> {
        let _span = storage_span("renew_link");
        let event = AuthEvent::LinkRenewed;
        let done = sqlx::query(event_sql(
            "UPDATE payer_authorization SET auth_url = $3, auth_url_expires_at = $4, state = '{to}', updated_at = $5
             WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
            event,
        ))
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(auth_url)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *self.db.write().await?)
        .await?;
        self.wake_watchers();
        Ok(done.rows_affected() == 1)
    }

    pub async fn list(&self, query: &AuthQuery) -> Result<Vec<Authorization>, Error> {
        let cursor = query.after.clone().unwrap_or_else(Cursor::first);
        // `created_at <= $3` repeats what the cursor's OR implies, so that PostgreSQL starts
        // the index scan at the cursor instead of gathering every older row first.
        sqlx::query(concat!(
            "SELECT ",
            auth_columns!(),
            " FROM payer_authorization WHERE ($1 = '' OR unit_appid = $1) AND ($2 = '' OR state = $2)
              AND created_at <= $3
              AND (created_at < $3 OR (created_at = $3 AND (unit_appid > $4 OR (unit_appid = $4 AND order_id > $5))))
              ORDER BY created_at DESC, unit_appid, order_id LIMIT $6"
        ))
        .bind(query.unit_appid.as_deref().unwrap_or_default())
        .bind(query.state.map(AuthState::as_str).unwrap_or_default())
        .bind(cursor.created_at)
        .bind(&cursor.unit_appid)
        .bind(&cursor.order_id)
        .bind(query.limit)
        .fetch_all(&mut *self.db.read().await?)
        .await?
        .iter()
        .map(auth_from_row)
        .collect()
    }

    // --- the change log (WatchAuthorizations) ---

    /// The position after every change committed so far: where a new stream starts. On
    /// PostgreSQL it lies before the transactions still running, whose changes may already
    /// be committed when the stream reads: those come at its start.
    pub async fn end_of_changes(&self) -> Result<ChangePosition, Error> {
        match self.db.backend() {
            Backend::Sqlite => {
                let row =
                    self.db.read_one("SELECT COALESCE(MAX(seq), 0) FROM authorization_change", |query| query).await?;
                Ok(ChangePosition { txid: 0, seq: row.try_get(0)? })
            }
            // Before the oldest transaction still running: changes of older ones are all
            // committed or gone.
            Backend::Postgres => {
                let sql = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint";
                let horizon: i64 = self.db.read_one(sql, |query| query).await?.try_get(0)?;
                Ok(ChangePosition { txid: horizon - 1, seq: i64::MAX })
            }
        }
    }

    /// Where the deleted part of the change log ends: a stream positioned before it would miss
    /// changes.
    pub async fn pruned_through(&self) -> Result<ChangePosition, Error> {
        let sql = "SELECT txid, seq FROM authorization_change_pruned WHERE id = 1";
        let row = self.db.read_one(sql, |query| query).await?;
        Ok(ChangePosition { txid: row.try_get(0)?, seq: row.try_get(1)? })
    }

    /// Deletes up to `limit` of the oldest changes made before `before` (Unix ms), and records
    /// where the deleted part ends; returns how many were deleted.
    pub async fn prune_changes(&self, before: i64, limit: i64) -> Result<u64, Error> {
        let _span = storage_span("prune_changes");
        let mut tx = self.db.begin_write().await?;
        let last = sqlx::query(
            "SELECT txid, seq FROM (
                SELECT txid, seq FROM authorization_change WHERE changed_at < $1 ORDER BY txid, seq LIMIT $2
             ) AS oldest ORDER BY txid DESC, seq DESC LIMIT 1",
        )
        .bind(before)
        .bind(limit)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(last) = last else {
            tx.rollback().await?;
            return Ok(0);
        };
        let (txid, seq): (i64, i64) = (last.try_get(0)?, last.try_get(1)?);
        sqlx::query(
            "UPDATE authorization_change_pruned SET txid = $1, seq = $2
             WHERE id = 1 AND (txid < $1 OR (txid = $1 AND seq < $2))",
        )
        .bind(txid)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(self.db.sql(PRUNE_CHANGES_SQLITE, PRUNE_CHANGES_POSTGRES))
            .bind(txid)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected())
    }

    /// Up to `limit` changes of the unit's authorizations after `after`, oldest first; only
    /// changes every later reader will also see, so that a position never skips one. Each
    /// change comes with where the deleted part of the log ended when it was read (one
    /// snapshot): a stream positioned before that has missed changes.
    pub async fn changes_after(
        &self,
        unit_appid: &str,
        after: ChangePosition,
        limit: i64,
    ) -> Result<ChangesRead, Error> {
        let _span = storage_span("changes_after");
        // Changes of transactions before the horizon are all committed or gone.
        let (horizon, held_back) = match self.db.backend() {
            // Writes never overlap and txid is always 0: all that is committed can be read.
            Backend::Sqlite => (1, false),
            // The oldest transaction still running, and whether committed changes of the unit
            // wait behind it: in one statement, so that both see the same moment.
            Backend::Postgres => {
                let sql = "SELECT h.horizon, EXISTS (SELECT 1 FROM authorization_change
                        WHERE unit_appid = $1 AND txid >= h.horizon AND (txid, seq) > ($2, $3)) AS held_back
                     FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) h";
                let row =
                    self.db.read_one(sql, |query| query.bind(unit_appid).bind(after.txid).bind(after.seq)).await?;
                (row.try_get("horizon")?, row.try_get("held_back")?)
            }
        };
        let sql = self.db.sql(CHANGES_AFTER_SQLITE, CHANGES_AFTER_POSTGRES);
        let changes = self
            .db
            .read_rows(sql, |query| query.bind(unit_appid).bind(after.txid).bind(after.seq).bind(horizon).bind(limit))
            .await?
            .iter()
            .map(|row| {
                let pruned = ChangePosition { txid: row.try_get("pruned_txid")?, seq: row.try_get("pruned_seq")? };
                Ok((change_from_row(row)?, pruned))
            })
            .collect::<Result<_, Error>>()?;
        Ok(ChangesRead { changes, held_back })
    }

    /// Records a verified push once and applies it, queueing the IssueBill job when the payer
    /// authorized: all in one transaction. A push naming another s_pappid than the order was
    /// created under is refused before anything is written. With `lease`, the usual push
    /// (authorizing a waiting order) queues its job leased, for the replica to deliver at once
    /// without claiming it, and reads in the same unit what the delivery sends: given back when
    /// it did (not when what it read cannot be decoded: the job is then retried after its lease).
    /// A PDF of more than one chunk is left out of that read (the authorization has its
    /// `pdf_sha256`, the PDF is None): the delivery reads it on its own, a chunk at a time.
    pub async fn record_push(
        &self,
        push: &PushRow<'_>,
        now: i64,
        lease: Option<JobLease<'_>>,
    ) -> Result<(PushOutcome, Option<ToDeliver>), Error> {
        let _span = storage_span("record_push");
        if push.authorized
            && let Some(leased) = self.record_authorizing_push(push, now, lease.as_ref()).await?
        {
            self.wake_watchers();
            return Ok((PushOutcome::Authorized, leased));
        }
        // WeChat waits for this: it goes before the issuing work's transactions.
        let mut tx = self.db.begin_write_first().await?;
        let key = OrderKey { unit_appid: push.unit_appid.to_owned(), order_id: push.order_id.to_owned() };
        let outcome = match push.authorized {
            // The usual push, the payer authorizing a waiting order under the ids it was
            // created with, is applied without reading first; any other is told apart by reading.
            true if authorize(&mut tx, &key, &PayerAuthorized::pushed(push), now).await? => PushOutcome::Authorized,
            _ => apply_other_push(&mut tx, push, now).await?,
        };
        if outcome == PushOutcome::SpAppIdMismatch {
            tx.rollback().await?;
            return Ok((outcome, None));
        }
        // Recorded last, with its outcome: a duplicate (WeChat's retry or a replay) finds its
        // key taken and the transaction, with what the push changed, is rolled back.
        let inserted = sqlx::query(AssertSqlSafe(format!(
            "{INSERT_PUSH_EVENT} VALUES ($1, $2, 'user_authorize_invoice', $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (dedupe_key) DO NOTHING"
        )))
        .bind(push.dedupe_key)
        .bind(push.unit_appid)
        .bind(push.order_id)
        .bind(push.openid)
        .bind(push.authorize_appid)
        .bind(push.create_time)
        .bind(outcome.as_str())
        .bind(push.body)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok((PushOutcome::Duplicate, None));
        }
        tx.commit().await?;
        self.wake_watchers();
        Ok((outcome, None))
    }

    /// The usual push (the payer authorizing a waiting order under the ids it was created
    /// with) in one round trip: the order authorized, its job queued and the push recorded;
    /// with `lease`, the job queued leased and the authorization and its PDF read for its
    /// delivery (Some(None) without). None when nothing was written: the order is not waiting
    /// under those ids, or the push was recorded before (its key is taken); the caller then
    /// tells the case apart.
    async fn record_authorizing_push(
        &self,
        push: &PushRow<'_>,
        now: i64,
        lease: Option<&JobLease<'_>>,
    ) -> Result<Option<Option<ToDeliver>>, Error> {
        let authorize = authorize_sql().0;
        // The push's row, `$9` ... `$12` after the authorizing update's arguments.
        let push_row = "SELECT $9, $1, 'user_authorize_invoice', $2, $3, $8, $10, $11, $12, $6";
        let queue_job =
            |from: &str| QUEUE_JOB.replace("{row}", &format!("SELECT $1, $2, 'issue', $6, $6, $13, $14 {from}"));
        let statements = match (self.db.backend(), lease) {
            // Each statement runs only if the one before it changed a row.
            (Backend::Sqlite, None) => vec![
                authorize,
                queue_job("WHERE changes() = 1"),
                format!("{INSERT_PUSH_EVENT} {push_row} WHERE changes() = 1 RETURNING 1"),
            ],
            // The authorization read after the update, in the same transaction.
            (Backend::Sqlite, Some(_)) => vec![
                authorize,
                queue_job("WHERE changes() = 1"),
                format!("{INSERT_PUSH_EVENT} {push_row} WHERE changes() = 1"),
                AUTHORIZATION_PDF.beside_sql(
                    &format!("{AUTHORIZATION_BY_KEY} AND changes() = 1"),
                    &AUTHORIZATION_PDF.at_most_one_chunk(),
                ),
            ],
            (Backend::Postgres, None) => vec![format!(
                "WITH authorized AS ({authorize} RETURNING 1), queued AS ({})
                 {INSERT_PUSH_EVENT} {push_row} FROM authorized RETURNING 1",
                queue_job("FROM authorized"),
            )],
            // The statements of a WITH see the tables as they were before it: the authorization
            // is the update's own row.
            (Backend::Postgres, Some(_)) => vec![format!(
                "WITH authorized AS ({authorize} RETURNING {}), queued AS ({}),
                    pushed AS ({INSERT_PUSH_EVENT} {push_row} FROM authorized RETURNING 1)
                 {}",
                auth_columns!(),
                queue_job("FROM authorized"),
                AUTHORIZATION_PDF.beside_sql(
                    "SELECT * FROM authorized WHERE EXISTS (SELECT 1 FROM pushed)",
                    &AUTHORIZATION_PDF.at_most_one_chunk()
                ),
            )],
        };
        let payer = PayerAuthorized::pushed(push);
        let bind = |query: Statement| {
            bind_authorize(query, push.unit_appid, push.order_id, &payer, now)
                .bind(push.dedupe_key)
                .bind(push.create_time)
                .bind(PushOutcome::Authorized.as_str())
                .bind(push.body)
                .bind(lease.map(|lease| lease.holder))
                .bind(lease.map_or(0, |lease| lease.until))
        };
        // WeChat waits for this: it goes before the issuing work's transactions.
        let rows = match self.db.write_together_first(statements, bind).await {
            Ok(rows) => rows,
            // Recorded before: the whole unit was undone.
            Err(Error::Database(error)) if error.is_unique_violation() => return Ok(None),
            Err(error) => return Err(error),
        };
        if lease.is_none() || rows.is_empty() {
            return Ok((!rows.is_empty()).then_some(None));
        }
        match AUTHORIZATION_PDF.assemble_beside(rows, auth_from_row) {
            Ok(read) => Ok(read.map(Some)),
            // Written and committed: the push is acknowledged, and its job is retried after its
            // lease, as a claimed job whose read fails is.
            Err(error) => {
                tracing::warn!(order_id = push.order_id, %error, "cannot read a pushed order for its delivery; retried after its lease");
                Ok(Some(None))
            }
        }
    }

    /// getauthdata said "auth success": authorized, and the job queued. False if the
    /// authorization was already past waiting for the payer.
    pub async fn authorize_by_sync(
        &self,
        key: &OrderKey,
        auth_time: i64,
        invoice_status: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let _span = storage_span("authorize_by_sync");
        let mut tx = self.db.begin_write().await?;
        let payer = PayerAuthorized {
            openid: None,
            authorize_time: auth_time,
            invoice_status: Some(invoice_status),
            s_pappid: None,
            authorized_appid: None,
        };
        let changed = authorize(&mut tx, key, &payer, now).await?;
        tx.commit().await?;
        self.wake_watchers();
        Ok(changed)
    }

    /// Records getauthdata's answer on an authorization that stays as it is.
    pub async fn record_sync(&self, key: &OrderKey, invoice_status: Option<&str>, now: i64) -> Result<(), Error> {
        let _span = storage_span("record_sync");
        sqlx::query(
            "UPDATE payer_authorization SET wechat_invoice_status = COALESCE($3, wechat_invoice_status), last_sync_at = $4
             WHERE unit_appid = $1 AND order_id = $2",
        )
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(invoice_status)
        .bind(now)
        .execute(&mut *self.db.write().await?)
        .await?;
        Ok(())
    }

    /// Applies `event` to an authorization; false if its state does not allow it.
    pub async fn transition(&self, key: &OrderKey, event: AuthEvent, now: i64) -> Result<bool, Error> {
        let _span = storage_span("transition");
        let done = sqlx::query(event_sql(
            "UPDATE payer_authorization SET state = '{to}', updated_at = $3
             WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
            event,
        ))
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(now)
        .execute(&mut *self.db.write().await?)
        .await?;
        self.wake_watchers();
        Ok(done.rows_affected() == 1)
    }

    /// Pending authorizations due for a check with WeChat, claimed by stamping last_sync_at.
    pub async fn claim_for_sync(&self, now: i64, older_than: i64, limit: i64) -> Result<Vec<OrderKey>, Error> {
        let sql = self.db.sql(
            "UPDATE payer_authorization SET last_sync_at = $1 WHERE (unit_appid, order_id) IN (
                SELECT unit_appid, order_id FROM payer_authorization
                WHERE state = 'pending' AND (created_at <= $2 OR auth_url_expires_at <= $1) AND last_sync_at <= $2
                ORDER BY last_sync_at LIMIT $3)
             RETURNING unit_appid, order_id",
            "UPDATE payer_authorization SET last_sync_at = $1 WHERE (unit_appid, order_id) IN (
                SELECT unit_appid, order_id FROM payer_authorization
                WHERE state = 'pending' AND (created_at <= $2 OR auth_url_expires_at <= $1) AND last_sync_at <= $2
                ORDER BY last_sync_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING unit_appid, order_id",
        );
        sqlx::query(sql)
            .bind(now)
            .bind(older_than)
            .bind(limit)
            .fetch_all(&mut *self.db.write().await?)
            .await?
            .iter()
            .map(|row| Ok(OrderKey { unit_appid: row.try_get(0)?, order_id: row.try_get(1)? }))
            .collect()
    }

    /// Rejected by the unit: final; any queued job is dropped.
    pub async fn reject(&self, key: &OrderKey, reason: &str, now: i64) -> Result<bool, Error> {
        let _span = storage_span("reject");
        let mut tx = self.db.begin_write().await?;
        let event = AuthEvent::UnitRejected;
        let done = sqlx::query(event_sql(
            "UPDATE payer_authorization SET state = '{to}', reject_reason = $3, updated_at = $4
             WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
            event,
        ))
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE unit_appid = $1 AND order_id = $2")
            .bind(&key.unit_appid)
            .bind(&key.order_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.wake_watchers();
        Ok(done.rows_affected() == 1)
    }

    /// RetryIssue: a failed issue is queued again.
    pub async fn retry_issue(&self, key: &OrderKey, now: i64) -> Result<bool, Error> {
        let _span = storage_span("retry_issue");
        let mut tx = self.db.begin_write().await?;
        let event = AuthEvent::RetryIssue;
        let done = sqlx::query(event_sql(
            "UPDATE payer_authorization SET state = '{to}', failure_reason = NULL, failure_message = NULL, failure_errcode = 0,
                failure_errmsg = NULL, failure_rid = NULL, failed_at = 0, updated_at = $3
             WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
            event,
        ))
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(now)
                .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            queue_job(&mut tx, key, now).await?;
        }
        tx.commit().await?;
        self.wake_watchers();
        Ok(done.rows_affected() == 1)
    }

    /// Whether another replica (or task) is delivering the order's job right now.
    pub async fn job_in_flight(&self, key: &OrderKey, now: i64) -> Result<bool, Error> {
        let sql = "SELECT 1 FROM outbox WHERE unit_appid = $1 AND order_id = $2 AND lease_until > $3";
        let row = self.db.read_row(sql, |query| query.bind(&key.unit_appid).bind(&key.order_id).bind(now)).await?;
        Ok(row.is_some())
    }

    /// Authorizations per state, for metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, Error> {
        sqlx::query("SELECT state, COUNT(*) FROM payer_authorization GROUP BY state")
            .fetch_all(&mut *self.db.read().await?)
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Jobs waiting, and the age in ms of the oldest.
    pub async fn outbox_depth(&self, now: i64) -> Result<(i64, i64), Error> {
        let row = sqlx::query("SELECT COUNT(*), COALESCE(MIN(created_at), 0) FROM outbox")
            .fetch_one(&mut *self.db.read().await?)
            .await?;
        let count: i64 = row.try_get(0)?;
        let oldest: i64 = row.try_get(1)?;
        Ok((count, if count == 0 { 0 } else { now - oldest }))
    }

    // --- outbox ---

    /// Leases due jobs.
    /// Frees the outbox leases `holder` took before a restart (it holds none yet); returns how
    /// many.
    pub async fn release_leases(&self, holder: &str) -> Result<u64, Error> {
        let done = sqlx::query("UPDATE outbox SET lease_holder = NULL, lease_until = 0 WHERE lease_holder = $1")
            .bind(holder)
            .execute(&mut *self.db.write().await?)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn claim_jobs(&self, holder: &str, now: i64, until: i64, limit: i64) -> Result<Vec<Job>, Error> {
        let sql = self.db.sql(
            "UPDATE outbox SET lease_holder = $1, lease_until = $2 WHERE (unit_appid, order_id) IN (
                SELECT unit_appid, order_id FROM outbox WHERE next_attempt_at <= $3 AND lease_until <= $3
                ORDER BY next_attempt_at LIMIT $4)
             RETURNING unit_appid, order_id, phase, attempts",
            "UPDATE outbox SET lease_holder = $1, lease_until = $2 WHERE (unit_appid, order_id) IN (
                SELECT unit_appid, order_id FROM outbox WHERE next_attempt_at <= $3 AND lease_until <= $3
                ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING unit_appid, order_id, phase, attempts",
        );
        // A write unit of one statement: committed with others waiting at the writer.
        let bind = |query: Statement| query.bind(holder).bind(until).bind(now).bind(limit);
        self.db
            .write_together(vec![sql.to_owned()], bind, None)
            .await?
            .iter()
            .map(|row| {
                let phase: String = row.try_get(2)?;
                Ok(Job {
                    key: OrderKey { unit_appid: row.try_get(0)?, order_id: row.try_get(1)? },
                    phase: JobPhase::parse(&phase).ok_or_else(|| corrupt("phase", &phase))?,
                    attempts: row.try_get(3)?,
                })
            })
            .collect()
    }

    /// The bureau answered with a final bill: the authorization records it and the job ends.
    /// Only while this replica holds the job's lease: if it was lost (or the order rejected
    /// meanwhile), nothing is written and whoever holds it decides.
    pub async fn finish_job(&self, key: &OrderKey, holder: &str, outcome: &JobOutcome, now: i64) -> Result<(), Error> {
        let _span = storage_span("finish_job");
        match outcome {
            JobOutcome::Issued { card_id, card_code, openid } => {
                self.finish_issued(key, holder, card_id.as_deref(), card_code.as_deref(), openid.as_deref(), now)
                    .await?
            }
            JobOutcome::Failed(failure) => {
                let mut tx = self.db.begin_write().await?;
                let deleted = sqlx::query(DELETE_LEASED_JOB)
                    .bind(&key.unit_appid)
                    .bind(&key.order_id)
                    .bind(holder)
                    .execute(&mut *tx)
                    .await?;
                if deleted.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(());
                }
                set_failure(&mut tx, key, AuthEvent::BureauFailed, failure, now).await?;
                tx.commit().await?;
            }
        }
        self.wake_watchers();
        Ok(())
    }

    /// An issued bill's job ended in one round trip: the job deleted, and the authorization
    /// issued, only if `holder` holds the lease.
    async fn finish_issued(
        &self,
        key: &OrderKey,
        holder: &str,
        card_id: Option<&str>,
        card_code: Option<&str>,
        openid: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        let issue = event_sql(
            "UPDATE payer_authorization SET state = '{to}', card_id = $4, card_code = $5, openid = COALESCE($6, openid),
                issue_attempts = issue_attempts + 1, failure_reason = NULL, failure_message = NULL, failure_errcode = 0,
                failure_errmsg = NULL, failure_rid = NULL, failed_at = 0, updated_at = $7
             WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
            AuthEvent::BureauIssued,
        )
        .0;
        let statements = match self.db.backend() {
            // The one writer: nothing changes between the two statements.
            Backend::Sqlite => vec![
                format!(
                    "{issue} AND EXISTS (SELECT 1 FROM outbox WHERE unit_appid = $1 AND order_id = $2 AND lease_holder = $3)"
                ),
                DELETE_LEASED_JOB.to_owned(),
            ],
            // The delete locks the job's row, so a lease taken over meanwhile is seen.
            Backend::Postgres => {
                vec![format!(
                    "WITH deleted AS ({DELETE_LEASED_JOB} RETURNING 1) {issue} AND EXISTS (SELECT 1 FROM deleted)"
                )]
            }
        };
        let bind = |query: Statement| {
            query
                .bind(&key.unit_appid)
                .bind(&key.order_id)
                .bind(holder)
                .bind(card_id)
                .bind(card_code)
                .bind(openid)
                .bind(now)
        };
        self.db.write_together(statements, bind, None).await.map(drop)
    }

    /// The bureau accepted the bill and is issuing it: poll later.
    pub async fn job_in_progress(&self, key: &OrderKey, holder: &str, next_at: i64, now: i64) -> Result<(), Error> {
        let _span = storage_span("job_in_progress");
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE outbox SET phase = 'poll', next_attempt_at = $4, lease_holder = NULL, lease_until = 0, last_error = NULL
             WHERE unit_appid = $1 AND order_id = $2 AND lease_holder = $3",
        )
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(holder)
        .bind(next_at)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 1 {
            let event = AuthEvent::BureauIssuing;
            sqlx::query(event_sql(
                "UPDATE payer_authorization SET state = '{to}', issue_attempts = issue_attempts + 1, updated_at = $3
                 WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
                event,
            ))
            .bind(&key.unit_appid)
            .bind(&key.order_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.wake_watchers();
        Ok(())
    }

    /// The bureau could not be reached (or was busy): try again at `next_at`. The error is
    /// shown on the authorization while it waits.
    pub async fn retry_job(
        &self,
        key: &OrderKey,
        holder: &str,
        next_at: i64,
        failure: &Failure,
        now: i64,
    ) -> Result<(), Error> {
        let _span = storage_span("retry_job");
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $4, next_attempt_at = $5, lease_holder = NULL, lease_until = 0
             WHERE unit_appid = $1 AND order_id = $2 AND lease_holder = $3",
        )
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(holder)
        .bind(&failure.message)
        .bind(next_at)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 1 {
            // The bureau still has it: the error is shown while the state stays.
            set_failure(&mut tx, key, AuthEvent::BureauIssuing, failure, now).await?;
        }
        tx.commit().await?;
        self.wake_watchers();
        Ok(())
    }

    /// Gives a job back untouched (shutdown).
    pub async fn release_job(&self, key: &OrderKey, holder: &str) -> Result<(), Error> {
        let _span = storage_span("release_job");
        sqlx::query("UPDATE outbox SET lease_holder = NULL, lease_until = 0 WHERE unit_appid = $1 AND order_id = $2 AND lease_holder = $3")
            .bind(&key.unit_appid)
            .bind(&key.order_id)
            .bind(holder)
            .execute(&mut *self.db.write().await?)
            .await?;
        Ok(())
    }
}

/// The final answer for a job.
#[derive(Clone, Debug)]
pub enum JobOutcome {
    Issued { card_id: Option<String>, card_code: Option<String>, openid: Option<String> },
    Failed(Failure),
}

/// The payer authorized: what WeChat said about it, by a push or by getauthdata.
struct PayerAuthorized<'a> {
    openid: Option<&'a str>,
    /// Unix milliseconds.
    authorize_time: i64,
    invoice_status: Option<&'a str>,
    /// The ids the order must have been created under (a push's; None: not checked).
    s_pappid: Option<&'a str>,
    authorized_appid: Option<&'a str>,
}

impl<'a> PayerAuthorized<'a> {
    fn pushed(push: &PushRow<'a>) -> Self {
        PayerAuthorized {
            openid: Some(push.openid),
            authorize_time: push.create_time * 1000,
            invoice_status: None,
            s_pappid: push.s_pappid,
            authorized_appid: push.authorize_appid,
        }
    }
}

/// Marks a waiting order authorized (when its ids are the ones expected) and queues its job.
/// False if nothing matched: no such order, other ids, or no longer waiting for the payer.
async fn authorize(tx: &mut WriteTx, key: &OrderKey, payer: &PayerAuthorized<'_>, now: i64) -> Result<bool, Error> {
    let done = bind_authorize(sqlx::query(authorize_sql()), &key.unit_appid, &key.order_id, payer, now)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    queue_job(tx, key, now).await?;
    Ok(true)
}

/// A push that did not simply authorize a waiting order: told apart by reading the order, in
/// the order of precedence (an s_pappid of another bureau first: nothing is written then).
async fn apply_other_push(tx: &mut WriteTx, push: &PushRow<'_>, now: i64) -> Result<PushOutcome, Error> {
    let current = sqlx::query(
        "SELECT authorized_appid, s_pappid FROM payer_authorization WHERE unit_appid = $1 AND order_id = $2",
    )
    .bind(push.unit_appid)
    .bind(push.order_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = current else { return Ok(PushOutcome::UnknownOrder) };
    let (authorized_appid, s_pappid): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    if push.s_pappid.is_some_and(|pushed| pushed != s_pappid) {
        return Ok(PushOutcome::SpAppIdMismatch);
    }
    if push.authorize_appid.is_some_and(|pushed| pushed != authorized_appid) {
        return Ok(PushOutcome::AppidMismatch);
    }
    if push.authorized {
        // The ids match, so the authorizing update found the order no longer waiting.
        return Ok(PushOutcome::NoChange);
    }
    let event = AuthEvent::PayerDeclined;
    let declined = sqlx::query(event_sql(
        "UPDATE payer_authorization SET state = '{to}', openid = $3, updated_at = $4
         WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
        event,
    ))
    .bind(push.unit_appid)
    .bind(push.order_id)
    .bind(push.openid)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(if declined.rows_affected() == 1 { PushOutcome::Declined } else { PushOutcome::NoChange })
}

async fn queue_job(tx: &mut WriteTx, key: &OrderKey, now: i64) -> Result<(), Error> {
    sqlx::query(AssertSqlSafe(QUEUE_JOB.replace("{row}", "VALUES ($1, $2, 'issue', $3, $3, NULL, 0)")))
        .bind(&key.unit_appid)
        .bind(&key.order_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records the failure of an issue. The state becomes the event's target (`BureauFailed`:
/// issue_failed) or stays (`BureauIssuing`: the bureau still has it); either way only while
/// the bureau is in charge.
async fn set_failure(
    tx: &mut WriteTx,
    key: &OrderKey,
    event: AuthEvent,
    failure: &Failure,
    now: i64,
) -> Result<(), Error> {
    let state = (event == AuthEvent::BureauFailed).then(|| event.target().as_str());
    sqlx::query(event_sql(
        "UPDATE payer_authorization SET state = COALESCE($3, state), failure_reason = $4, failure_message = $5, failure_errcode = $6,
            failure_errmsg = $7, failure_rid = $8, failed_at = $9, issue_attempts = issue_attempts + 1, updated_at = $9
         WHERE unit_appid = $1 AND order_id = $2 AND state IN ({from})",
        event,
    ))
    .bind(&key.unit_appid)
    .bind(&key.order_id)
    .bind(state)
    .bind(&failure.reason)
    .bind(&failure.message)
    .bind(failure.wechat_errcode)
    .bind(&failure.wechat_errmsg)
    .bind(&failure.wechat_rid)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use fiscalbill_common::db::{Backend, DatabaseConfig, Db, test_support};
    use fiscalbill_common::pdf_store::CHUNK_BYTES;
    use fiscalbill_common::pdf_store::test_support::whole_pdfs_survive_the_move_to_chunks;

    use bytes::Bytes;
    use fiscalbill_common::bill::Failure;
    use fiscalbill_common::bill::test_support::registration_fee;
    use fiscalbill_common::trace::TraceContext;
    use wechat::types::AuthSource;

    use sqlx::Row;

    use super::{
        AUTHORIZATION_PDF, AuthChange, CHANGES_AFTER_POSTGRES, CHANGES_AFTER_SQLITE, ChangePosition, JobLease,
        JobOutcome, MIGRATIONS, PRUNE_CHANGES_SQLITE, PushOutcome, PushRow, Store,
    };
    use crate::domain::{AuthState, Authorization, OrderKey};

    #[tokio::test]
    async fn pdfs_stored_whole_survive_the_move_to_chunks() {
        whole_pdfs_survive_the_move_to_chunks(MIGRATIONS, "payer_authorization_pdf", AUTHORIZATION_PDF).await;
    }

    fn authorization(order_id: &str, billing_code: &str) -> Authorization {
        Authorization {
            key: OrderKey { unit_appid: "wxu".into(), order_id: order_id.into() },
            authorized_appid: "wxu".into(),
            source: AuthSource::Web,
            money: 100,
            bill: registration_fee(billing_code),
            pdf_sha256: None,
            redirect_url: None,
            request_id: None,
            trace: TraceContext::root(),
            s_pappid: "wxsp".into(),
            auth_url: "https://mp.weixin.qq.com/bizmall/authinvoice?x".into(),
            auth_url_expires_at: 0,
            state: AuthState::Pending,
            openid: None,
            authorize_time: 0,
            card_id: None,
            card_code: None,
            failure: None,
            issue_attempts: 0,
            reject_reason: None,
            wechat_invoice_status: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    /// Stored as two chunks and a part.
    fn pdf_of_three_chunks() -> Bytes {
        Bytes::from((0..600_000).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
    }

    /// The dispatcher's read: the authorization and its PDF (several chunks) in one statement,
    /// or without the PDF when not asked; an order stored without a PDF and an unknown order.
    #[tokio::test]
    async fn an_authorization_is_read_with_its_pdf_in_one_statement() {
        for config in test_support::both() {
            let db = Db::connect_until_ready(&config, "collection", &[MIGRATIONS]).await;
            let store = Store::new(db.clone());
            let pdf = pdf_of_three_chunks();
            let with_pdf = authorization("o-1", "0000000001");
            store.insert_authorization(&with_pdf, Some(&pdf)).await.unwrap();
            let without_pdf = authorization("o-2", "0000000002");
            store.insert_authorization(&without_pdf, None).await.unwrap();

            let (read, read_pdf) = store.authorization_to_deliver(&with_pdf.key, true).await.unwrap().unwrap();
            assert_eq!((read.key, read.bill), (with_pdf.key.clone(), with_pdf.bill.clone()), "{}", config.url);
            assert_eq!(read_pdf.as_deref(), Some(&pdf[..]), "{}", config.url);
            let (read, read_pdf) = store.authorization_to_deliver(&with_pdf.key, false).await.unwrap().unwrap();
            assert_eq!((read.key, read_pdf), (with_pdf.key.clone(), None), "{}", config.url);
            let (read, read_pdf) = store.authorization_to_deliver(&without_pdf.key, true).await.unwrap().unwrap();
            assert_eq!((read.key, read_pdf), (without_pdf.key.clone(), None), "{}", config.url);
            let unknown = OrderKey { unit_appid: "wxu".into(), order_id: "o-3".into() };
            assert!(store.authorization_to_deliver(&unknown, true).await.unwrap().is_none(), "{}", config.url);
            db.close().await;
        }
    }

    fn push<'a>(dedupe_key: &'a str, order_id: &'a str, authorized: bool) -> PushRow<'a> {
        PushRow {
            dedupe_key,
            unit_appid: "wxu",
            order_id,
            openid: "o-payer",
            authorize_appid: Some("wxu"),
            s_pappid: Some("wxsp"),
            authorized,
            create_time: 1_760_000_000,
            body: "<xml/>",
        }
    }

    /// Every outcome of a push, on each backend: the usual one applied without a read first,
    /// the others told apart as before (a foreign s_pappid writes nothing, not even the push).
    #[tokio::test]
    async fn each_kind_of_push_has_its_outcome() {
        for config in test_support::both() {
            let db = Db::connect_until_ready(&config, "collection", &[MIGRATIONS]).await;
            let store = Store::new(db.clone());
            for (order_id, code) in [("o-1", "0000000001"), ("o-2", "0000000002"), ("o-3", "0000000003")] {
                store.insert_authorization(&authorization(order_id, code), None).await.unwrap();
            }
            let state = |order_id: &'static str| {
                let store = store.clone();
                async move {
                    let key = OrderKey { unit_appid: "wxu".into(), order_id: order_id.into() };
                    store.authorization(&key).await.unwrap().unwrap().state
                }
            };
            let foreign = PushRow { s_pappid: Some("wxother"), ..push("k-0", "o-1", true) };
            assert_eq!(
                store.record_push(&foreign, 5, None).await.unwrap().0,
                PushOutcome::SpAppIdMismatch,
                "{}",
                config.url
            );
            assert_eq!(state("o-1").await, AuthState::Pending);
            let other_appid = PushRow { authorize_appid: Some("wxapp"), ..push("k-1", "o-1", true) };
            assert_eq!(store.record_push(&other_appid, 5, None).await.unwrap().0, PushOutcome::AppidMismatch);
            assert_eq!(state("o-1").await, AuthState::Pending);
            // Its key again, now with the ids expected: recorded before, so it changes nothing
            // (the one-round-trip attempt is undone whole).
            assert_eq!(store.record_push(&push("k-1", "o-1", true), 5, None).await.unwrap().0, PushOutcome::Duplicate);
            assert_eq!(state("o-1").await, AuthState::Pending);
            assert_eq!(jobs(&db, "o-1").await, 0, "{}", config.url);

            assert_eq!(store.record_push(&push("k-2", "o-1", true), 5, None).await.unwrap().0, PushOutcome::Authorized);
            assert_eq!(state("o-1").await, AuthState::Authorized);
            assert_eq!(jobs(&db, "o-1").await, 1, "its IssueBill job queued");
            assert_eq!(store.record_push(&push("k-2", "o-1", true), 6, None).await.unwrap().0, PushOutcome::Duplicate);
            assert_eq!(store.record_push(&push("k-3", "o-1", true), 6, None).await.unwrap().0, PushOutcome::NoChange);
            assert_eq!(
                store.record_push(&push("k-4", "o-9", true), 6, None).await.unwrap().0,
                PushOutcome::UnknownOrder
            );

            assert_eq!(store.record_push(&push("k-5", "o-2", false), 7, None).await.unwrap().0, PushOutcome::Declined);
            assert_eq!(state("o-2").await, AuthState::Declined);
            assert_eq!(store.record_push(&push("k-6", "o-2", false), 7, None).await.unwrap().0, PushOutcome::NoChange);
            // A push without the optional ids is checked against nothing it lacks.
            let bare = PushRow { authorize_appid: None, s_pappid: None, ..push("k-7", "o-3", true) };
            assert_eq!(store.record_push(&bare, 8, None).await.unwrap().0, PushOutcome::Authorized);

            // Recorded: every push but the refused one, each once.
            let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM push_event")
                .fetch_one(&mut *db.read().await.unwrap())
                .await
                .unwrap();
            assert_eq!(recorded, 7, "{}", config.url);
            db.close().await;
        }
    }

    async fn jobs(db: &Db, order_id: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&mut *db.read().await.unwrap())
            .await
            .unwrap()
    }

    /// The usual push with a lease queues its job leased to that replica, and reads what its
    /// delivery sends (the authorization as the push left it, its PDF whole): no claim takes
    /// the job until the lease ends, and its holder can finish it; other pushes lease nothing.
    /// On each backend.
    #[tokio::test]
    async fn a_push_with_a_lease_queues_its_job_leased() {
        for config in test_support::both() {
            let db = Db::connect_until_ready(&config, "collection", &[MIGRATIONS]).await;
            let store = Store::new(db.clone());
            let pdf = Bytes::from((0..CHUNK_BYTES).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            store.insert_authorization(&authorization("o-1", "0000000001"), Some(&pdf)).await.unwrap();
            store.insert_authorization(&authorization("o-2", "0000000002"), None).await.unwrap();
            let lease = || Some(JobLease { holder: "replica-a", until: 1_000 });
            let (outcome, leased) = store.record_push(&push("k-1", "o-1", true), 5, lease()).await.unwrap();
            assert_eq!(outcome, PushOutcome::Authorized, "{}", config.url);
            let (read, read_pdf) = leased.unwrap_or_else(|| panic!("{}: the job was not leased", config.url));
            assert_eq!((read.key.order_id.as_str(), read.state), ("o-1", AuthState::Authorized), "{}", config.url);
            assert_eq!((read.openid.as_deref(), read.updated_at), (Some("o-payer"), 5), "{}", config.url);
            assert!(read_pdf == Some(pdf.clone()), "{}: the PDF read is not the one stored", config.url);
            // A PDF of more than one chunk is left to the delivery's own read.
            store
                .insert_authorization(&authorization("o-5", "0000000005"), Some(&pdf_of_three_chunks()))
                .await
                .unwrap();
            let (outcome, leased) = store.record_push(&push("k-5", "o-5", true), 5, lease()).await.unwrap();
            let (read, read_pdf) = leased.unwrap_or_else(|| panic!("{}: the job was not leased", config.url));
            assert_eq!((outcome, read.key.order_id.as_str(), read_pdf), (PushOutcome::Authorized, "o-5", None));
            let (_, read_pdf) = store.authorization_to_deliver(&read.key, true).await.unwrap().unwrap();
            assert!(read_pdf == Some(pdf_of_three_chunks()), "{}: the delivery reads it whole", config.url);
            let issued = JobOutcome::Issued { card_id: Some("card-5".into()), card_code: None, openid: None };
            store.finish_job(&read.key, "replica-a", &issued, 6).await.unwrap();
            // Any other push leases nothing, even when asked to.
            let (outcome, leased) = store.record_push(&push("k-1", "o-1", true), 6, lease()).await.unwrap();
            assert_eq!((outcome, leased.is_some()), (PushOutcome::Duplicate, false));
            let (outcome, leased) = store.record_push(&push("k-2", "o-2", false), 6, lease()).await.unwrap();
            assert_eq!((outcome, leased.is_some()), (PushOutcome::Declined, false));

            assert!(store.claim_jobs("replica-b", 10, 60_000, 10).await.unwrap().is_empty(), "{}", config.url);
            let key = OrderKey { unit_appid: "wxu".into(), order_id: "o-1".into() };
            let issued =
                JobOutcome::Issued { card_id: Some("card-1".into()), card_code: Some("code-1".into()), openid: None };
            store.finish_job(&key, "replica-a", &issued, 11).await.unwrap();
            assert_eq!(store.authorization(&key).await.unwrap().unwrap().state, AuthState::Issued, "{}", config.url);
            assert_eq!(jobs(&db, "o-1").await, 0);

            // A lease that ran out: the job is anyone's.
            store.insert_authorization(&authorization("o-3", "0000000003"), None).await.unwrap();
            store.record_push(&push("k-3", "o-3", true), 20, lease()).await.unwrap();
            assert!(store.claim_jobs("replica-b", 999, 60_000, 10).await.unwrap().is_empty());
            let claimed = store.claim_jobs("replica-b", 1_000, 60_000, 10).await.unwrap();
            assert_eq!(claimed.len(), 1, "{}", config.url);
            assert_eq!(claimed[0].key.order_id, "o-3");

            // An order that cannot be read back for its delivery (its bill is not JSON): the
            // push is still recorded and acknowledged, and its job queued leased, to be retried
            // after the lease as a claimed job whose read fails is.
            store.insert_authorization(&authorization("o-4", "0000000004"), None).await.unwrap();
            sqlx::query("UPDATE payer_authorization SET bill = 'not json' WHERE order_id = 'o-4'")
                .execute(&mut *db.write().await.unwrap())
                .await
                .unwrap();
            let lease_to_2_000 = Some(JobLease { holder: "replica-a", until: 2_000 });
            let (outcome, leased) = store.record_push(&push("k-4", "o-4", true), 1_500, lease_to_2_000).await.unwrap();
            assert_eq!((outcome, leased.is_some()), (PushOutcome::Authorized, false), "{}", config.url);
            assert_eq!(jobs(&db, "o-4").await, 1, "{}", config.url);
            assert!(store.claim_jobs("replica-b", 1_999, 60_000, 10).await.unwrap().is_empty(), "{}", config.url);
            db.close().await;
        }
    }

    /// A job ends only by the hand of its lease's holder: another's answer (its lease lost)
    /// writes nothing, on each backend.
    #[tokio::test]
    async fn only_the_lease_holder_finishes_a_job() {
        for config in test_support::both() {
            let db = Db::connect_until_ready(&config, "collection", &[MIGRATIONS]).await;
            let store = Store::new(db.clone());
            store.insert_authorization(&authorization("o-1", "0000000001"), None).await.unwrap();
            assert_eq!(store.record_push(&push("k-1", "o-1", true), 5, None).await.unwrap().0, PushOutcome::Authorized);
            let claimed = store.claim_jobs("replica-a", 10, 60_000, 10).await.unwrap();
            assert_eq!(claimed.len(), 1);
            let key = claimed[0].key.clone();
            let issued = JobOutcome::Issued {
                card_id: Some("card-1".into()),
                card_code: Some("code-1".into()),
                openid: Some("openid-2".into()),
            };
            let failed = JobOutcome::Failed(Failure {
                reason: "BUREAU_REJECTED".into(),
                message: "refused".into(),
                wechat_errcode: 0,
                wechat_errmsg: String::new(),
                wechat_rid: String::new(),
                at: 11,
            });
            for outcome in [&issued, &failed] {
                store.finish_job(&key, "replica-b", outcome, 11).await.unwrap();
                let kept = store.authorization(&key).await.unwrap().unwrap();
                assert_eq!((kept.state, kept.card_code), (AuthState::Authorized, None), "{}", config.url);
                assert_eq!(jobs(&db, "o-1").await, 1);
            }
            store.finish_job(&key, "replica-a", &issued, 12).await.unwrap();
            let done = store.authorization(&key).await.unwrap().unwrap();
            assert_eq!(done.state, AuthState::Issued, "{}", config.url);
            assert_eq!((done.card_id.as_deref(), done.card_code.as_deref()), (Some("card-1"), Some("code-1")));
            assert_eq!((done.openid.as_deref(), done.issue_attempts), (Some("openid-2"), 1));
            assert_eq!(jobs(&db, "o-1").await, 0, "{}", config.url);
            db.close().await;
        }
    }

    fn orders(changes: &[(AuthChange, ChangePosition)]) -> Vec<&str> {
        changes.iter().map(|(change, _)| change.key.order_id.as_str()).collect()
    }

    /// The changes after `from` once none waits behind a transaction still running: on
    /// PostgreSQL the tests running beside this one share the database, whose visibility
    /// horizon is the whole server's (a stream reads again soon, as this does).
    async fn settled_changes(store: &Store, from: ChangePosition) -> Vec<(AuthChange, ChangePosition)> {
        for _ in 0..200 {
            let read = store.changes_after("wxu", from, 10).await.unwrap();
            if !read.held_back {
                return read.changes;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("changes still held back after 2 s");
    }

    async fn the_change_log_is_pruned_and_says_where(config: DatabaseConfig) {
        let db = Db::connect_until_ready(&config, "collection", &[MIGRATIONS]).await;
        let store = Store::new(db.clone());
        for (order_id, changed_at) in [("o-1", 1_000_i64), ("o-2", 2_000), ("o-3", 3_000)] {
            sqlx::query(
                "INSERT INTO authorization_change (unit_appid, order_id, state, changed_at) VALUES ('wxu', $1, 'pending', $2)",
            )
            .bind(order_id)
            .bind(changed_at)
            .execute(&mut *db.write().await.unwrap())
            .await
            .unwrap();
        }
        let start = ChangePosition { txid: 0, seq: 0 };
        let all = settled_changes(&store, start).await;
        assert_eq!(orders(&all), ["o-1", "o-2", "o-3"]);
        assert!(all.iter().all(|(_, pruned)| *pruned == start), "nothing deleted yet");

        // One at a time, then the rest older than 2.5 s: o-1 and o-2.
        assert_eq!(store.prune_changes(2_500, 1).await.unwrap(), 1);
        assert_eq!(store.pruned_through().await.unwrap(), all[0].0.position);
        assert_eq!(store.prune_changes(2_500, 10).await.unwrap(), 1);
        assert_eq!(store.prune_changes(2_500, 10).await.unwrap(), 0);
        let pruned = store.pruned_through().await.unwrap();
        assert_eq!(pruned, all[1].0.position);

        // A reader from before the deleted part learns it with the rows it reads; one after it
        // reads on.
        let rest = settled_changes(&store, start).await;
        assert_eq!(orders(&rest), ["o-3"]);
        assert!(rest[0].1 > start);
        let after = settled_changes(&store, all[1].0.position).await;
        assert_eq!(orders(&after), ["o-3"]);
        assert!(after[0].1 <= all[1].0.position);
        db.close().await;
    }

    #[tokio::test]
    async fn the_change_log_is_pruned_and_says_where_on_sqlite() {
        the_change_log_is_pruned_and_says_where(test_support::sqlite()).await;
    }

    #[tokio::test]
    async fn the_change_log_is_pruned_and_says_where_on_postgres() {
        the_change_log_is_pruned_and_says_where(test_support::postgres()).await;
    }

    /// A read of changes after a position starts there in the index on (unit_appid, txid, seq),
    /// on each backend, instead of reading the unit's whole retained log up to it (a week of
    /// changes by default, read again at every wake of every stream); on SQLite, pruning deletes
    /// a range of rowids instead of scanning the log while it holds the writer.
    #[tokio::test]
    async fn a_read_of_changes_starts_at_its_position() {
        for config in test_support::both() {
            let db = Db::connect_until_ready(&config, "collection", &[MIGRATIONS]).await;
            let mut conn = db.read().await.unwrap();
            let (explain, column, expected) = match db.backend() {
                Backend::Sqlite => (
                    format!("EXPLAIN QUERY PLAN {CHANGES_AFTER_SQLITE}"),
                    "detail",
                    "(unit_appid=? AND txid=? AND seq>?)",
                ),
                Backend::Postgres => {
                    // The test's table is small: without this the planner would rather scan it.
                    sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await.unwrap();
                    (format!("EXPLAIN {CHANGES_AFTER_POSTGRES}"), "QUERY PLAN", "(ROW(txid, seq) > ROW(")
                }
            };
            let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(explain))
                .bind("wxu")
                .bind(0_i64)
                .bind(5_i64)
                .bind(1_i64)
                .bind(10_i64)
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get::<String, _>(column).unwrap())
                .collect();
            assert!(plan.iter().any(|line| line.contains(expected)), "{}: {plan:#?}", config.url);
            if db.backend() == Backend::Sqlite {
                let explain = format!("EXPLAIN QUERY PLAN {PRUNE_CHANGES_SQLITE}");
                let plan =
                    sqlx::query(sqlx::AssertSqlSafe(explain)).bind(0_i64).bind(5_i64).fetch_all(&mut *conn).await;
                let detail: String = plan.unwrap()[0].try_get("detail").unwrap();
                assert!(detail.contains("INTEGER PRIMARY KEY (rowid<?)"), "pruning scans: {detail}");
            }
            drop(conn);
            db.close().await;
        }
    }

    /// On PostgreSQL a change committed while an older transaction still runs waits behind it,
    /// and the read says so (the stream then looks again soon instead of at its next poll).
    #[tokio::test]
    async fn a_change_held_back_by_a_running_transaction_is_said_to_be_waiting() {
        let config = test_support::postgres();
        let db = Db::connect_until_ready(&config, "collection", &[MIGRATIONS]).await;
        let store = Store::new(db.clone());
        let start = ChangePosition { txid: 0, seq: 0 };
        // Another session's transaction, begun (with a transaction id) before the change.
        let mut older = db.begin_write().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()::text").execute(&mut *older).await.unwrap();
        sqlx::query("INSERT INTO authorization_change (unit_appid, order_id, state, changed_at) VALUES ('wxu', 'o-1', 'pending', 1)")
            .execute(&mut *db.write().await.unwrap())
            .await
            .unwrap();
        let read = store.changes_after("wxu", start, 10).await.unwrap();
        assert!(read.changes.is_empty() && read.held_back, "{read:?}");
        let other_unit = store.changes_after("wxv", start, 10).await.unwrap();
        assert!(!other_unit.held_back, "only the unit's own changes count");

        older.rollback().await.unwrap();
        // Read once nothing else holds it back (other tests' transactions may, for a moment).
        assert_eq!(orders(&settled_changes(&store, start).await), ["o-1"]);
        db.close().await;
    }
}
