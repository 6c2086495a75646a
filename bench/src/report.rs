//! Results: a human table on stdout, then one JSON line for scripts.

use serde_json::{Map, Value};

/// One scenario's figures, in order.
#[derive(Default)]
pub struct Report {
    /// Set when the scenario's own bound was broken (`herald-bench` then exits with 1).
    pub failed: bool,
    scenario: String,
    rows: Vec<(String, Value)>,
}

impl Report {
    /// A report for `scenario`.
    pub fn new(scenario: &str) -> Self {
        Report { failed: false, scenario: scenario.to_owned(), rows: Vec::new() }
    }

    /// Adds a figure.
    pub fn add(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.rows.push((name.to_owned(), value.into()));
        self
    }

    /// Prints the table and the JSON line.
    pub fn print(&self) {
        println!("herald-bench {}", self.scenario);
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, value) in &self.rows {
            let shown = match value {
                Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or_default()),
                other => other.to_string(),
            };
            println!("  {name:<width$}  {shown}");
        }
        let mut json = Map::new();
        json.insert("scenario".into(), self.scenario.clone().into());
        for (name, value) in &self.rows {
            json.insert(name.clone(), value.clone());
        }
        println!("{}", Value::Object(json));
    }
}
