//! Configuration: TOML file → serde structs → `validate()` → typed [`Settings`].
//!
//! Config flows one way: `main` reads the file (or takes the embedded default), applies
//! command-line [`Overrides`], validates, and hands `Settings` to `serve::run`. Nothing
//! reads files or the environment after that, except a reload the operator asks for
//! (`crate::reload`), which runs this same path again.
//!
//! `config/turnpike.toml` documents every key with its default and *is* the default: it is
//! compiled in as [`EMBEDDED_DEFAULT`], and [`raw::RawConfig::default`] equals it (tested),
//! so a key left out of a file means the same as in the embedded one.

mod error;
mod overrides;
pub mod raw;
mod settings;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Origin};
pub use overrides::Overrides;
pub use settings::*;

use error::{line_at, KeyIndex};
use raw::RawConfig;
use validate::{Ctx, FlagMap};

/// `config/turnpike.toml`, compiled in: what `turnpike serve` runs on without `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/turnpike.toml");

/// A parsed (not yet validated) configuration file and where it came from.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    origin: Origin,
    raw: RawConfig,
    index: KeyIndex,
}

impl ConfigFile {
    /// The embedded default.
    pub fn embedded() -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Origin::Embedded, EMBEDDED_DEFAULT)
    }

    /// Read and parse `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let origin = Origin::File(path.to_path_buf());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.to_string(),
            line: None,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        ConfigFile::parse(origin, &text)
    }

    /// Parse TOML `text`; errors name `origin`, the line and the key.
    pub fn parse(origin: Origin, text: &str) -> Result<ConfigFile, ConfigError> {
        let index = KeyIndex::scan(text);
        // Parse once untyped to separate syntax errors (no key to blame, or the key on the
        // offending line) from schema errors (unknown key, wrong type), which toml reports
        // with a span inside the offending key or value.
        if let Err(e) = toml::from_str::<toml::Table>(text) {
            let line = e.span().map(|s| line_at(text, s.start));
            return Err(ConfigError {
                origin: origin.to_string(),
                line,
                key: line
                    .and_then(|l| index.key_on_line(l))
                    .unwrap_or_default()
                    .to_string(),
                reason: format!("not valid TOML: {}", e.message().trim()),
            });
        }
        let raw = toml::from_str::<RawConfig>(text).map_err(|e| {
            let span = e.span();
            ConfigError {
                origin: origin.to_string(),
                line: span.as_ref().map(|s| line_at(text, s.start)),
                key: span
                    .and_then(|s| index.key_at(s.start))
                    .unwrap_or_default()
                    .to_string(),
                reason: e.message().trim().to_string(),
            }
        })?;
        Ok(ConfigFile { origin, raw, index })
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The file's values as written.
    pub fn raw(&self) -> &RawConfig {
        &self.raw
    }

    /// Validate the file as it is.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let flags = FlagMap::new();
        validate::validate(&self.raw, &self.ctx(&flags))
    }

    /// Apply `overrides`, then validate; errors about overridden keys name the flag.
    pub fn validate_with(&self, overrides: &Overrides) -> Result<Settings, ConfigError> {
        let mut raw = self.raw.clone();
        let flags = overrides.apply(&mut raw)?;
        validate::validate(&raw, &self.ctx(&flags))
    }

    fn ctx<'a>(&'a self, flags: &'a FlagMap) -> Ctx<'a> {
        Ctx {
            origin: &self.origin,
            index: &self.index,
            flags,
        }
    }
}

/// Start-up in one call: `path` or the embedded default, plus overrides, validated.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Settings, ConfigError> {
    let file = match path {
        Some(path) => ConfigFile::read(path)?,
        None => ConfigFile::embedded()?,
    };
    file.validate_with(overrides)
}
