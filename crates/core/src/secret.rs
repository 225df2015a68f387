//! Secrets by reference in configuration values: `${env:NAME}` (an environment variable of the
//! process) or `${file:PATH}` (a file, trailing newline trimmed, e.g. a mounted Kubernetes
//! Secret). A value that is not a reference is itself. References are resolved where the value
//! is used (a Kafka client is built), so configuration dumps and logs show the reference, and
//! errors name the reference, never the content.

use std::fmt;

/// Why a reference did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    reference: String,
    reason: String,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "secret reference {}: {}", self.reference, self.reason)
    }
}

impl std::error::Error for SecretError {}

/// Whether a value is a `${env:...}` or `${file:...}` reference.
pub fn is_reference(value: &str) -> bool {
    split(value).is_some()
}

fn split(value: &str) -> Option<(&str, &str)> {
    let inner = value.strip_prefix("${")?.strip_suffix('}')?;
    let (kind, target) = inner.split_once(':')?;
    matches!(kind, "env" | "file").then_some((kind, target))
}

/// The value, with a reference replaced by what it names; `lookup` reads the environment
/// (callers pass `std::env::var` or an explicit map).
pub fn resolve_with(
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, SecretError> {
    let Some((kind, target)) = split(value) else {
        return Ok(value.to_owned());
    };
    let fail = |reason: String| SecretError {
        reference: value.to_owned(),
        reason,
    };
    match kind {
        "env" => lookup(target).ok_or_else(|| fail("the variable is not set".to_owned())),
        _ => std::fs::read_to_string(target)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| fail(format!("cannot read the file: {e}"))),
    }
}

/// [`resolve_with`] over the process environment.
pub fn resolve(value: &str) -> Result<String, SecretError> {
    resolve_with(value, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_and_plain_values_pass_through() {
        let dir = std::env::temp_dir().join(format!("lf-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let lookup = |name: &str| (name == "KAFKA_PW").then(|| "from-env".to_owned());
        assert_eq!(resolve_with("plain", lookup).unwrap(), "plain");
        assert_eq!(resolve_with("${env:KAFKA_PW}", lookup).unwrap(), "from-env");
        let by_file = format!("${{file:{}}}", file.display());
        assert_eq!(resolve_with(&by_file, lookup).unwrap(), "s3cret");
        assert!(is_reference(&by_file) && !is_reference("${other:x}") && !is_reference("x"));
        let err = resolve_with("${env:MISSING}", lookup)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "secret reference ${env:MISSING}: the variable is not set"
        );
        std::fs::write(&file, "do-not-print").unwrap();
        std::fs::remove_file(&file).unwrap();
        let err = resolve_with(&by_file, lookup).unwrap_err().to_string();
        assert!(err.contains("cannot read the file") && !err.contains("do-not-print"));
    }
}
