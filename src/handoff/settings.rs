//! What the hand-off takes from its `[handoff]` table
//! ([`crate::config::handoff`]): the overload thresholds and the MAC key.

use std::path::Path;

use super::frame::Key;
use super::policy::Thresholds;
use crate::config::handoff::HandoffConfig;

impl HandoffConfig {
    /// The admission thresholds these settings name.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            max_wait_us: self.max_wait_us,
            target_busy_percent: self.target_busy_percent,
            alternate_saturated_percent: self.alternate_saturated_percent,
        }
    }

    /// Read the key file ([`HandoffConfig::read_key_bytes`]) into the MAC key.
    pub fn read_key(&self, base_dir: &Path) -> Result<Key, String> {
        let bytes = self.read_key_bytes(base_dir)?;
        Key::new(&bytes).map_err(|e| format!("{}: {e}", self.key_path(base_dir).display()))
    }
}
