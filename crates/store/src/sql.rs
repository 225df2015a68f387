//! Multi-row statements with `$N` placeholders (understood by Postgres and SQLite alike).

use sqlx::any::AnyArguments;
use sqlx::{Any, Arguments, Encode, Type};

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
        // choice of ours; it is surfaced when the statement runs.
        let _ = self.args.add(value);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_placeholders_across_rows() {
        assert_eq!(placeholders(2, 2, 0), "($1, $2), ($3, $4)");
        assert_eq!(placeholders(1, 3, 4), "($5, $6, $7)");
    }
}
