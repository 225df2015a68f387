//! Wall-clock readings and error rendering every crate shares.

/// Microseconds since the Unix epoch, wall clock (0 before the epoch). For bookkeeping
/// columns (`recorded_at`, `updated_at`, outbox due times), never for ledger data, which
/// carries the event's own business time.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// An error and its sources joined with `: `, for one log field or one dead-letter column.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_past_2020_and_chains_name_every_source() {
        assert!(now_micros() > 1_577_836_800_000_000);
        #[derive(Debug)]
        struct Outer(std::fmt::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("rendering failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(
            error_chain(&Outer(std::fmt::Error)),
            format!("rendering failed: {}", std::fmt::Error)
        );
    }
}
