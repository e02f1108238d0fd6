//! The results of one benchmark run, as written to `bench/results/<timestamp>.json` and read
//! back to render reports. Every value of every run is kept (not just summaries), and a peer
//! that was not measured says why, so a report can never fill a gap with old numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::stats::Summary;

/// One invocation of the harness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The command line that produced it.
    pub command: String,
    /// Start time, UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    /// End time, UTC.
    pub finished: String,
    /// Whether `--quick` shortened the measurements.
    pub quick: bool,
    /// Runs per measurement.
    pub runs: usize,
    /// Where the machine came from.
    pub machine: Machine,
    /// Where sender and receiver threads ran.
    pub placement: String,
    /// The scenarios, in the order they ran.
    pub scenarios: Vec<Scenario>,
}

/// One scenario: the same measurements on several datapaths ("columns").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    /// Short id (the subcommand name).
    pub id: String,
    /// Heading for the report.
    pub title: String,
    /// The topology and traffic, in a sentence or two.
    pub setup: String,
    /// The datapaths compared, in display order.
    pub columns: Vec<Column>,
    /// The column ratios are taken against.
    pub reference: Option<String>,
    /// The measured quantities.
    pub metrics: Vec<Metric>,
    /// Latency distributions to plot.
    pub cdfs: Vec<Cdf>,
    /// Remarks that belong next to the table.
    pub notes: Vec<String>,
}

/// A datapath in a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    /// Id (`kernel`, `ovs`, `podswitch`, ...).
    pub id: String,
    /// Heading.
    pub label: String,
    /// Whether it was measured.
    pub status: ColumnStatus,
}

/// Whether a column was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ColumnStatus {
    /// Measured (its values are in the metrics).
    Measured,
    /// Not measured, on purpose.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Tried and failed.
    Failed {
        /// The error.
        error: String,
    },
}

/// Which direction is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Throughput-like.
    Higher,
    /// Latency- or cost-like.
    Lower,
    /// Context only (e.g. offered load).
    Neither,
}

/// One measured quantity across columns, every run kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    /// Name, e.g. "TCP 1 stream".
    pub name: String,
    /// Unit, e.g. "Gbit/s".
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// Column id to the values of its runs, in run order.
    pub values: BTreeMap<String, Vec<f64>>,
    /// Column id to why this metric has no value there though the column was measured.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, String>,
}

impl Metric {
    /// An empty metric.
    pub fn new(name: &str, unit: &str, better: Better) -> Metric {
        Metric {
            name: name.to_string(),
            unit: unit.to_string(),
            better,
            values: BTreeMap::new(),
            missing: BTreeMap::new(),
        }
    }

    /// Appends one run's value for `column`.
    pub fn push(&mut self, column: &str, value: f64) {
        self.values.entry(column.to_string()).or_default().push(value);
    }

    /// The summary of `column`'s runs.
    pub fn summary(&self, column: &str) -> Option<Summary> {
        self.values.get(column).and_then(|v| Summary::of(v))
    }
}

/// A latency distribution per column: (latency in µs, fraction of samples at or below).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cdf {
    /// What was measured.
    pub title: String,
    /// Column id to its points, sorted by latency.
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Scenario {
    /// A scenario with no columns yet.
    pub fn new(id: &str, title: &str, setup: &str) -> Scenario {
        Scenario {
            id: id.to_string(),
            title: title.to_string(),
            setup: setup.to_string(),
            columns: Vec::new(),
            reference: None,
            metrics: Vec::new(),
            cdfs: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a column.
    pub fn column(&mut self, id: &str, label: &str, status: ColumnStatus) {
        self.columns.push(Column { id: id.to_string(), label: label.to_string(), status });
    }

    /// The column with `id`.
    pub fn column_mut(&mut self, id: &str) -> Option<&mut Column> {
        self.columns.iter_mut().find(|c| c.id == id)
    }

    /// The metric called `name`, created (with `unit` and `better`) on first use.
    pub fn metric(&mut self, name: &str, unit: &str, better: Better) -> &mut Metric {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return &mut self.metrics[i];
        }
        self.metrics.push(Metric::new(name, unit, better));
        self.metrics.last_mut().expect("just pushed")
    }

    /// Marks `column` failed (keeping the first error) and drops nothing already measured.
    pub fn fail(&mut self, column: &str, error: String) {
        if let Some(c) = self.column_mut(column) {
            if !matches!(c.status, ColumnStatus::Failed { .. }) {
                c.status = ColumnStatus::Failed { error };
            }
        }
    }

    /// Whether `column` is still to be measured.
    pub fn measuring(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.id == column && c.status == ColumnStatus::Measured)
    }
}
