//! Per-vessel limits: built-in defaults, overridden by the fleet, overridden by the vessel.

use serde::{Deserialize, Serialize};

/// Limits as written in a fleet document: every field optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsDoc {
    /// Instructions (Wasm) or operations (Rhai).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Linear memory (Wasm), or the heap a Rhai script holds, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Wall-clock timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Captured stdout + stderr + variables + rows, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

/// Effective limits of one vessel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Instructions (Wasm) or operations (Rhai).
    pub fuel: u64,
    /// Linear memory (Wasm), or the heap a Rhai script holds, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock timeout in milliseconds.
    pub timeout_ms: u64,
    /// Captured stdout + stderr + variables + rows, in bytes.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 100_000_000,
            memory_bytes: 16 << 20,
            timeout_ms: 5_000,
            output_bytes: 256 << 10,
        }
    }
}

impl Limits {
    /// The highest values a fleet may ask for; they bound what one vessel can take from the host.
    pub const MAX: Limits = Limits {
        fuel: 100_000_000_000,
        memory_bytes: 256 << 20,
        timeout_ms: 300_000,
        output_bytes: 16 << 20,
    };

    /// These limits with the fields `doc` sets replaced.
    pub fn with(self, doc: &LimitsDoc) -> Limits {
        Limits {
            fuel: doc.fuel.unwrap_or(self.fuel),
            memory_bytes: doc.memory_bytes.unwrap_or(self.memory_bytes),
            timeout_ms: doc.timeout_ms.unwrap_or(self.timeout_ms),
            output_bytes: doc.output_bytes.unwrap_or(self.output_bytes),
        }
    }
}

impl LimitsDoc {
    /// Checks every given field against its range; the message names the field.
    pub fn check(&self, what: &str) -> Result<(), String> {
        let fields = [
            ("fuel", self.fuel, 1, Limits::MAX.fuel),
            (
                "memory_bytes",
                self.memory_bytes,
                65_536,
                Limits::MAX.memory_bytes,
            ),
            ("timeout_ms", self.timeout_ms, 1, Limits::MAX.timeout_ms),
            (
                "output_bytes",
                self.output_bytes,
                1_024,
                Limits::MAX.output_bytes,
            ),
        ];
        for (name, value, min, max) in fields {
            if let Some(v) = value
                && !(min..=max).contains(&v)
            {
                return Err(format!(
                    "{what}: limits.{name} must be between {min} and {max}, got {v}"
                ));
            }
        }
        Ok(())
    }
}
