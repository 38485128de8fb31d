//! Prometheus exposition for `/metrics`, shared by the broker and the
//! verifier.
//!
//! Both read their metrics from state they already keep (the feed, the
//! propagation tracker, each verifier's status) at scrape time, so a scrape
//! builds a fresh [`Scrape`]: each metric is registered with its current
//! samples in a `prometheus_client` registry, which writes the text
//! (OpenMetrics: `# HELP`, `# TYPE`, counters with a `_total` suffix, a
//! final `# EOF`). Label values are escaped here, since
//! `prometheus_client` writes them as given and a verifier id, a region or
//! a withheld reason must not be able to break the exposition.
//!
//! [`Scrape::finish_text`] writes the same metrics in the classic
//! Prometheus text format (0.0.4), for clients that ask for it (and for
//! `promtool check metrics`): a counter's `# HELP` and `# TYPE` name it
//! with its `_total`, and there is no `# EOF`.

use std::collections::HashMap;
use std::fmt::Write;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder, LabelValueEncoder,
    MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::registry::Registry;

/// The content type of what [`Scrape::finish`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of what [`Scrape::finish_text`] returns.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels of one sample: names (fixed by the code) and values (escaped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels(Vec<(&'static str, Escaped)>);

impl Labels {
    pub fn new() -> Self {
        Self::default()
    }

    /// These labels and one more.
    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        self.0.push((name, Escaped(value.to_string())));
        self
    }
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.as_slice().encode(encoder)
    }
}

/// A label value written with `\`, `"` and line feeds escaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Escaped(String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A sample's value: whole numbers print without a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self::from(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

/// A histogram's samples: per-bucket counts under each upper bound (the
/// last bound may be `f64::INFINITY`), their sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// One sample of a counter or a gauge.
fn encode_value(
    sample: &mut MetricEncoder,
    kind: MetricType,
    value: Value,
) -> Result<(), std::fmt::Error> {
    match (kind, value) {
        (MetricType::Counter, Value::Int(v)) => {
            sample.encode_counter::<NoLabelSet, _, u64>(&v.unsigned_abs(), None)
        }
        (MetricType::Counter, Value::Float(v)) => {
            sample.encode_counter::<NoLabelSet, _, u64>(&v, None)
        }
        (_, Value::Int(v)) => sample.encode_gauge(&v),
        (_, Value::Float(v)) => sample.encode_gauge(&v),
    }
}

/// One metric's samples, each with its labels.
#[derive(Debug)]
enum Samples {
    Values(MetricType, Vec<(Labels, Value)>),
    Histograms(Vec<(Labels, HistogramSample)>),
}

impl EncodeMetric for Samples {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Samples::Values(kind, rows) => {
                for (labels, value) in rows {
                    if labels.0.is_empty() {
                        encode_value(&mut encoder, *kind, *value)?;
                    } else {
                        encode_value(&mut encoder.encode_family(labels)?, *kind, *value)?;
                    }
                }
            }
            Samples::Histograms(rows) => {
                let no_exemplars: Option<&HashMap<usize, Exemplar<NoLabelSet, f64>>> = None;
                for (labels, histogram) in rows {
                    let buckets: Vec<(f64, u64)> = histogram
                        .buckets
                        .iter()
                        .map(|&(bound, n)| (if bound.is_finite() { bound } else { f64::MAX }, n))
                        .collect();
                    encoder.encode_family(labels)?.encode_histogram(
                        histogram.sum,
                        histogram.count,
                        &buckets,
                        no_exemplars,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Samples::Values(kind, _) => *kind,
            Samples::Histograms(_) => MetricType::Histogram,
        }
    }
}

/// Help text as the registry wants it: it adds the final full stop.
fn help_text(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

/// The metrics of one scrape, built metric by metric.
#[derive(Debug, Default)]
pub struct Scrape {
    registry: Registry,
    /// Names of the counters registered, without `_total`.
    counters: Vec<String>,
}

impl Scrape {
    pub fn new() -> Self {
        Self::default()
    }

    /// A gauge with one unlabelled sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Into<Value>) {
        self.gauges(name, help, [(Labels::new(), value.into())]);
    }

    /// A gauge with one sample per label set.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, Value)>,
    ) {
        let samples = Samples::Values(MetricType::Gauge, samples.into_iter().collect());
        self.registry.register(name, help_text(help), samples);
    }

    /// A counter with one unlabelled sample; `name` without `_total`,
    /// which the exposition adds.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.counters(name, help, [(Labels::new(), value.into())]);
    }

    /// A counter with one sample per label set.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, Value)>,
    ) {
        let samples = Samples::Values(MetricType::Counter, samples.into_iter().collect());
        self.registry.register(name, help_text(help), samples);
        self.counters.push(name.to_owned());
    }

    /// A histogram with one set of buckets per label set.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, HistogramSample)>,
    ) {
        let samples = Samples::Histograms(samples.into_iter().collect());
        self.registry.register(name, help_text(help), samples);
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The exposition in the classic Prometheus text format.
    pub fn finish_text(self) -> String {
        let counters: std::collections::HashSet<String> = self.counters.iter().cloned().collect();
        let open_metrics = self.finish();
        let mut text = String::with_capacity(open_metrics.len());
        for line in open_metrics.lines() {
            if line == "# EOF" {
                continue;
            }
            let comment = ["# HELP ", "# TYPE "]
                .into_iter()
                .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
            match comment {
                Some((prefix, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let total = if counters.contains(name) {
                        "_total"
                    } else {
                        ""
                    };
                    let _ = writeln!(text, "{prefix}{name}{total} {tail}");
                }
                None => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_whole_numbers_stay_whole() {
        let mut scrape = Scrape::new();
        scrape.gauges(
            "m",
            "A metric.",
            [(
                Labels::new().with("reason", "a \"b\"\nc\\"),
                Value::from(1u64),
            )],
        );
        scrape.gauge("f", "A fraction.", 0.25);
        scrape.counter("c", "A counter.", 7);
        let text = scrape.finish();
        assert!(
            text.contains("# HELP m A metric.\n# TYPE m gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("m{reason=\"a \\\"b\\\"\\nc\\\\\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("f 0.25\n"), "{text}");
        assert!(text.contains("# TYPE c counter\nc_total 7\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_text_format_names_counters_with_their_total_and_has_no_eof() {
        let mut scrape = Scrape::new();
        scrape.counter("c", "A counter.", 7);
        scrape.gauge("g", "A gauge.", 1u64);
        let text = scrape.finish_text();
        assert!(
            text.contains("# HELP c_total A counter.\n# TYPE c_total counter\nc_total 7\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE g gauge\ng 1\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn histograms_are_cumulative_and_end_at_infinity() {
        let mut scrape = Scrape::new();
        let sample = HistogramSample {
            buckets: vec![(0.002, 0), (0.005, 1), (f64::INFINITY, 2)],
            sum: 1.5,
            count: 3,
        };
        scrape.histograms(
            "d",
            "Delays.",
            [(Labels::new().with("region", "eu"), sample)],
        );
        let text = scrape.finish();
        assert!(
            text.contains("d_bucket{le=\"0.002\",region=\"eu\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("d_bucket{le=\"0.005\",region=\"eu\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_bucket{le=\"+Inf\",region=\"eu\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("d_count{region=\"eu\"} 3\n"), "{text}");
        assert!(text.contains("d_sum{region=\"eu\"} 1.5\n"), "{text}");
    }
}
