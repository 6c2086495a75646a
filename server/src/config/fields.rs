//! A typed reader of TOML tables that records every bad value with its path and reports the
//! keys nobody read as unknown.

use serde::de::DeserializeOwned;

/// Reads typed keys out of a TOML table, recording type errors with their path, and reports
/// whatever keys are left as unknown.
pub(super) struct Fields {
    table: toml::Table,
    pub(super) path: String,
    pub(super) errors: Vec<String>,
}

impl Fields {
    pub(super) fn new(table: toml::Table, path: &str) -> Self {
        Fields { table, path: path.to_owned(), errors: Vec::new() }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn take<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.table.remove(key)?;
        let shown = value.to_string();
        match value.try_into() {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = format!("{}: invalid value {shown}: {}", self.key_path(key), e.message());
                self.errors.push(msg);
                None
            }
        }
    }

    /// The type errors met so far, and every key nobody took.
    pub(super) fn finish(mut self) -> Vec<String> {
        let unknown: Vec<String> =
            self.table.keys().map(|k| format!("{}: unknown key", self.key_path(k))).collect();
        self.errors.extend(unknown);
        self.errors
    }
}
