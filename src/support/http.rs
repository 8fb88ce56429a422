//! The HTTP client the commands use to talk to servers.

use std::time::Duration;

/// A client whose every request gives up after `timeout` (connecting included).
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).build()
}
