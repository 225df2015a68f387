//! Export of one warehouse table to a file for analysts: CSV or Parquet.
//!
//! Rows are read in business-key order, a page at a time by keyset pagination (`WHERE key >
//! last key ORDER BY key LIMIT n`), inside one read-only transaction (REPEATABLE READ on
//! Postgres), so the file is a consistent snapshot however long the export runs and memory
//! stays bounded by one page. Each page becomes one Parquet row group.
//!
//! Types: money and quantities are exact integers (Parquet `INT64`; minor units, micros),
//! text is Parquet `BYTE_ARRAY (UTF8)`, timestamps are `INT64 (TIMESTAMP(MICROS,true))` in
//! Parquet and RFC 3339 UTC with six fractional digits in CSV, flags are `BOOLEAN` /
//! `true`/`false`. NULL is an empty CSV field and an undefined Parquet value.
//!
//! The file is written next to the target as `.NAME.partial` and renamed into place only when
//! complete, so a failed export never leaves a truncated file behind. File writes are plain
//! blocking I/O between page reads: this is an operator command, not the consumer loop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use ledgerflow_store::{Backend, Values};
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Connection, Row};
use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

use crate::table::{Column, ColumnKind, Table, table_name};
use crate::write::bind;
use crate::{Value, WarehouseError};

/// Rows per page (and per Parquet row group) unless told otherwise.
pub const DEFAULT_PAGE_ROWS: usize = 50_000;

/// RFC 3339, UTC, microseconds: `2026-01-01T00:00:00.000000Z`.
const CSV_TIMESTAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
    /// Apache Parquet, Snappy-compressed, one row group per page.
    Parquet,
}

impl ExportFormat {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Self::Csv),
            "parquet" => Ok(Self::Parquet),
            other => Err(format!(
                "unknown export format {other:?}; use csv or parquet"
            )),
        }
    }
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The table.
    pub table: Table,
    /// File format.
    pub format: ExportFormat,
    /// Business time from (micros, inclusive), on the table's [`Table::time_column`].
    pub from: Option<i64>,
    /// Business time to (micros, exclusive).
    pub to: Option<i64>,
    /// Rows per page and Parquet row group.
    pub page_rows: usize,
}

impl ExportOptions {
    /// The whole table in the given format.
    pub fn new(table: Table, format: ExportFormat) -> Self {
        Self {
            table,
            format,
            from: None,
            to: None,
            page_rows: DEFAULT_PAGE_ROWS,
        }
    }

    /// `WHERE` conditions of the time filter (after `offset` binds) and their values.
    fn time_filter(&self, offset: usize) -> Result<(Vec<String>, Vec<i64>), WarehouseError> {
        if self.from.is_none() && self.to.is_none() {
            return Ok((Vec::new(), Vec::new()));
        }
        let column = self
            .table
            .time_column()
            .ok_or(WarehouseError::NoBusinessTime(self.table))?;
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(WarehouseError::EmptyRange { from, to });
        }
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        for (value, op) in [(self.from, ">="), (self.to, "<")] {
            if let Some(v) = value {
                binds.push(v);
                conditions.push(format!("{column} {op} ${}", offset + binds.len()));
            }
        }
        Ok((conditions, binds))
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    /// Table name.
    pub table: String,
    /// File format.
    pub format: ExportFormat,
    /// Rows written.
    pub rows: u64,
    /// The file.
    pub path: PathBuf,
}

/// Counts the rows an export with these options would write (for a progress bar).
pub async fn count_rows(
    pool: &AnyPool,
    backend: Backend,
    options: &ExportOptions,
) -> Result<u64, WarehouseError> {
    let (conditions, binds) = options.time_filter(0)?;
    let mut sql = format!(
        "SELECT COUNT(*) FROM {}",
        table_name(backend, options.table)
    );
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let mut query = sqlx::query(&sql);
    for b in binds {
        query = query.bind(b);
    }
    let row = query
        .fetch_one(pool)
        .await
        .map_err(WarehouseError::db("counting rows"))?;
    let n: i64 = row
        .try_get(0)
        .map_err(|e| WarehouseError::Corrupt(format!("row count: {e}")))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Every row of a table (within the options' time range) in key order, as stored. Loads the
/// whole result: meant for small tables, checks and tests; use [`export_table`] for files.
pub async fn read_rows(
    pool: &AnyPool,
    backend: Backend,
    options: &ExportOptions,
) -> Result<Vec<Vec<Value>>, WarehouseError> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(WarehouseError::db("acquiring a connection"))?;
    let mut out = Vec::new();
    let mut last = None;
    loop {
        let page = read_page(&mut conn, backend, options, last.as_deref()).await?;
        let done = page.len() < options.page_rows.max(1);
        last = page.last().map(|r| r[..options.table.key().len()].to_vec());
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Writes the table (within the options' time range) to `out` as CSV or Parquet, calling
/// `progress` with the running row count after every page.
pub async fn export_table(
    pool: &AnyPool,
    backend: Backend,
    options: &ExportOptions,
    out: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<ExportSummary, WarehouseError> {
    // Fail on bad options before touching the file system.
    options.time_filter(0)?;
    let file_name = out.file_name().ok_or_else(|| WarehouseError::Io {
        path: out.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let partial = out.with_file_name(format!(".{}.partial", file_name.to_string_lossy()));
    let result = export_to(pool, backend, options, &partial, progress).await;
    match result {
        Ok(rows) => {
            std::fs::rename(&partial, out).map_err(|source| WarehouseError::Io {
                path: out.to_owned(),
                source,
            })?;
            Ok(ExportSummary {
                table: options.table.as_str().to_owned(),
                format: options.format,
                rows,
                path: out.to_owned(),
            })
        }
        Err(e) => {
            // The export's own error is the one to report; a partial file that cannot be removed
            // is only left behind.
            if let Err(rm) = std::fs::remove_file(&partial) {
                tracing::debug!(path = %partial.display(), error = %rm, "partial export left behind");
            }
            Err(e)
        }
    }
}

async fn export_to(
    pool: &AnyPool,
    backend: Backend,
    options: &ExportOptions,
    path: &Path,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, WarehouseError> {
    let file = File::create(path).map_err(|source| WarehouseError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut sink = Sink::open(options.table, options.format, file, path)?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(WarehouseError::db("acquiring a connection"))?;
    let mut tx = conn
        .begin()
        .await
        .map_err(WarehouseError::db("beginning the export"))?;
    if backend == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(WarehouseError::db("starting a snapshot"))?;
    }
    let mut rows = 0u64;
    let mut last: Option<Vec<Value>> = None;
    loop {
        let page = read_page(&mut tx, backend, options, last.as_deref()).await?;
        if page.is_empty() {
            break;
        }
        sink.write_page(options.table.columns(), &page)?;
        rows += page.len() as u64;
        progress(rows);
        let done = page.len() < options.page_rows.max(1);
        last = page.last().map(|r| r[..options.table.key().len()].to_vec());
        if done {
            break;
        }
    }
    tx.commit()
        .await
        .map_err(WarehouseError::db("ending the export"))?;
    sink.finish()?;
    Ok(rows)
}

/// One page of rows after `after` (a key), in key order.
async fn read_page(
    conn: &mut AnyConnection,
    backend: Backend,
    options: &ExportOptions,
    after: Option<&[Value]>,
) -> Result<Vec<Vec<Value>>, WarehouseError> {
    let table = options.table;
    let columns = table.columns();
    let key = table.key();
    let (mut conditions, time_binds) = options.time_filter(0)?;
    let mut values = Values::new(1);
    if after.is_some() {
        let marks: Vec<String> = (0..key.len())
            .map(|i| format!("${}", time_binds.len() + i + 1))
            .collect();
        conditions.push(format!("({}) > ({})", key.join(", "), marks.join(", ")));
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", "),
        table_name(backend, table)
    );
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(
        " ORDER BY {} LIMIT {}",
        key.join(", "),
        options.page_rows.max(1)
    ));
    for b in time_binds {
        values.push(b);
    }
    if let Some(after) = after {
        for (column, value) in columns.iter().zip(after) {
            bind(&mut values, column.kind, value).map_err(WarehouseError::Corrupt)?;
        }
    }
    let (_, args) = values.finish("", "");
    let rows = sqlx::query_with(&sql, args)
        .fetch_all(&mut *conn)
        .await
        .map_err(WarehouseError::db("reading a page"))?;
    rows.iter().map(|r| decode_row(table, r)).collect()
}

fn decode_row(table: Table, row: &AnyRow) -> Result<Vec<Value>, WarehouseError> {
    table
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let corrupt =
                |e: sqlx::Error| WarehouseError::Corrupt(format!("{table}.{}: {e}", c.name));
            Ok(match c.kind {
                ColumnKind::Text => Value::opt_text(
                    row.try_get::<Option<String>, _>(i)
                        .map_err(corrupt)?
                        .as_deref(),
                ),
                ColumnKind::Int | ColumnKind::Timestamp | ColumnKind::Flag => {
                    Value::opt_int(row.try_get::<Option<i64>, _>(i).map_err(corrupt)?)
                }
            })
        })
        .collect()
}

/// The Parquet schema of a table as a message-type string.
pub fn parquet_schema(table: Table) -> String {
    let mut out = format!("message {} {{\n", table.as_str());
    for c in table.columns() {
        let repetition = if c.nullable { "OPTIONAL" } else { "REQUIRED" };
        let ty = match c.kind {
            ColumnKind::Text => "BYTE_ARRAY",
            ColumnKind::Int | ColumnKind::Timestamp => "INT64",
            ColumnKind::Flag => "BOOLEAN",
        };
        let logical = match c.kind {
            ColumnKind::Text => " (UTF8)",
            ColumnKind::Timestamp => " (TIMESTAMP(MICROS,true))",
            ColumnKind::Int | ColumnKind::Flag => "",
        };
        out.push_str(&format!("  {repetition} {ty} {}{logical};\n", c.name));
    }
    out.push('}');
    out
}

/// A CSV rendering of one value.
pub fn csv_field(kind: ColumnKind, value: &Value) -> Result<String, WarehouseError> {
    Ok(match (kind, value) {
        (_, Value::Null) => String::new(),
        (ColumnKind::Text, Value::Text(s)) => s.clone(),
        (ColumnKind::Int, Value::Int(v)) => v.to_string(),
        (ColumnKind::Flag, Value::Int(v)) => (*v != 0).to_string(),
        (ColumnKind::Timestamp, Value::Int(micros)) => {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(*micros) * 1000)
                .ok()
                .and_then(|t| t.format(CSV_TIMESTAMP).ok())
                .ok_or_else(|| {
                    WarehouseError::Corrupt(format!("timestamp {micros} is out of range"))
                })?
        }
        (kind, value) => {
            return Err(WarehouseError::Corrupt(format!(
                "{value:?} stored in a {kind:?} column"
            )));
        }
    })
}

/// Where the pages go.
enum Sink {
    Csv {
        writer: csv::Writer<File>,
        path: PathBuf,
    },
    Parquet {
        writer: SerializedFileWriter<File>,
        path: PathBuf,
    },
}

impl Sink {
    fn open(
        table: Table,
        format: ExportFormat,
        file: File,
        path: &Path,
    ) -> Result<Self, WarehouseError> {
        let path = path.to_owned();
        match format {
            ExportFormat::Csv => {
                let mut writer = csv::Writer::from_writer(file);
                writer
                    .write_record(table.columns().iter().map(|c| c.name))
                    .map_err(|source| WarehouseError::Csv {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Self::Csv { writer, path })
            }
            ExportFormat::Parquet => {
                let parquet_err = |source| WarehouseError::Parquet {
                    path: path.clone(),
                    source,
                };
                let schema = parse_message_type(&parquet_schema(table)).map_err(parquet_err)?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_created_by(format!("ledgerflow {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
                    .map_err(parquet_err)?;
                Ok(Self::Parquet { writer, path })
            }
        }
    }

    fn write_page(
        &mut self,
        columns: &[Column],
        rows: &[Vec<Value>],
    ) -> Result<(), WarehouseError> {
        match self {
            Self::Csv { writer, path } => {
                for row in rows {
                    let fields = columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| csv_field(c.kind, v))
                        .collect::<Result<Vec<_>, _>>()?;
                    writer
                        .write_record(&fields)
                        .map_err(|source| WarehouseError::Csv {
                            path: path.clone(),
                            source,
                        })?;
                }
                Ok(())
            }
            Self::Parquet { writer, path } => {
                write_row_group(writer, columns, rows).map_err(|source| match source {
                    RowGroupError::Parquet(source) => WarehouseError::Parquet {
                        path: path.clone(),
                        source,
                    },
                    RowGroupError::Value(detail) => WarehouseError::Corrupt(detail),
                })
            }
        }
    }

    fn finish(self) -> Result<(), WarehouseError> {
        match self {
            Self::Csv { mut writer, path } => {
                writer.flush().map_err(|source| WarehouseError::Io {
                    path: path.clone(),
                    source,
                })?;
                let file = writer.into_inner().map_err(|e| WarehouseError::Io {
                    path: path.clone(),
                    source: e.into_error(),
                })?;
                file.sync_all()
                    .map_err(|source| WarehouseError::Io { path, source })
            }
            Self::Parquet { writer, path } => {
                let parquet_err = |source| WarehouseError::Parquet {
                    path: path.clone(),
                    source,
                };
                let file = writer.into_inner().map_err(parquet_err)?;
                file.sync_all()
                    .map_err(|source| WarehouseError::Io { path, source })
            }
        }
    }
}

enum RowGroupError {
    Parquet(parquet::errors::ParquetError),
    Value(String),
}

impl From<parquet::errors::ParquetError> for RowGroupError {
    fn from(value: parquet::errors::ParquetError) -> Self {
        Self::Parquet(value)
    }
}

/// Definition levels (1 = present, 0 = NULL) for optional columns, none for required ones.
fn levels(column: &Column, present: &[bool]) -> Option<Vec<i16>> {
    column
        .nullable
        .then(|| present.iter().map(|p| i16::from(*p)).collect())
}

/// Writes one page as one row group, column by column.
fn write_row_group(
    writer: &mut SerializedFileWriter<File>,
    columns: &[Column],
    rows: &[Vec<Value>],
) -> Result<(), RowGroupError> {
    let mut group = writer.next_row_group()?;
    for (i, column) in columns.iter().enumerate() {
        let Some(mut col) = group.next_column()? else {
            return Err(RowGroupError::Value(format!(
                "parquet schema has no column for {}",
                column.name
            )));
        };
        let present: Vec<bool> = rows.iter().map(|r| r[i] != Value::Null).collect();
        let def = levels(column, &present);
        if !column.nullable && present.contains(&false) {
            return Err(RowGroupError::Value(format!(
                "NULL in required column {}",
                column.name
            )));
        }
        let bad = |v: &Value| RowGroupError::Value(format!("{v:?} in column {}", column.name));
        match column.kind {
            ColumnKind::Text => {
                let mut values = Vec::with_capacity(rows.len());
                for r in rows {
                    match &r[i] {
                        Value::Text(s) => values.push(ByteArray::from(s.as_str())),
                        Value::Null => {}
                        v => return Err(bad(v)),
                    }
                }
                col.typed::<ByteArrayType>()
                    .write_batch(&values, def.as_deref(), None)?;
            }
            ColumnKind::Int | ColumnKind::Timestamp => {
                let mut values = Vec::with_capacity(rows.len());
                for r in rows {
                    match &r[i] {
                        Value::Int(v) => values.push(*v),
                        Value::Null => {}
                        v => return Err(bad(v)),
                    }
                }
                col.typed::<Int64Type>()
                    .write_batch(&values, def.as_deref(), None)?;
            }
            ColumnKind::Flag => {
                let mut values = Vec::with_capacity(rows.len());
                for r in rows {
                    match &r[i] {
                        Value::Int(v) => values.push(*v != 0),
                        Value::Null => {}
                        v => return Err(bad(v)),
                    }
                }
                col.typed::<BoolType>()
                    .write_batch(&values, def.as_deref(), None)?;
            }
        }
        col.close()?;
    }
    group.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_schemas_parse_with_typed_columns() {
        for table in Table::ALL {
            let text = parquet_schema(table);
            let schema = parse_message_type(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(schema.get_fields().len(), table.columns().len());
        }
        let invoice = parquet_schema(Table::FactInvoice);
        assert!(invoice.contains("REQUIRED INT64 total_minor;"), "{invoice}");
        assert!(invoice.contains("REQUIRED BYTE_ARRAY currency (UTF8);"));
        assert!(invoice.contains("REQUIRED INT64 issued_at (TIMESTAMP(MICROS,true));"));
        assert!(invoice.contains("OPTIONAL BYTE_ARRAY purchase_order (UTF8);"));
        let customer = parquet_schema(Table::DimCustomer);
        assert!(customer.contains("REQUIRED BOOLEAN is_current;"));
        assert!(customer.contains("OPTIONAL INT64 valid_to (TIMESTAMP(MICROS,true));"));
    }

    #[test]
    fn csv_fields_render_exactly() {
        assert_eq!(
            csv_field(ColumnKind::Timestamp, &Value::Int(1_767_225_600_000_001)).unwrap(),
            "2026-01-01T00:00:00.000001Z"
        );
        assert_eq!(
            csv_field(ColumnKind::Int, &Value::Int(-9_223_372_036_854_775_808)).unwrap(),
            "-9223372036854775808"
        );
        assert_eq!(csv_field(ColumnKind::Flag, &Value::Int(1)).unwrap(), "true");
        assert_eq!(
            csv_field(ColumnKind::Flag, &Value::Int(0)).unwrap(),
            "false"
        );
        assert_eq!(csv_field(ColumnKind::Text, &Value::Null).unwrap(), "");
        assert!(csv_field(ColumnKind::Int, &Value::from("x")).is_err());
        assert!(csv_field(ColumnKind::Timestamp, &Value::Int(i64::MAX)).is_err());
    }

    #[test]
    fn time_filters_need_a_time_column_and_a_range() {
        let mut opts = ExportOptions::new(Table::DimTenant, ExportFormat::Csv);
        assert!(opts.time_filter(0).unwrap().0.is_empty());
        opts.from = Some(1);
        assert!(matches!(
            opts.time_filter(0),
            Err(WarehouseError::NoBusinessTime(Table::DimTenant))
        ));
        let mut opts = ExportOptions::new(Table::FactPayment, ExportFormat::Parquet);
        opts.from = Some(10);
        opts.to = Some(20);
        let (conditions, binds) = opts.time_filter(2).unwrap();
        assert_eq!(conditions, ["captured_at >= $3", "captured_at < $4"]);
        assert_eq!(binds, [10, 20]);
        opts.to = Some(10);
        assert!(matches!(
            opts.time_filter(0),
            Err(WarehouseError::EmptyRange { .. })
        ));
        assert_eq!("parquet".parse::<ExportFormat>(), Ok(ExportFormat::Parquet));
        assert!("xlsx".parse::<ExportFormat>().is_err());
    }
}
