//! Reading a secret named by a [`SecretRef`], at the moment it is used.
//!
//! The registry never holds secret values: dispatchers call [`read_secret`] when they build a
//! request, so rotating a token file or variable needs no reload. Errors name the variable or
//! file, never the value.

use std::ffi::OsString;

use crate::config::SecretRef;
use crate::error::TenantsError;

/// Reads a secret from the process environment or its file; a trailing newline (`\n` or
/// `\r\n`) is trimmed, so `echo token > file` works. An empty secret is an error.
pub fn read_secret(secret: &SecretRef) -> Result<String, TenantsError> {
    read_secret_with_env(secret, |name| std::env::var_os(name))
}

/// [`read_secret`] with an explicit environment lookup, so tests (and callers holding an
/// environment map) need not touch the process environment.
pub fn read_secret_with_env(
    secret: &SecretRef,
    env: impl FnOnce(&str) -> Option<OsString>,
) -> Result<String, TenantsError> {
    let (value, from) = match secret {
        SecretRef::Env { env: var } => {
            let raw = env(var).ok_or_else(|| TenantsError::SecretEnv {
                var: var.clone(),
                reason: "not set",
            })?;
            // `VarError::NotUnicode` would carry the value; report only the variable name.
            let value = raw.into_string().map_err(|_| TenantsError::SecretEnv {
                var: var.clone(),
                reason: "not valid unicode",
            })?;
            (value, format!("environment variable {var}"))
        }
        SecretRef::File { file } => {
            let value =
                std::fs::read_to_string(file).map_err(|source| TenantsError::SecretFile {
                    path: file.clone(),
                    source,
                })?;
            (value, format!("file {}", file.display()))
        }
    };
    let trimmed = value
        .strip_suffix('\n')
        .map_or(value.as_str(), |v| v.strip_suffix('\r').unwrap_or(v));
    if trimmed.is_empty() {
        return Err(TenantsError::SecretEmpty { from });
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const VALUE: &str = "whsec_c2VjcmV0LXZhbHVlLWRvLW5vdC1sZWFr";

    fn env_ref(name: &str) -> SecretRef {
        SecretRef::Env { env: name.into() }
    }

    fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn reads_an_env_secret_trimming_one_trailing_newline() {
        let env = fake_env(&[
            ("A", VALUE),
            ("B", "tok\n"),
            ("C", "tok\r\n"),
            ("D", " tok\n\n"),
        ]);
        assert_eq!(read_secret_with_env(&env_ref("A"), &env).unwrap(), VALUE);
        assert_eq!(read_secret_with_env(&env_ref("B"), &env).unwrap(), "tok");
        assert_eq!(read_secret_with_env(&env_ref("C"), &env).unwrap(), "tok");
        assert_eq!(read_secret_with_env(&env_ref("D"), &env).unwrap(), " tok\n");
    }

    #[test]
    fn reads_a_file_secret_trimming_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{VALUE}\n")).unwrap();
        let secret = SecretRef::File { file: path };
        assert_eq!(read_secret(&secret).unwrap(), VALUE);
    }

    #[test]
    fn a_missing_env_secret_names_the_variable() {
        let err = read_secret_with_env(&env_ref("ACME_TOKEN"), fake_env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read secret from environment variable ACME_TOKEN: not set"
        );
    }

    #[test]
    fn a_missing_file_secret_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.token");
        let err = read_secret(&SecretRef::File { file: path.clone() }).unwrap_err();
        assert!(matches!(&err, TenantsError::SecretFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn empty_secrets_are_rejected_without_the_value() {
        let env = fake_env(&[("EMPTY", "\n")]);
        let err = read_secret_with_env(&env_ref("EMPTY"), env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret from environment variable EMPTY is empty"
        );
    }

    /// Every error path renders (Display, Debug and the whole source chain) without the value.
    #[test]
    fn errors_never_contain_the_secret_value() {
        fn full_text(err: &TenantsError) -> String {
            let mut text = format!("{err} {err:?}");
            let mut source = std::error::Error::source(err);
            while let Some(e) = source {
                text.push_str(&format!(" {e} {e:?}"));
                source = e.source();
            }
            text
        }

        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            // Not valid UTF-8; `VarError::NotUnicode` would echo these bytes.
            let mut raw = VALUE.as_bytes().to_vec();
            raw.push(0xff);
            let env = move |_: &str| Some(OsString::from_vec(raw.clone()));
            let err = read_secret_with_env(&env_ref("BAD"), env).unwrap_err();
            assert!(err.to_string().contains("not valid unicode"), "{err}");
            assert!(!full_text(&err).contains(VALUE), "{}", full_text(&err));
            assert!(!full_text(&err).contains("c2VjcmV0"), "{}", full_text(&err));
        }

        // A file that is not UTF-8: the I/O error must not quote the content.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("binary.token");
        let mut bytes = VALUE.as_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        std::fs::write(&path, bytes).unwrap();
        let err = read_secret(&SecretRef::File { file: path }).unwrap_err();
        assert!(matches!(&err, TenantsError::SecretFile { .. }), "{err:?}");
        assert!(!full_text(&err).contains("c2VjcmV0"), "{}", full_text(&err));
    }

    #[test]
    fn secret_refs_debug_print_the_reference_only() {
        let debug = format!("{:?}", env_ref("ACME_TOKEN"));
        assert_eq!(debug, r#"Env { env: "ACME_TOKEN" }"#);
    }
}
