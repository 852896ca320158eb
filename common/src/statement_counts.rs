//! Counts of the SQL statements, queries and write transactions a process runs, for the metrics
//! (`fiscalbill_db_statements_total{kind}`, `fiscalbill_db_queries_total`,
//! `fiscalbill_db_write_transactions_total`) and so for the benchmark's figures per bill.
//! Statements are counted from sqlx's own per-statement event (target `sqlx::query`), so no
//! statement can be missed by a code path that forgets to count, except on SQLite a write unit's
//! (run by the group-commit thread, or sent as one batch that sqlx reports once, starting with
//! BEGIN), which `Db::write_together` counts, and a short read's (run on the asking thread: no
//! query), which `Db::read_rows` counts. Write transactions are counted where
//! [`crate::db::Db`] and the group-commit thread begin them (a group of units is one). BEGIN,
//! COMMIT, ROLLBACK, SAVEPOINT and RELEASE are not statements here: they are the transactions.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// select, insert, update, delete, with or other.
    pub kind: &'static str,
}

/// The kinds statements are counted by.
const COUNTED_KINDS: [&str; 6] = ["select", "insert", "update", "delete", "with", "other"];

/// Statements run, by their first keyword. Every kind's series exists from the start (at 0), so
/// the metrics' lines do not change with the statements that happen to run first.
pub static STATEMENTS: LazyLock<Family<KindLabel, Counter>> = LazyLock::new(|| {
    let family = Family::<KindLabel, Counter>::default();
    for kind in COUNTED_KINDS {
        let _ = family.get_or_create(&KindLabel { kind });
    }
    family
});

/// Queries sent to the database, each one round trip (to a SQLite connection's own thread, or to
/// PostgreSQL): a batch sent as one query is one, its BEGIN or COMMIT sent alone another (sqlx's
/// BEGIN on PostgreSQL, which has no event, is counted where `Db` begins it); on SQLite a group
/// of write units is one, the hand-off to the group-commit thread. What a service waits for, and
/// what its context switches follow. sqlx's pool pings on PostgreSQL are not queries and are not
/// counted.
pub static QUERIES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Write transactions begun (`Db::begin_write`, `Db::begin_write_first`, `Db::write_together`;
/// on SQLite a group of write units is one).
pub static WRITE_TRANSACTIONS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The tracing layer that counts sqlx's statement events. It enables `sqlx::query` at debug for
/// itself only: the log output keeps its own filter.
pub fn layer<S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>>() -> impl Layer<S> {
    // sqlx reports each statement at DEBUG (its default `log_statements`): nothing finer is
    // enabled, so that no crate's TRACE events are ever built.
    StatementCounter.with_filter(Targets::new().with_target("sqlx::query", tracing::Level::DEBUG))
}

/// Counts one statement sqlx does not report on its own (one of a batch sent as one query).
pub fn count(statement: &str) {
    STATEMENTS.get_or_create(&KindLabel { kind: kind_of(statement) }).inc();
}

struct StatementCounter;

impl<S: Subscriber> Layer<S> for StatementCounter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut summary = Summary(None);
        event.record(&mut summary);
        QUERIES.inc();
        match summary.0.unwrap_or("other") {
            "begin" | "commit" | "rollback" | "savepoint" | "release" => {}
            kind => {
                STATEMENTS.get_or_create(&KindLabel { kind }).inc();
            }
        }
    }
}

/// The statement's kind, from the `summary` field (its first words).
struct Summary(Option<&'static str>);

impl Visit for Summary {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "summary" {
            self.0 = Some(kind_of(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "summary" {
            self.0 = Some(kind_of(&format!("{value:?}")));
        }
    }
}

fn kind_of(summary: &str) -> &'static str {
    let first = summary.trim_start_matches(['"', ' ', '(']).split_whitespace().next().unwrap_or("");
    const KINDS: [&str; 10] =
        ["select", "insert", "update", "delete", "with", "begin", "commit", "rollback", "savepoint", "release"];
    KINDS.into_iter().find(|kind| first.eq_ignore_ascii_case(kind)).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_counted_by_their_first_keyword() {
        assert_eq!(kind_of("SELECT value FROM setting"), "select");
        assert_eq!(kind_of("\"insert INTO bill (unit_appid,\""), "insert");
        assert_eq!(kind_of("WITH due AS (SELECT"), "with");
        assert_eq!(kind_of("PRAGMA journal_mode = WAL;"), "other");
        assert_eq!(kind_of(""), "other");
    }

    #[test]
    fn every_counted_kind_has_a_series_from_the_start() {
        for kind in COUNTED_KINDS {
            assert!(STATEMENTS.get(&KindLabel { kind }).is_some(), "{kind}");
        }
    }
}
