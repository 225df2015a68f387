/// What can go wrong inside the registry itself: opening the store, running the DDL, a query that
/// fails, or the HTTP server stopping on an I/O error.
///
/// Client mistakes (unknown subject, invalid schema, incompatible change) are not errors of the
/// service; they are Confluent replies and live in `crate::rejection`. A `RegistryError` that
/// reaches a handler becomes the Confluent store error (HTTP 500, error code 50001).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A credentials file could not be read or parsed (the message never holds a secret).
    #[error("registry credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The database URL names a scheme other than `sqlite:` or `postgres:`.
    #[error("unsupported database url scheme in {url:?} (expected sqlite: or postgres:)")]
    UnsupportedDatabaseUrl {
        /// The URL as configured, with any password removed.
        url: String,
    },
    /// The database could not be opened or connected to.
    #[error("cannot connect to the schema store at {url}")]
    Connect {
        /// The URL as configured, with any password removed.
        url: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Creating the tables failed.
    #[error("cannot create the schema store tables")]
    Migrate {
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// A query against the store failed.
    #[error("schema store query failed while {action}")]
    Store {
        /// What the registry was doing, for the log line.
        action: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Two registries raced for the same new id more often than the retry budget allows.
    #[error("could not allocate a schema id after {attempts} attempts")]
    IdAllocation {
        /// How many inserts were tried.
        attempts: u32,
    },
    /// A schema in the store no longer parses (it did when it was registered).
    #[error("stored schema {id} does not parse: {reason}")]
    CorruptSchema {
        /// The global id of the schema.
        id: i64,
        /// What the Avro parser said.
        reason: String,
    },
    /// A compatibility level in the store is not one this registry writes.
    #[error("stored compatibility level {name:?} for subject {subject:?} is not a valid level")]
    CorruptConfig {
        /// The subject ("" for the global level).
        subject: String,
        /// The stored value.
        name: String,
    },
    /// The HTTP server failed.
    #[error("schema registry http server failed")]
    Serve {
        /// The I/O error from the listener.
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// A closure for `map_err` that tags a driver error with what the registry was doing.
    pub(crate) fn store(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Store { action, source }
    }
}

/// The URL without its password, so it can go into messages and logs.
pub(crate) fn redact_url(url: &str) -> String {
    // scheme://user:password@host/... -> scheme://user:***@host/...
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/registry"),
            "postgres://app:***@db:5432/registry"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/postgres"),
            "postgres://postgres@127.0.0.1/postgres"
        );
        assert_eq!(
            redact_url("sqlite://reg.db?mode=rwc"),
            "sqlite://reg.db?mode=rwc"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn messages_are_lowercase_and_keep_the_source() {
        let err = RegistryError::Store {
            action: "reading a subject",
            source: sqlx::Error::RowNotFound,
        };
        let text = err.to_string();
        assert!(text.starts_with("schema store"));
        assert!(!text.ends_with('.'));
        assert!(std::error::Error::source(&err).is_some());
    }
}
