//! Set-based statements.
//!
//! [`Values`] renders multi-row `VALUES (...), (...)` lists with `$N` placeholders (understood by
//! Postgres and SQLite alike). Their text changes with the row count, so Postgres parses and
//! plans every one afresh and a batch costs thousands of bind parameters.
//!
//! [`Rows`] is what the hot path uses: the same rows, pushed the same way, rendered per backend.
//! On Postgres every column travels as ONE array parameter (a text array literal cast to the
//! column's array type) and the rows come from `SELECT * FROM UNNEST($1::text[], ...)`: the
//! statement text is fixed, so it is prepared once per connection, whatever the batch size. On
//! SQLite the rows go into `VALUES` lists, chunked under the bind limit.

use std::fmt::Write as _;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyConnection, Arguments, Encode, Type};

use crate::{Backend, StoreError};

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns, starting after `offset` binds.
pub fn placeholders(rows: usize, cols: usize, offset: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    let mut n = offset;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        }
        out.push(')');
    }
    out
}

/// Collects binds for a multi-row `INSERT ... VALUES` and renders the statement.
#[derive(Default)]
pub struct Values {
    args: AnyArguments<'static>,
    rows: usize,
    cols: usize,
    count: usize,
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Values")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl Values {
    /// A builder for rows of `cols` columns.
    pub fn new(cols: usize) -> Self {
        Self {
            cols,
            ..Self::default()
        }
    }

    /// Adds one value; every `cols` values make a row.
    pub fn push<T>(&mut self, value: T) -> &mut Self
    where
        T: 'static + Send + Encode<'static, Any> + Type<Any>,
    {
        // Encoding into AnyArguments only fails for unsupported types, which is a compile-time
        // choice of ours; a value left out is surfaced when the statement runs (too few binds).
        self.args.add(value).ok();
        self.count += 1;
        if self.count.is_multiple_of(self.cols) {
            self.rows += 1;
        }
        self
    }

    /// Rows collected so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `prefix VALUES (...), (...) suffix` and the arguments to run it with.
    pub fn finish(self, prefix: &str, suffix: &str) -> (String, AnyArguments<'static>) {
        let sql = format!(
            "{prefix} VALUES {} {suffix}",
            placeholders(self.rows, self.cols, 0)
        );
        (sql, self.args)
    }
}

/// Most bind parameters per SQLite statement (its limit is 32,766).
const SQLITE_MAX_BINDS: usize = 30_000;

/// One value of a set-based statement: bound as a parameter (SQLite) or written as an element
/// of a Postgres array literal.
pub trait Cell {
    /// The owned type bound as a parameter.
    type Owned: 'static + Send + Encode<'static, Any> + Type<Any>;
    /// The value as its owned parameter.
    fn into_owned(self) -> Self::Owned;
    /// Appends the value as an array-literal element (quoted, or `NULL`).
    fn write_element(&self, out: &mut String);
}

/// Appends `s` as a double-quoted array-literal element (`\\` and `"` escaped).
fn quote_element(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

impl Cell for String {
    type Owned = String;
    fn into_owned(self) -> String {
        self
    }
    fn write_element(&self, out: &mut String) {
        quote_element(self, out);
    }
}

impl Cell for &str {
    type Owned = String;
    fn into_owned(self) -> String {
        self.to_owned()
    }
    fn write_element(&self, out: &mut String) {
        quote_element(self, out);
    }
}

impl Cell for &String {
    type Owned = String;
    fn into_owned(self) -> String {
        self.clone()
    }
    fn write_element(&self, out: &mut String) {
        quote_element(self, out);
    }
}

impl Cell for i64 {
    type Owned = i64;
    fn into_owned(self) -> i64 {
        self
    }
    fn write_element(&self, out: &mut String) {
        // Writing to a String cannot fail.
        write!(out, "{self}").ok();
    }
}

impl Cell for i32 {
    type Owned = i32;
    fn into_owned(self) -> i32 {
        self
    }
    fn write_element(&self, out: &mut String) {
        // Writing to a String cannot fail.
        write!(out, "{self}").ok();
    }
}

impl Cell for Vec<u8> {
    type Owned = Vec<u8>;
    fn into_owned(self) -> Vec<u8> {
        self
    }
    fn write_element(&self, out: &mut String) {
        // bytea hex input, `\\x...`, its backslash escaped inside the quoted element.
        out.push_str("\"\\\\x");
        out.push_str(&hex::encode(self));
        out.push('"');
    }
}

impl<T: Cell> Cell for Option<T> {
    type Owned = Option<T::Owned>;
    fn into_owned(self) -> Option<T::Owned> {
        self.map(Cell::into_owned)
    }
    fn write_element(&self, out: &mut String) {
        match self {
            Some(v) => v.write_element(out),
            None => out.push_str("NULL"),
        }
    }
}

/// Where a row's values go one by one: [`Values`] or [`Rows`].
pub trait PushCell {
    /// Adds the next value.
    fn push_cell<C: Cell>(&mut self, value: C) -> &mut Self;
}

impl PushCell for Values {
    fn push_cell<C: Cell>(&mut self, value: C) -> &mut Self {
        self.push(value.into_owned())
    }
}

impl PushCell for Rows {
    fn push_cell<C: Cell>(&mut self, value: C) -> &mut Self {
        self.push(value)
    }
}

/// Takes the transaction-scoped advisory locks `(class, hashtext(tenant))` of these tenants, in
/// the order given, in one statement (Postgres only; SQLite has one writer anyway). Give them
/// sorted, so two transactions locking overlapping sets cannot deadlock.
pub async fn lock_tenants<'a>(
    conn: &mut AnyConnection,
    backend: Backend,
    class: i32,
    sorted_tenants: impl IntoIterator<Item = &'a str>,
    action: &'static str,
) -> Result<(), StoreError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let tenants = pg_array(sorted_tenants);
    if tenants == "{}" {
        return Ok(());
    }
    sqlx::query(
        "SELECT CAST(1 AS BIGINT) FROM (SELECT pg_advisory_xact_lock($1, hashtext(t)) \
         FROM UNNEST($2::text[]) WITH ORDINALITY AS u(t, n) ORDER BY n) AS l",
    )
    .bind(class)
    .bind(tenants)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::query(action))?;
    Ok(())
}

/// The Postgres array literal of `items` (`{"a","b"}`), for a `$n::text[]`-style parameter.
pub fn pg_array<C: Cell>(items: impl IntoIterator<Item = C>) -> String {
    let mut out = String::from("{");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.write_element(&mut out);
    }
    out.push('}');
    out
}

/// Rows for a set-based statement, rendered per backend (see the module docs).
pub struct Rows {
    backend: Backend,
    /// Postgres element type of each column (`text`, `bigint`, `integer`, `bytea`).
    types: Vec<&'static str>,
    /// Postgres: one array literal per column, opening brace written, closing brace not yet.
    arrays: Vec<String>,
    /// SQLite: full chunks, then the one being filled.
    chunks: Vec<Values>,
    column: usize,
    rows: usize,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("backend", &self.backend)
            .field("types", &self.types)
            .field("rows", &self.rows)
            .finish()
    }
}

impl Rows {
    /// Rows whose columns have these Postgres element types.
    pub fn new(backend: Backend, types: &[&'static str]) -> Self {
        Self {
            backend,
            types: types.to_vec(),
            arrays: match backend {
                Backend::Postgres => types.iter().map(|_| String::from("{")).collect(),
                Backend::Sqlite => Vec::new(),
            },
            chunks: Vec::new(),
            column: 0,
            rows: 0,
        }
    }

    /// Adds the next value; every `types.len()` values make a row.
    pub fn push<C: Cell>(&mut self, value: C) -> &mut Self {
        let cols = self.types.len();
        match self.backend {
            Backend::Postgres => {
                let array = &mut self.arrays[self.column];
                if self.rows > 0 {
                    array.push(',');
                }
                value.write_element(array);
            }
            Backend::Sqlite => {
                let per_chunk = (SQLITE_MAX_BINDS / cols).max(1);
                if self.column == 0 && self.rows.is_multiple_of(per_chunk) {
                    self.chunks.push(Values::new(cols));
                }
                if let Some(chunk) = self.chunks.last_mut() {
                    chunk.push(value.into_owned());
                }
            }
        }
        self.column += 1;
        if self.column == cols {
            self.column = 0;
            self.rows += 1;
        }
        self
    }

    /// Complete rows pushed so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The statements `prefix <rows> suffix` with their arguments: one on Postgres
    /// (`SELECT * FROM UNNEST(...)`), one per chunk on SQLite (`VALUES ...`). None when empty.
    pub fn statements(self, prefix: &str, suffix: &str) -> Vec<(String, AnyArguments<'static>)> {
        if self.rows == 0 {
            return Vec::new();
        }
        match self.backend {
            Backend::Postgres => {
                let mut args = AnyArguments::default();
                let mut unnest = String::from("SELECT * FROM UNNEST(");
                for (i, (mut array, ty)) in self.arrays.into_iter().zip(&self.types).enumerate() {
                    array.push('}');
                    // A String always encodes.
                    args.add(array).ok();
                    if i > 0 {
                        unnest.push_str(", ");
                    }
                    // Writing to a String cannot fail.
                    write!(unnest, "${}::{ty}[]", i + 1).ok();
                }
                unnest.push(')');
                vec![(format!("{prefix} {unnest} {suffix}"), args)]
            }
            Backend::Sqlite => self
                .chunks
                .into_iter()
                .map(|chunk| chunk.finish(prefix, suffix))
                .collect(),
        }
    }

    /// Runs `prefix <rows> suffix`; returns the rows affected.
    pub async fn execute(
        self,
        conn: &mut AnyConnection,
        action: &'static str,
        prefix: &str,
        suffix: &str,
    ) -> Result<u64, StoreError> {
        let mut affected = 0;
        for (sql, args) in self.statements(prefix, suffix) {
            affected += sqlx::query_with(&sql, args)
                .execute(&mut *conn)
                .await
                .map_err(StoreError::query(action))?
                .rows_affected();
        }
        Ok(affected)
    }

    /// Runs `prefix <rows> suffix` and collects what it returns.
    pub async fn fetch_all(
        self,
        conn: &mut AnyConnection,
        action: &'static str,
        prefix: &str,
        suffix: &str,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut out = Vec::new();
        for (sql, args) in self.statements(prefix, suffix) {
            out.extend(
                sqlx::query_with(&sql, args)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::query(action))?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_array_literals_with_quotes_escapes_and_nulls() {
        assert_eq!(pg_array(["a", "b,c"]), r#"{"a","b,c"}"#);
        assert_eq!(pg_array([r#"say "hi" \ bye"#]), r#"{"say \"hi\" \\ bye"}"#);
        assert_eq!(pg_array([Some(1_i64), None, Some(-3)]), "{1,NULL,-3}");
        assert_eq!(pg_array([Some("NULL"), None]), r#"{"NULL",NULL}"#);
        assert_eq!(pg_array([vec![0_u8, 0xab]]), r#"{"\\x00ab"}"#);
        assert_eq!(pg_array(Vec::<i64>::new()), "{}");
    }

    #[test]
    fn renders_one_unnest_statement_on_postgres_and_chunks_on_sqlite() {
        let mut pg = Rows::new(Backend::Postgres, &["text", "bigint"]);
        pg.push("a").push(1_i64).push("b").push(2_i64);
        assert_eq!(pg.len(), 2);
        let statements = pg.statements("INSERT INTO t (k, v)", "ON CONFLICT DO NOTHING");
        assert_eq!(statements.len(), 1);
        assert_eq!(
            statements[0].0,
            "INSERT INTO t (k, v) SELECT * FROM UNNEST($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING"
        );

        let mut lite = Rows::new(Backend::Sqlite, &["text", "bigint"]);
        for i in 0..(SQLITE_MAX_BINDS / 2 + 1) {
            lite.push("k").push(i as i64);
        }
        let statements = lite.statements("INSERT INTO t (k, v)", "");
        assert_eq!(statements.len(), 2, "split under the bind limit");
        assert!(statements[1].0.ends_with("VALUES ($1, $2) "));
        assert!(
            Rows::new(Backend::Sqlite, &["text"])
                .statements("x", "")
                .is_empty()
        );
    }

    #[test]
    fn numbers_placeholders_across_rows() {
        assert_eq!(placeholders(2, 2, 0), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(1, 3, 4), "($5, $6, $7)");
    }
}
