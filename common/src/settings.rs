//! Reading settings from environment variables, the one mechanism both services' `config.rs` use.
//!
//! A service's configuration is a struct of groups, each the settings of one component. envy reads each
//! group on its own from the same variables (a field `batch_size` is `BATCH_SIZE`), with no flattening,
//! and the group's `Default` gives every variable that is not set. Because the groups serialise back to
//! the same names, the list of variables and the round trip come from the types: nothing keeps a second
//! list by hand.

use serde::{de::DeserializeOwned, Serialize};

/// The variables a configuration is read from: the process environment, or pairs a test gives.
pub struct Vars(Vec<(String, String)>);

/// One group of settings: read by envy, then completed with what envy cannot do.
pub trait Group: DeserializeOwned {
    /// Checks the rules within the group that types cannot state, and reads what is not a plain
    /// variable (token files); fails naming the variable.
    fn complete(self, _vars: &Vars) -> anyhow::Result<Self> {
        Ok(self)
    }
}

/// A service's whole configuration: a struct of [`Group`]s, read together from the same variables.
///
/// Only [`Settings::read`] is the service's own; reading the environment, the round trip back to
/// variables and the list of variables come from the types, alike for both services.
pub trait Settings: Serialize + Default + Sized {
    /// Reads every group from `vars`.
    fn read(vars: &Vars) -> anyhow::Result<Self>;

    /// Reads the process environment.
    fn from_env() -> anyhow::Result<Self> {
        Self::read(&Vars::from_env()?)
    }

    /// Reads the configuration from `vars` (name, value), as from the environment.
    fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        Self::read(&Vars::new(vars)?)
    }

    /// The environment variables that give this configuration (tokens aside, which are never written
    /// back).
    fn environment(&self) -> Vec<(String, String)> {
        environment(self)
    }

    /// Every variable the service reads: those of its groups, the token lists and their files, and the
    /// log filter.
    fn variables() -> Vec<String> {
        let mut names = variables(&Self::default());
        names.extend(crate::web::token_variables());
        names.push(crate::telemetry::FILTER_VARIABLE.into());
        names
    }
}

/// Implements [`Settings`] for a struct whose every field is a [`Group`], each read on its own from the
/// same variables: `common::settings!(Config { broker, http, telemetry });`.
#[macro_export]
macro_rules! settings {
    ($config:ty { $($group:ident),+ $(,)? }) => {
        impl $crate::settings::Settings for $config {
            fn read(vars: &$crate::settings::Vars) -> anyhow::Result<Self> {
                Ok(Self {
                    $($group: vars.read()?),+
                })
            }
        }
    };
}

/// Variables whose value must be one of a few words. envy's own error for these quotes the value but
/// not the variable, so they are checked first.
const CHOICES: &[(&str, &[&str])] = &[
    ("QUEUE_TYPE", &["quorum", "classic"]),
    ("LOG_FORMAT", &["pretty", "json"]),
    // Of OpenTelemetry's protocols, only the one both services export with: no gRPC stack is built in.
    ("OTEL_EXPORTER_OTLP_PROTOCOL", &["http/protobuf"]),
    (
        "OTEL_TRACES_SAMPLER",
        &[
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ],
    ),
];

impl Vars {
    /// The process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::new(std::env::vars())
    }

    /// `vars` (name, value), as from the environment; fails when a word is outside its choices.
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        // An empty OpenTelemetry variable means unset, as the specification says (manifests often
        // render a variable they leave blank).
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, value)| !(name.starts_with("OTEL_") && value.trim().is_empty()))
            .collect();
        for (name, value) in &vars {
            if let Some((_, allowed)) = CHOICES.iter().find(|(variable, _)| variable == name) {
                ensure(
                    allowed.contains(&value.as_str()),
                    &format!(
                        "{name} must be one of {}, got {value:?}",
                        allowed.join(", ")
                    ),
                )?;
            }
        }
        Ok(Self(vars))
    }

    /// The group `T`, read from these variables and completed.
    pub fn read<T: Group>(&self) -> anyhow::Result<T> {
        let group: T = envy::from_iter(self.0.iter().cloned())
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        group.complete(self)
    }

    /// The pairs themselves, for what reads variables by other rules (tokens and their files).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// The variables that give `config` (a group, or a struct of groups): the inverse of reading them. A
/// setting that is not set (`None`) gives no variable.
pub fn environment<T: Serialize>(config: &T) -> Vec<(String, String)> {
    let mut out = Vec::new();
    flatten(
        serde_json::to_value(config).expect("settings serialise"),
        &mut |name, value| {
            if !value.is_null() {
                let value = match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                };
                out.push((name, value));
            }
        },
    );
    out
}

/// Every variable `config`'s type reads, set or not.
pub fn variables<T: Serialize>(config: &T) -> Vec<String> {
    let mut out = Vec::new();
    flatten(
        serde_json::to_value(config).expect("settings serialise"),
        &mut |name, _| out.push(name),
    );
    out
}

/// Calls `each` with the variable name and value of every leaf field, groups walked into.
fn flatten(value: serde_json::Value, each: &mut impl FnMut(String, serde_json::Value)) {
    let serde_json::Value::Object(fields) = value else {
        unreachable!("settings are structs");
    };
    for (field, value) in fields {
        match value {
            group @ serde_json::Value::Object(_) => flatten(group, each),
            leaf => each(field.to_uppercase(), leaf),
        }
    }
}

/// `(name, value)` pairs as [`Settings::from_vars`] takes them, from string literals (for tests).
pub fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Fails with `message`, as an invalid configuration, unless `condition` holds.
pub fn ensure(condition: bool, message: &str) -> anyhow::Result<()> {
    if condition {
        Ok(())
    } else {
        anyhow::bail!("invalid configuration: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_outside_its_choices_is_reported_with_its_variable() {
        let vars = [("QUEUE_TYPE".to_string(), "stream".to_string())];
        let err = Vars::new(vars).err().expect("refused");
        assert!(
            err.to_string()
                .contains("QUEUE_TYPE must be one of quorum, classic"),
            "{err}"
        );
        assert!(Vars::new([("LOG_FORMAT".to_string(), "json".to_string())]).is_ok());
    }
}
