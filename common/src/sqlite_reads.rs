//! Reads on SQLite run by the task that asks for them, on its own thread, with a connection of
//! our own ([`crate::db::Db::read_rows`]).
//!
//! Why not on sqlx's reader connections: sqlx's SQLite driver runs each query on the
//! connection's own thread, so a read was a round trip between threads, about two context
//! switches: most of what was left per bill once the write units ran on a thread of their own
//! (BENCHMARKS.md). A read of a few rows by key takes tens of microseconds, less than the
//! hand-off itself. In WAL mode a read never waits for the writer, so running it on the asking
//! thread holds that thread for the read's own work only (SQLite's busy handler would make it
//! wait only while another connection rebuilds the WAL's index, after a crash, at start-up).
//! Reads that can be long (lists, a PDF's chunks) keep sqlx's readers, off the asking thread.
//!
//! A connection is taken from the idle ones for one read and given back; with none idle (as
//! many reads at once as the threads that run tasks, at most), one more is opened, and kept if
//! fewer than [`MAX_IDLE`] are idle then.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;
use sqlx_core::any::{AnyRow, AnyValueKind};

use crate::db::SMALL_PAGE_CACHE;
use crate::sqlite_rows::{open, run_statement, sql_error};

/// Idle connections kept: the threads that run tasks in a service (its tokio workers, a few).
const MAX_IDLE: usize = 8;

/// What a read's connection adds to every connection's set-up: a reader's small page cache (the
/// writers' commits keep emptying it), and no writes, whatever the SQL says.
const READER_PRAGMAS: [&str; 2] = [SMALL_PAGE_CACHE, "PRAGMA query_only = ON"];

pub(crate) struct SqliteReads {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReads").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteReads {
    /// Reads of the SQLite file at `path` (created, and in WAL mode, already); opens a first
    /// connection, so that a file that cannot be read fails here rather than at the first read.
    pub(crate) fn open(path: &Path) -> Result<Self, sqlx::Error> {
        let first = open(path, &READER_PRAGMAS).map_err(sql_error)?;
        Ok(Self { path: path.to_owned(), idle: Mutex::new(vec![first]) })
    }

    /// Runs one statement that reads, with its `arguments` (`$1` ... `$n`), and gives back up to
    /// `max_rows` of its rows. Runs here, on the caller's thread.
    pub(crate) fn read(
        &self,
        sql: &str,
        arguments: &[AnyValueKind],
        max_rows: usize,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let idle = self.idle.lock().unwrap().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open(&self.path, &READER_PRAGMAS).map_err(sql_error)?,
        };
        let mut rows = Vec::new();
        let read = run_statement(&conn, sql, arguments, &mut 0, &mut rows, max_rows);
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        drop(idle);
        read.map(|()| rows)
    }
}
