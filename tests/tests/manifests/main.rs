//! Cross-checks the rendered Kubernetes manifests against the code: what the Services select and target,
//! what environment the services get, where the probes point, what the autoscalers scale, which
//! network flows the NetworkPolicies allow, and how KEDA and Prometheus see the services.
//!
//! These render `kube/` with `kubectl kustomize`, so they are ignored by a plain `cargo test`;
//! `scripts/check-manifests` runs them (with `--include-ignored`).

mod broker_users;
mod configuration;
mod dial;
mod ingress;
mod keda;
mod keda_user;
mod monitoring;
mod network_policies;
mod policy;
mod production;
mod render;
mod services;
mod single_node;
mod sizing;
mod tls;
