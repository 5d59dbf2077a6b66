//! The Prometheus text exposition format (0.0.4), written straight into one `String`: `/metrics`
//! writes a line per target, so a sample costs no allocation of its own.

use std::fmt::Write as _;

/// The content type of both `/metrics` and `/probe`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// A family's `# HELP` and `# TYPE` lines; its samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample line, its label values escaped as the format wants.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        for (i, (key, value)) in labels.iter().enumerate() {
            self.out.push(if i == 0 { '{' } else { ',' });
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value);
            self.out.push('"');
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// Text written elsewhere in the same format (the connection counters).
    pub fn push_raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value in the spellings Prometheus parses (`+Inf`, `-Inf`, `NaN`; Rust writes `inf`).
fn push_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_label_values_and_spell_special_values_as_prometheus_does() {
        let mut text = Text::new();
        text.family("probe_success", "gauge", "Whether it worked.");
        text.sample("probe_success", &[("target", "https://a.example/\"x\\\n"), ("region", "eu")], 1.0);
        text.sample("vantage_targets", &[], 0.25);
        text.sample("a", &[], f64::INFINITY);
        text.sample("b", &[], f64::NEG_INFINITY);
        text.sample("c", &[], f64::NAN);
        assert_eq!(
            text.finish(),
            "# HELP probe_success Whether it worked.\n# TYPE probe_success gauge\n\
             probe_success{target=\"https://a.example/\\\"x\\\\\\n\",region=\"eu\"} 1\n\
             vantage_targets 0.25\na +Inf\nb -Inf\nc NaN\n"
        );
    }
}
