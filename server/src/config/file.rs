//! The server-wide keys of the config file, read into the contract's [`ServerFile`] (the
//! struct the operator writes), reporting every bad key rather than the first one.

use herald_crds::contract::ServerFile;

/// Reads the file's server-wide keys (the table without `apps`). Unknown keys and values of
/// the wrong type are errors, each reported with its key; the keys that are fine still count.
pub(super) fn read(errors: &mut Vec<String>, mut table: toml::Table) -> ServerFile {
    if let Ok(file) = table.clone().try_into::<ServerFile>() {
        return file;
    }
    // One key at a time, to name every bad one.
    let mut bad = Vec::new();
    for (key, value) in &table {
        let one = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = one.try_into::<ServerFile>() {
            if e.message().starts_with("unknown field") {
                errors.push(format!("{key}: unknown key"));
            } else {
                errors.push(format!("{key}: invalid value {value}: {}", e.message()));
            }
            bad.push(key.clone());
        }
    }
    for key in bad {
        table.remove(&key);
    }
    table.try_into().unwrap_or_default()
}
