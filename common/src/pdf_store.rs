//! Bill PDFs in the database, stored in chunks of at most [`CHUNK_BYTES`] per row.
//!
//! A PDF bound as one SQL value is copied whole three more times on its way into SQLite (sqlx's
//! `Any` arguments, SQLite's bound value, the record it builds) and twice on its way out. In
//! chunks, those copies are a chunk each, and a PDF read back is assembled into one buffer of
//! its exact size, so a service holds a PDF about once while storing it and once while reading.
//!
//! Each table has the columns `unit_appid`, `order_id`, `seq` (from 0) and `data`. An empty
//! PDF would be stored as no rows and read back as none; the services never store one.

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::db::{MoreStatements, Statement};

/// The largest chunk stored in one row.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// One service's table of PDF chunks.
#[derive(Clone, Copy, Debug)]
pub struct PdfTable(pub &'static str);

impl PdfTable {
    /// A PDF's part in a write unit ([`crate::db::Db::write_together`]) whose `$1` and `$2`
    /// are the PDF's unit_appid and order_id: its first chunk inserted by a statement of the
    /// unit, bound as `$first` (bind [`PdfInUnit::first_chunk`] there), and the others (a PDF
    /// larger than [`CHUNK_BYTES`]) by statements of their own after it, each built when it
    /// runs, so that one chunk at a time is copied into the database's arguments.
    pub fn in_unit<'a>(self, unit_appid: &'a str, order_id: &'a str, pdf: &'a [u8], first: usize) -> PdfInUnit<'a> {
        // The table name is one of the services' constants, never input.
        let table = self.0;
        let mut chunks = pdf.chunks(CHUNK_BYTES);
        let first_chunk = chunks.next().unwrap_or_default();
        let more = (pdf.len() > CHUNK_BYTES).then(|| {
            let sql = format!("INSERT INTO {table} (unit_appid, order_id, seq, data) VALUES ($1, $2, $3, $4)");
            let statements = chunks.enumerate().map(move |(i, chunk)| {
                sqlx::query(AssertSqlSafe(sql.clone())).bind(unit_appid).bind(order_id).bind(i as i64 + 1).bind(chunk)
            });
            Box::new(statements) as MoreStatements<'a>
        });
        PdfInUnit {
            statement: format!("INSERT INTO {table} (unit_appid, order_id, seq, data) VALUES ($1, $2, 0, ${first})"),
            first_chunk,
            more,
        }
    }

    /// A `with_pdf` condition for [`PdfTable::beside_sql`]: the PDF stored under (`$1`, `$2`)
    /// is one chunk at most. A larger one is better read on its own, a chunk at a time, than
    /// fetched whole in a write unit (which holds the writer while it is copied, and gives all
    /// its chunks at once beside the buffer they go into).
    pub fn at_most_one_chunk(self) -> String {
        // No chunk after the first: one seek of the key, however many chunks there are.
        format!("NOT EXISTS (SELECT 1 FROM {} WHERE unit_appid = $1 AND order_id = $2 AND seq > 0)", self.0)
    }

    /// A statement reading the row `row_sql` selects (at most one, keyed by `$1` = unit_appid
    /// and `$2` = order_id, as this table is) and, when the SQL expression `with_pdf` is true,
    /// the PDF stored under the same key: the row's columns come beside each chunk (`pdf_data`,
    /// in order) and the PDF's size (`pdf_size`); both NULL when there is no PDF or `with_pdf`
    /// is false. Read it with [`PdfTable::read_beside`], or [`PdfTable::assemble_beside`] where
    /// it ran in a write unit: one statement where the row and the PDF took two.
    pub fn beside_sql(self, row_sql: &str, with_pdf: &str) -> String {
        format!(
            "SELECT r.*, c.data AS pdf_data,
                (SELECT SUM(LENGTH(data)) FROM {0} WHERE unit_appid = $1 AND order_id = $2 AND {with_pdf}) AS pdf_size
             FROM ({row_sql}) r LEFT JOIN {0} c ON c.unit_appid = $1 AND c.order_id = $2 AND {with_pdf}
             ORDER BY c.seq",
            self.0
        )
    }

    /// Runs a statement of [`PdfTable::beside_sql`] with its arguments bound: the row, decoded
    /// by `decode`, and the PDF, when it was asked for and is stored. The rows are taken one at
    /// a time, so that the PDF is held once (in its buffer), not twice.
    pub async fn read_beside<T>(
        self,
        query: Statement,
        conn: &mut AnyConnection,
        decode: impl FnOnce(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Option<(T, Option<Bytes>)>, sqlx::Error> {
        let mut rows = query.fetch(conn);
        let Some(first) = rows.try_next().await? else { return Ok(None) };
        let mut read = RowAndPdf::start(&first, decode)?;
        while let Some(row) = rows.try_next().await? {
            read.add(&row)?;
        }
        Ok(Some(read.finish()))
    }

    /// The row and PDF of a [`PdfTable::beside_sql`] statement's rows, fetched already (by a
    /// write unit that ended with it); None when there were none.
    pub fn assemble_beside<T>(
        self,
        rows: Vec<AnyRow>,
        decode: impl FnOnce(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Option<(T, Option<Bytes>)>, sqlx::Error> {
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else { return Ok(None) };
        let mut read = RowAndPdf::start(&first, decode)?;
        for row in rows {
            read.add(&row)?;
        }
        Ok(Some(read.finish()))
    }

    /// The PDF stored for (`unit_appid`, `order_id`), if any, read one chunk at a time into
    /// one buffer of its size. One statement: the size comes with each chunk, from a subquery
    /// the database evaluates once (it depends on no row).
    pub async fn read(
        self,
        conn: &mut AnyConnection,
        unit_appid: &str,
        order_id: &str,
    ) -> Result<Option<Bytes>, sqlx::Error> {
        let sql = format!(
            "SELECT data, (SELECT SUM(LENGTH(data)) FROM {0} WHERE unit_appid = $1 AND order_id = $2) AS size
             FROM {0} WHERE unit_appid = $1 AND order_id = $2 ORDER BY seq",
            self.0
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql)).bind(unit_appid).bind(order_id).fetch(conn);
        let mut pdf: Option<BytesMut> = None;
        while let Some(row) = rows.try_next().await? {
            let buffer = match &mut pdf {
                Some(buffer) => buffer,
                None => {
                    let size: i64 = row.try_get("size")?;
                    pdf.insert(BytesMut::with_capacity(usize::try_from(size).unwrap_or(0)))
                }
            };
            let chunk: &[u8] = row.try_get("data")?;
            buffer.extend_from_slice(chunk);
        }
        Ok(pdf.map(BytesMut::freeze))
    }
}

/// A row of [`PdfTable::beside_sql`] and its PDF, assembled one chunk at a time into a buffer
/// of the PDF's size.
struct RowAndPdf<T> {
    value: T,
    pdf: Option<BytesMut>,
}

impl<T> RowAndPdf<T> {
    fn start(first: &AnyRow, decode: impl FnOnce(&AnyRow) -> Result<T, sqlx::Error>) -> Result<Self, sqlx::Error> {
        let size = first.try_get::<Option<i64>, _>("pdf_size")?;
        let pdf = size.map(|size| BytesMut::with_capacity(usize::try_from(size).unwrap_or(0)));
        let mut read = Self { value: decode(first)?, pdf };
        read.add(first)?;
        Ok(read)
    }

    fn add(&mut self, row: &AnyRow) -> Result<(), sqlx::Error> {
        if let Some(pdf) = &mut self.pdf
            && let Some(chunk) = row.try_get::<Option<&[u8]>, _>("pdf_data")?
        {
            pdf.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn finish(self) -> (T, Option<Bytes>) {
        (self.value, self.pdf.map(BytesMut::freeze))
    }
}

/// See [`PdfTable::in_unit`].
pub struct PdfInUnit<'a> {
    /// The unit's statement inserting the first chunk.
    pub statement: String,
    pub first_chunk: &'a [u8],
    /// The other chunks' statements, to run after the unit's in its transaction.
    pub more: Option<MoreStatements<'a>>,
}

/// For the services' tests of their migration to chunks.
pub mod test_support {
    use super::PdfTable;
    use crate::db::{COMMON_MIGRATIONS, Db, Migration, test_support};

    /// On each backend: a PDF stored whole in `whole_table` by migration 1 of `migrations` is
    /// read back whole from `chunks` after all of them.
    pub async fn whole_pdfs_survive_the_move_to_chunks(migrations: &[Migration], whole_table: &str, chunks: PdfTable) {
        for config in test_support::both() {
            let db = Db::connect(&config, "pdf_move_test").await.unwrap_or_else(|e| panic!("{}: {e}", config.url));
            let schema = config.schema.clone().unwrap_or_default();
            db.migrate(&[COMMON_MIGRATIONS, &migrations[..1]], &schema).await.unwrap();
            let pdf: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
            let insert = format!("INSERT INTO {whole_table} (unit_appid, order_id, pdf) VALUES ($1, $2, $3)");
            sqlx::query(sqlx::AssertSqlSafe(insert))
                .bind("wxc0000000000000c1")
                .bind("order-1")
                .bind(pdf.clone())
                .execute(&mut *db.write().await.unwrap())
                .await
                .unwrap();
            db.migrate(&[COMMON_MIGRATIONS, migrations], &schema).await.unwrap();
            let read = chunks.read(&mut db.read().await.unwrap(), "wxc0000000000000c1", "order-1").await.unwrap();
            assert_eq!(read.as_deref(), Some(&pdf[..]), "{}", config.url);
            db.close().await;
        }
    }
}
