//! `consumer`: see the library crate for what it does.

common::service_main!(consumer::run);
