//! What one run measures and how long (the [`Plan`]), and the table of figures it fills: the median of each
//! figure's runs.

use std::time::Duration;

/// Sizes of one run.
pub struct Plan {
    pub quick: bool,
    /// `--publisher`: only the publisher's figures, for comparing its settings (`AMQP_CONNECTIONS=2
    /// bench --publisher`; the services inherit the environment).
    pub publisher_only: bool,
    /// `--writers`: only the consumer's batch-writer scaler against one writer.
    pub writers_only: bool,
    /// `--production`: only the services with the production overlay's settings, on the broker of
    /// `CLUSTER_AMQP_URL`.
    pub production_only: bool,
    /// `--traces`: only what exporting traces costs, against no export.
    pub traces_only: bool,
    pub runs: usize,
    pub raw_messages: usize,
    pub backlog: usize,
    pub http_duration: Duration,
}

impl Plan {
    pub fn from_args() -> Self {
        let publisher_only = std::env::args().any(|arg| arg == "--publisher");
        let writers_only = std::env::args().any(|arg| arg == "--writers");
        let production_only = std::env::args().any(|arg| arg == "--production");
        let traces_only = std::env::args().any(|arg| arg == "--traces");
        if std::env::args().any(|arg| arg == "--quick") {
            Self {
                quick: true,
                publisher_only,
                writers_only,
                production_only,
                traces_only,
                runs: 1,
                raw_messages: 5_000,
                backlog: 5_000,
                http_duration: Duration::from_secs(2),
            }
        } else {
            Self {
                quick: false,
                publisher_only,
                writers_only,
                production_only,
                traces_only,
                runs: 3,
                raw_messages: 50_000,
                backlog: 200_000,
                http_duration: Duration::from_secs(10),
            }
        }
    }
}

/// One figure of the table: the median of its runs.
struct Figure {
    name: String,
    unit: &'static str,
    runs: Vec<f64>,
}

impl Figure {
    fn median(&self) -> f64 {
        let mut sorted = self.runs.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
}

#[derive(Default)]
pub struct Table(Vec<Figure>);

impl Table {
    pub fn record(&mut self, name: impl Into<String>, unit: &'static str, value: f64) {
        let name = name.into();
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(figure) => figure.runs.push(value),
            None => self.0.push(Figure {
                name,
                unit,
                runs: vec![value],
            }),
        }
    }

    pub fn median(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|f| f.name == name)
            .map_or(f64::NAN, Figure::median)
    }

    pub fn print(&self) {
        println!(
            "\n{:<66} {:>12}  {:<10} runs",
            "measurement", "median", "unit"
        );
        for figure in &self.0 {
            let runs: Vec<String> = figure.runs.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "{:<66} {:>12.2}  {:<10} {}",
                figure.name,
                figure.median(),
                figure.unit,
                runs.join(" / ")
            );
        }
    }
}
