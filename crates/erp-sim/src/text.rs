//! Small parsers shared by the ERP modules: exact decimal amounts, query strings, the `eq`/`and`
//! subset of OData `$filter`, RFC 4180 CSV, XML escaping and timestamps. Each one accepts only
//! what it supports and reports anything else as an error instead of guessing.

use percent_encoding::percent_decode_str;
use serde_json::Value;

/// Scale of [`parse_amount`]: amounts are compared in millionths, exactly.
pub(crate) const AMOUNT_SCALE: i128 = 1_000_000;

/// Parses a decimal amount ("12", "-0.5", "1234.567890") into millionths; no floats involved.
pub(crate) fn parse_amount(text: &str) -> Option<i128> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || whole.len() > 20
    {
        return None;
    }
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut frac_value: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..6 {
        frac_value *= 10;
    }
    let value = whole.checked_mul(AMOUNT_SCALE)?.checked_add(frac_value)?;
    Some(if negative { -value } else { value })
}

/// An amount from JSON: a number (its shortest decimal form) or a numeric string.
pub(crate) fn json_amount(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => parse_amount(&n.to_string()),
        Value::String(s) => parse_amount(s),
        _ => None,
    }
}

/// Renders millionths back as a decimal string with at least two decimals.
pub(crate) fn format_amount(value: i128) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let whole = abs / 1_000_000;
    let mut frac = format!("{:06}", abs % 1_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{whole}.{frac}")
}

/// Decodes `a=1&b=x%20y` (also `+` as space, as forms and OAuth 1.0a do).
pub(crate) fn decode_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// Percent-decodes one component, `+` meaning space.
pub(crate) fn decode_component(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// The first value of a query parameter.
pub(crate) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One `Field eq value` comparison of an OData `$filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Eq {
    pub(crate) field: String,
    pub(crate) value: String,
}

/// Parses the supported `$filter` subset: `Field eq 'text'` or `Field eq 123`, joined by `and`.
pub(crate) fn parse_filter(filter: &str) -> Result<Vec<Eq>, String> {
    let mut out = Vec::new();
    let mut rest = filter.trim();
    loop {
        let (field, after) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("bad filter: {filter}"))?;
        let after = after.trim_start();
        let after = after
            .strip_prefix("eq ")
            .ok_or_else(|| format!("only 'eq' comparisons are supported: {filter}"))?
            .trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('\'') {
            // '' is an escaped quote inside an OData string literal.
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|(_, c)| *c) == Some('\'') {
                        value.push('\'');
                        chars.next();
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                value.push(c);
            }
            let end = end.ok_or_else(|| format!("unterminated string in filter: {filter}"))?;
            (value, &quoted[end..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        if !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad field name in filter: {field}"));
        }
        out.push(Eq {
            field: field.to_owned(),
            value,
        });
        let remaining = remaining.trim();
        if remaining.is_empty() {
            return Ok(out);
        }
        rest = remaining
            .strip_prefix("and ")
            .ok_or_else(|| format!("only 'and' is supported between comparisons: {filter}"))?
            .trim_start();
    }
}

/// Whether a JSON record matches all comparisons (string compare; numbers by their text).
pub(crate) fn matches(record: &Value, filter: &[Eq]) -> bool {
    filter.iter().all(|eq| match record.get(&eq.field) {
        Some(Value::String(s)) => s == &eq.value,
        Some(Value::Number(n)) => n.to_string() == eq.value,
        Some(Value::Bool(b)) => b.to_string() == eq.value,
        _ => false,
    })
}

/// Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF or LF).
pub(crate) fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".to_owned());
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    rows.retain(|r| !(r.len() == 1 && r.first().is_some_and(String::is_empty)));
    Ok(rows)
}

/// Escapes text for XML content and attribute values.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// RFC 3339 UTC timestamp of a millisecond epoch time.
pub(crate) fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact() {
        assert_eq!(parse_amount("10.10"), Some(10_100_000));
        assert_eq!(parse_amount("-0.000001"), Some(-1));
        assert_eq!(parse_amount(".5"), Some(500_000));
        assert_eq!(parse_amount("1e3"), None);
        assert_eq!(parse_amount("1.2345678"), None);
        assert_eq!(format_amount(10_100_000), "10.10");
        assert_eq!(format_amount(-1), "-0.000001");
    }

    #[test]
    fn filters() {
        let f = parse_filter("Description eq 'it''s' and LineNumber eq 2").unwrap_or_default();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].value, "it's");
        assert_eq!(f[1].value, "2");
        assert!(parse_filter("A ne 'x'").is_err());
        assert!(parse_filter("A eq 'x' or B eq 'y'").is_err());
    }

    #[test]
    fn csv() {
        let rows = parse_csv("a,\"b,c\",\"d\"\"e\"\r\n1,2,3\n").unwrap_or_default();
        assert_eq!(rows, vec![vec!["a", "b,c", "d\"e"], vec!["1", "2", "3"]]);
        assert!(parse_csv("\"open").is_err());
    }
}
