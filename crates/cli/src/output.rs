//! Output formats shared by commands that scripts read.

use clap::ValueEnum;

/// `--format`: human text or machine JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned text for people.
    Text,
    /// JSON (one document, or one object per line for streams).
    Json,
}
