//! Headless Chromium driven through ChromeDriver (Debian's `chromium` and `chromium-driver`, which
//! `scripts/test` installs), with a fresh profile, killed with the test.

use std::process::{Child, Command};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::services::spawn_on_free_port;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A ChromeDriver of the test's own, and a browser session on it.
pub struct Browser {
    driver: Child,
    profile: std::path::PathBuf,
    pub client: Client,
}

impl Browser {
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "Chromium and ChromeDriver are missing: scripts/test installs Debian's chromium and chromium-driver"
        );
        let profile = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4()));
        let (driver, port) = spawn_on_free_port("chromedriver", |port| {
            let mut command = Command::new(CHROMEDRIVER);
            command.arg(format!("--port={port}"));
            command
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Self {
            driver,
            profile,
            client,
        }
    }
}

/// Types `token` into the monitor's token form and submits it.
pub async fn give_token(client: &Client, token: &str) {
    client
        .find(Locator::Css("#token"))
        .await
        .expect("token field")
        .send_keys(token)
        .await
        .expect("typed");
    client
        .find(Locator::Css("#token-form button"))
        .await
        .expect("button")
        .click()
        .await
        .expect("submitted");
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Chromium exits with its driver; its profile goes with it.
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
