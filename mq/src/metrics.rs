//! Reading the Prometheus text format the services serve at `/metrics`: just enough to find a sample
//! by name and labels.

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every sample of `text`; comments and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

/// The value of the sample `name` without labels (or the sum over its labels), if there is one.
pub fn total(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = samples.iter().filter(|s| s.name == name).peekable();
    found.peek()?;
    Some(found.map(|s| s.value).sum())
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `label="value",…}` → the pairs and what follows `}`; values may hold `\"`, `\\` and `\n`.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = text.split_once('=')?;
        let mut chars = after_key.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        text = &after_key[1 + end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels_and_comments_skipped() {
        let text = "# HELP x y\n# TYPE x counter\npublisher_messages_accepted_total 42\n\
                    consumer_queue_messages{queue=\"q \\\"1\\\"\",state=\"ready\"} 7\n\
                    consumer_queue_messages{queue=\"q.dead\",state=\"ready\"} 2\n";
        let samples = parse(text);
        assert_eq!(
            total(&samples, "publisher_messages_accepted_total"),
            Some(42.0)
        );
        assert_eq!(samples[1].label("queue"), Some("q \"1\""));
        assert_eq!(samples[1].label("state"), Some("ready"));
        assert_eq!(total(&samples, "consumer_queue_messages"), Some(9.0));
        assert_eq!(total(&samples, "missing"), None);
    }
}
