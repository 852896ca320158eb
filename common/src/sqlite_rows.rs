//! SQL run on SQLite with `rusqlite` (over the same SQLite library as sqlx's driver), giving
//! rows and errors as sqlx's driver gives them: `AnyRow`s whose values are typed by the value
//! (as sqlx's `Any` driver types SQLite's), and database errors with SQLite's extended code, so
//! that the stores read them the same way whichever path ran the SQL. Used by the group-commit
//! thread ([`crate::group_commit`]) and the reads run where they are asked for
//! ([`crate::sqlite_reads`]).

use std::path::Path;
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx_core::any::{AnyColumn, AnyRow, AnyTypeInfo, AnyTypeInfoKind, AnyValue, AnyValueKind};
use sqlx_core::ext::ustr::UStr;

use crate::db::SQLITE_PRAGMAS;

/// Prepared statements a connection keeps: more than the texts of any service's units or reads.
const CACHED_STATEMENTS: usize = 64;

/// A connection of our own to the SQLite file at `path` (which sqlx's writer has created and put
/// in WAL mode), set up as every connection of a service is, then with `more_pragmas`.
pub(crate) fn open(path: &Path, more_pragmas: &[&str]) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.execute_batch(SQLITE_PRAGMAS)?;
    for pragmas in more_pragmas {
        conn.execute_batch(pragmas)?;
    }
    conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    Ok(conn)
}

/// Runs one statement with `arguments` (sqlx's numbering: `$n` and `?n` name an argument; a bare
/// `?` takes the next one, `bare` counting them across the statements of a unit), adding the rows
/// it returns to `rows`, up to `max_rows` of them in all.
pub(crate) fn run_statement(
    conn: &Connection,
    sql: &str,
    arguments: &[AnyValueKind],
    bare: &mut usize,
    rows: &mut Vec<AnyRow>,
    max_rows: usize,
) -> Result<(), sqlx::Error> {
    let mut statement = conn.prepare_cached(sql).map_err(sql_error)?;
    for index in 1..=statement.parameter_count() {
        let number = match statement.parameter_name(index) {
            Some(name) => name[1..]
                .parse::<usize>()
                .map_err(|_| sqlx::Error::Protocol(format!("unsupported SQL parameter {name}")))?,
            None => {
                *bare += 1;
                *bare
            }
        };
        // As sqlx does, a parameter without an argument stays NULL.
        if let Some(value) = number.checked_sub(1).and_then(|i| arguments.get(i)) {
            statement.raw_bind_parameter(index, ToSqlOutput::Borrowed(argument(value)?)).map_err(sql_error)?;
        }
    }
    let names: Vec<UStr> = statement.column_names().into_iter().map(UStr::new).collect();
    if names.is_empty() {
        return statement.raw_execute().map(|_| ()).map_err(sql_error);
    }
    let by_name: Arc<sqlx_core::HashMap<UStr, usize>> =
        Arc::new(names.iter().enumerate().map(|(i, name)| (name.clone(), i)).collect());
    let mut results = statement.raw_query();
    while rows.len() < max_rows
        && let Some(row) = results.next().map_err(sql_error)?
    {
        let mut out = AnyRow { column_names: by_name.clone(), columns: Vec::new(), values: Vec::new() };
        for (ordinal, name) in names.iter().enumerate() {
            let kind = value(row.get_ref(ordinal).map_err(sql_error)?)?;
            let type_info = AnyTypeInfo { kind: type_of(&kind) };
            out.columns.push(AnyColumn { ordinal, name: name.clone(), type_info });
            out.values.push(AnyValue { kind });
        }
        rows.push(out);
    }
    Ok(())
}

/// An argument as SQLite takes it, as sqlx's SQLite driver binds it (a bool as an integer).
fn argument(value: &AnyValueKind) -> Result<ValueRef<'_>, sqlx::Error> {
    Ok(match value {
        AnyValueKind::Null(_) => ValueRef::Null,
        AnyValueKind::Bool(b) => ValueRef::Integer(i64::from(*b)),
        AnyValueKind::SmallInt(i) => ValueRef::Integer(i64::from(*i)),
        AnyValueKind::Integer(i) => ValueRef::Integer(i64::from(*i)),
        AnyValueKind::BigInt(i) => ValueRef::Integer(*i),
        AnyValueKind::Real(f) => ValueRef::Real(f64::from(*f)),
        AnyValueKind::Double(f) => ValueRef::Real(*f),
        AnyValueKind::Text(text) => ValueRef::Text(text.as_bytes()),
        AnyValueKind::TextSlice(text) => ValueRef::Text(text.as_bytes()),
        AnyValueKind::Blob(bytes) => ValueRef::Blob(bytes),
        other => return Err(sqlx::Error::Protocol(format!("an argument of an unsupported type: {other:?}"))),
    })
}

/// A value read, as sqlx's `Any` driver gives SQLite's (by the value's own type).
fn value(value: ValueRef<'_>) -> Result<AnyValueKind, sqlx::Error> {
    Ok(match value {
        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
        ValueRef::Integer(i) => AnyValueKind::BigInt(i),
        ValueRef::Real(f) => AnyValueKind::Double(f),
        ValueRef::Text(text) => {
            let text = String::from_utf8(text.to_vec()).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
            AnyValueKind::Text(Arc::new(text))
        }
        ValueRef::Blob(bytes) => AnyValueKind::Blob(Arc::new(bytes.to_vec())),
    })
}

fn type_of(kind: &AnyValueKind) -> AnyTypeInfoKind {
    match kind {
        AnyValueKind::BigInt(_) => AnyTypeInfoKind::BigInt,
        AnyValueKind::Double(_) => AnyTypeInfoKind::Double,
        AnyValueKind::Text(_) => AnyTypeInfoKind::Text,
        AnyValueKind::Blob(_) => AnyTypeInfoKind::Blob,
        _ => AnyTypeInfoKind::Null,
    }
}

/// SQLite's error as sqlx's SQLite driver reports it: a database error with the extended
/// result code, so that callers tell a unique violation from the rest the same way on both
/// paths.
pub(crate) fn sql_error(error: rusqlite::Error) -> sqlx::Error {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => sqlx::Error::Database(Box::new(SqliteError {
            code: failure.extended_code,
            message: message.unwrap_or_else(|| failure.to_string()),
        })),
        other => sqlx::Error::Protocol(format!("SQLite: {other}")),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("(code: {code}) {message}")]
struct SqliteError {
    code: i32,
    message: String,
}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        use rusqlite::ffi;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => ErrorKind::UniqueViolation,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}
