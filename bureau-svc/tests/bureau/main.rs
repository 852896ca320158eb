//! bureau-svc over real sockets against the WeChat sandbox, on SQLite and on PostgreSQL.

mod command_line;
mod failures;
mod issue;
mod restart;
mod start_check;
mod status;
mod support;
mod templates;

/// Runs `scenario(database)` as two tests: on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(fiscalbill_common::db::test_support::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(fiscalbill_common::db::test_support::postgres()).await;
            }
        }
    };
}
