//! Compatibility levels and the Avro checks behind them.
//!
//! Avro resolution has a writer (the schema the bytes were written with) and a reader (the schema
//! a consumer decodes with). BACKWARD means consumers upgraded to the new schema can still read
//! data written with the old one: `can_read(writer = old, reader = new)`. FORWARD means consumers
//! still on the old schema can read data written with the new one: `can_read(writer = new,
//! reader = old)`. FULL is both. The plain levels compare against the latest live version only,
//! the `_TRANSITIVE` ones against every live version.
//!
//! apache-avro answers `Full`, `Partial` or an error. `Partial` means some values resolve and some
//! do not (an enum symbol or union branch the reader lacks); the Java implementation Confluent
//! uses calls that incompatible, so this module does too.

use std::fmt;

use apache_avro::Schema;
use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

/// A Confluent compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CompatibilityLevel {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    /// The global level until someone sets one; Confluent's default.
    pub(crate) const DEFAULT: Self = Self::Backward;

    const ALL: [Self; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    /// The Confluent name, upper case.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Parses a level name case-insensitively, as Confluent does.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(name))
    }

    fn is_transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    /// The live versions (oldest first) a registration is checked against: none for NONE, the
    /// latest for the plain levels, all of them for the transitive ones.
    pub(crate) fn versions_to_check<T>(self, live: &[T]) -> &[T] {
        if self == Self::None {
            &[]
        } else if self.is_transitive() {
            live
        } else {
            match live.split_last() {
                Some((latest, _)) => std::slice::from_ref(latest),
                None => &[],
            }
        }
    }

    /// The new schema must read what older versions wrote.
    fn checks_backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Older versions must read what the new schema writes.
    fn checks_forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An earlier live version of the subject.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EarlierVersion<'a> {
    pub(crate) version: i64,
    pub(crate) text: &'a str,
    pub(crate) schema: &'a Schema,
}

/// Checks a candidate against earlier versions in the direction(s) `level` names and returns
/// the Confluent-style messages explaining every failure; empty means compatible.
///
/// Which versions to pass is the caller's choice: [`CompatibilityLevel::versions_to_check`] for a
/// registration, a single version for Confluent's per-version compatibility test (where
/// transitivity does not apply because there is only one version).
pub(crate) fn check(
    level: CompatibilityLevel,
    candidate: &Schema,
    earlier: &[EarlierVersion<'_>],
) -> Vec<String> {
    // Newest first, like Confluent's messages.
    let mut messages = Vec::new();
    for version in earlier.iter().rev() {
        messages.extend(check_pair(level, candidate, version));
    }
    if !messages.is_empty() {
        messages.push(format!("{{compatibility: '{level}'}}"));
    }
    messages
}

fn check_pair(
    level: CompatibilityLevel,
    candidate: &Schema,
    earlier: &EarlierVersion<'_>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if level.checks_backward()
        && let Some(problem) = resolve(earlier.schema, candidate, Direction::Backward)
    {
        problems.push(problem);
    }
    if level.checks_forward()
        && let Some(problem) = resolve(candidate, earlier.schema, Direction::Forward)
    {
        problems.push(problem);
    }
    if !problems.is_empty() {
        problems.push(format!("{{oldSchemaVersion: {}}}", earlier.version));
        problems.push(format!("{{oldSchema: '{}'}}", earlier.text));
    }
    problems
}

/// Which schema is the reader in a check, for the wording of messages.
#[derive(Debug, Clone, Copy)]
enum Direction {
    /// The new schema reads data written with the old one.
    Backward,
    /// The old schema reads data written with the new one.
    Forward,
}

impl Direction {
    fn reader(self) -> &'static str {
        match self {
            Self::Backward => "new",
            Self::Forward => "old",
        }
    }

    fn writer(self) -> &'static str {
        match self {
            Self::Backward => "old",
            Self::Forward => "new",
        }
    }
}

/// `None` when `reader` can read everything `writer` writes, else a Confluent-style message.
fn resolve(writer: &Schema, reader: &Schema, direction: Direction) -> Option<String> {
    let (error_type, description) = match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => return None,
        Ok(Compatibility::Partial) => (
            "MISSING_UNION_BRANCH_OR_ENUM_SYMBOL",
            format!(
                "Some values written with the {} schema cannot be read with the {} schema: an \
                 enum symbol or union branch is missing from the {} schema",
                direction.writer(),
                direction.reader(),
                direction.reader()
            ),
        ),
        Err(err) => describe(&err, direction),
    };
    Some(format!(
        "{{errorType:'{error_type}', description:'{description}'}}"
    ))
}

/// Flattens apache-avro's nested field errors into a path and a one-line description.
fn describe(err: &CompatibilityError, direction: Direction) -> (&'static str, String) {
    let (reader, writer) = (direction.reader(), direction.writer());
    let mut path = String::new();
    let mut leaf = err;
    while let CompatibilityError::FieldTypeMismatch(field, inner) = leaf {
        path.push_str("/fields/");
        path.push_str(field);
        leaf = inner;
    }
    let at = if path.is_empty() {
        "/".to_owned()
    } else {
        path.clone()
    };
    match leaf {
        CompatibilityError::MissingDefaultValue(field) => (
            "READER_FIELD_MISSING_DEFAULT_VALUE",
            format!(
                "The field '{field}' at path '{path}/fields/{field}' in the {reader} schema has \
                 no default value and is missing in the {writer} schema"
            ),
        ),
        CompatibilityError::WrongType {
            writer_schema_type,
            reader_schema_type,
        } => (
            "TYPE_MISMATCH",
            format!(
                "The type (path '{at}') of a field in the {reader} schema ({}) does not match \
                 the {writer} schema ({})",
                kind_name(reader_schema_type),
                kind_name(writer_schema_type)
            ),
        ),
        CompatibilityError::NameMismatch {
            writer_name,
            reader_name,
        } => (
            "NAME_MISMATCH",
            format!(
                "The type name at path '{at}' in the {reader} schema ({reader_name}) does not \
                 match the {writer} schema ({writer_name})"
            ),
        ),
        CompatibilityError::MissingSymbols => (
            "MISSING_ENUM_SYMBOLS",
            format!(
                "The {reader} schema's enum at path '{at}' has none of the {writer} schema's \
                 symbols"
            ),
        ),
        CompatibilityError::MissingUnionElements
        | CompatibilityError::SchemaMismatchAllUnionElements => (
            "MISSING_UNION_BRANCH",
            format!(
                "The {reader} schema at path '{at}' has no union branch that can read the \
                 {writer} schema's type"
            ),
        ),
        CompatibilityError::FixedMismatch => (
            "FIXED_SIZE_MISMATCH",
            format!("The size of the fixed type at path '{at}' differs between the schemas"),
        ),
        other => ("TYPE_MISMATCH", format!("At path '{at}': {other}")),
    }
}

/// apache-avro puts a `{:#?}` dump of the schema into `WrongType`; the variant name is enough.
fn kind_name(debug_dump: &str) -> String {
    debug_dump
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Schema {
        Schema::parse_str(text).unwrap()
    }

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
    const ADD_REQUIRED: &str = r#"{"type":"record","name":"R","fields":[
        {"name":"a","type":"string"},{"name":"b","type":"long"}]}"#;
    const ADD_OPTIONAL: &str = r#"{"type":"record","name":"R","fields":[
        {"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null}]}"#;
    const DROP_A: &str = r#"{"type":"record","name":"R","fields":[]}"#;

    fn verdict(level: CompatibilityLevel, candidate: &str, history: &[&str]) -> Vec<String> {
        let parsed: Vec<Schema> = history.iter().map(|t| schema(t)).collect();
        let versions: Vec<EarlierVersion<'_>> = parsed
            .iter()
            .zip(history)
            .zip(1..)
            .map(|((schema, text), version)| EarlierVersion {
                version,
                text,
                schema,
            })
            .collect();
        check(
            level,
            &schema(candidate),
            level.versions_to_check(&versions),
        )
    }

    #[test]
    fn level_names_round_trip_case_insensitively() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(CompatibilityLevel::parse(level.as_str()), Some(level));
            assert_eq!(
                CompatibilityLevel::parse(&level.as_str().to_ascii_lowercase()),
                Some(level)
            );
        }
        assert_eq!(CompatibilityLevel::parse("SIDEWAYS"), None);
    }

    #[test]
    fn backward_rejects_a_new_required_field_and_accepts_an_optional_one() {
        let messages = verdict(CompatibilityLevel::Backward, ADD_REQUIRED, &[V1]);
        assert!(
            messages[0].contains("READER_FIELD_MISSING_DEFAULT_VALUE"),
            "{messages:?}"
        );
        assert!(messages[0].contains("'b'"), "{messages:?}");
        assert!(messages.iter().any(|m| m == "{oldSchemaVersion: 1}"));
        assert!(messages.iter().any(|m| m == "{compatibility: 'BACKWARD'}"));
        assert!(verdict(CompatibilityLevel::Backward, ADD_OPTIONAL, &[V1]).is_empty());
    }

    #[test]
    fn forward_is_the_mirror_image() {
        // Old readers ignore the new required field: forward compatible.
        assert!(verdict(CompatibilityLevel::Forward, ADD_REQUIRED, &[V1]).is_empty());
        // Dropping a field without default breaks old readers.
        assert!(!verdict(CompatibilityLevel::Forward, DROP_A, &[V1]).is_empty());
        // ...but the new reader can read old data.
        assert!(verdict(CompatibilityLevel::Backward, DROP_A, &[V1]).is_empty());
    }

    #[test]
    fn full_needs_both_directions() {
        assert!(!verdict(CompatibilityLevel::Full, ADD_REQUIRED, &[V1]).is_empty());
        assert!(!verdict(CompatibilityLevel::Full, DROP_A, &[V1]).is_empty());
        assert!(verdict(CompatibilityLevel::Full, ADD_OPTIONAL, &[V1]).is_empty());
        assert!(verdict(CompatibilityLevel::None, DROP_A, &[ADD_REQUIRED]).is_empty());
    }

    #[test]
    fn transitive_levels_look_at_every_live_version() {
        // v1 has no b, v2 dropped a; a candidate requiring a (without default) can read v1 but
        // not v2: BACKWARD only looks at v2, so it fails... use the other order instead.
        let with_a_default = r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"string","default":"x"}]}"#;
        // History: v1 = DROP_A (no fields), v2 = with_a_default. Candidate V1 requires `a`
        // without default: it reads v2 (which has a) but not v1.
        let history = [DROP_A, with_a_default];
        assert!(verdict(CompatibilityLevel::Backward, V1, &history).is_empty());
        let messages = verdict(CompatibilityLevel::BackwardTransitive, V1, &history);
        assert!(
            messages.iter().any(|m| m == "{oldSchemaVersion: 1}"),
            "{messages:?}"
        );
        assert!(
            !messages.iter().any(|m| m == "{oldSchemaVersion: 2}"),
            "{messages:?}"
        );
    }

    #[test]
    fn partial_compatibility_counts_as_incompatible() {
        let ab = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;
        let a = r#"{"type":"enum","name":"E","symbols":["A"]}"#;
        let messages = verdict(CompatibilityLevel::Backward, a, &[ab]);
        assert!(
            messages[0].contains("MISSING_UNION_BRANCH_OR_ENUM_SYMBOL"),
            "{messages:?}"
        );
        assert!(verdict(CompatibilityLevel::Backward, ab, &[a]).is_empty());
    }

    #[test]
    fn type_changes_name_the_field_path() {
        let long_a = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;
        let messages = verdict(CompatibilityLevel::Backward, long_a, &[V1]);
        assert!(messages[0].contains("TYPE_MISMATCH"), "{messages:?}");
        assert!(messages[0].contains("/fields/a"), "{messages:?}");
        assert!(
            messages[0].contains("(long)") && messages[0].contains("(string)"),
            "{messages:?}"
        );
    }

    #[test]
    fn no_history_is_always_compatible() {
        assert!(verdict(CompatibilityLevel::FullTransitive, V1, &[]).is_empty());
    }
}
