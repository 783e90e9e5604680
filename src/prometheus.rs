//! A writer for the Prometheus text exposition format, version 0.0.4.
//!
//! Each metric family is announced with its `# HELP` and `# TYPE` lines and followed by all
//! of its samples, `name{label="value",...} value`, one per line. Label values and help texts
//! are escaped as the format requires. Histograms are written from per-bucket counts and come
//! out cumulative, ending in `le="+Inf"`, with `_sum` and `_count`.

use std::fmt::Write as _;

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What kind of metric a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label names and values of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// The text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts a family: its samples must follow before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
    }

    /// One sample of an integer counter or gauge.
    pub fn sample(&mut self, name: &str, labels: Labels, value: u64) {
        self.name_and_labels(name, labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// One histogram: `buckets[i]` counts observations up to `bounds[i]` (and above the
    /// bound before); the one extra bucket counts those above every bound. `sum` is in the
    /// unit of the bounds.
    pub fn histogram(&mut self, name: &str, labels: Labels, bounds: &[f64], buckets: &[u64], sum: f64) {
        debug_assert_eq!(bounds.len() + 1, buckets.len());
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in buckets.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            self.name_and_labels(&bucket, labels, Some(&le));
            let _ = writeln!(self.text, " {cumulative}");
        }
        self.name_and_labels(&format!("{name}_sum"), labels, None);
        let _ = writeln!(self.text, " {sum}");
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.text
    }

    fn name_and_labels(&mut self, name: &str, labels: Labels, le: Option<&str>) {
        self.text.push_str(name);
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.text.push('{');
        let le = le.map(|le| ("le", le));
        for (i, (label, value)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            self.text.push_str(label);
            self.text.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    c => self.text.push(c),
                }
            }
            self.text.push('"');
        }
        self.text.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_announce_themselves_and_values_are_escaped() {
        let mut out = Exposition::default();
        out.family(
            "shoal_requests_total",
            Kind::Counter,
            "Responses sent.\nBy class.",
        );
        out.sample(
            "shoal_requests_total",
            &[("route", "/a\"b\\c\nd"), ("code", "2xx")],
            7,
        );
        out.family("shoal_up", Kind::Gauge, "Up.");
        out.sample("shoal_up", &[], 1);
        assert_eq!(
            out.finish(),
            "# HELP shoal_requests_total Responses sent.\\nBy class.\n# TYPE shoal_requests_total counter\n\
             shoal_requests_total{route=\"/a\\\"b\\\\c\\nd\",code=\"2xx\"} 7\n\
             # HELP shoal_up Up.\n# TYPE shoal_up gauge\nshoal_up 1\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_inf() {
        let mut out = Exposition::default();
        out.family("lat_seconds", Kind::Histogram, "Latency.");
        out.histogram(
            "lat_seconds",
            &[("upstream", "app")],
            &[0.005, 0.5],
            &[2, 0, 3],
            1.25,
        );
        assert_eq!(
            out.finish(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{upstream=\"app\",le=\"0.005\"} 2\n\
             lat_seconds_bucket{upstream=\"app\",le=\"0.5\"} 2\n\
             lat_seconds_bucket{upstream=\"app\",le=\"+Inf\"} 5\n\
             lat_seconds_sum{upstream=\"app\"} 1.25\n\
             lat_seconds_count{upstream=\"app\"} 5\n"
        );
    }
}
