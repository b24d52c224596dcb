//! API key material (generation, hashing, display prefix), shared by every
//! store, the CLI (`aica keys`) and the HTTP layer. The records themselves live
//! behind [`super::KeyStore`].

/// A new random key: `aica_` and 48 hex digits (192 bits).
pub fn generate() -> String {
    let bytes = rand::random::<[u8; 24]>();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("aica_{hex}")
}

/// The stored form of a key: its BLAKE3 hash (keys are 192-bit random, so a fast hash is enough).
pub fn hash(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// The first characters of a key, stored to recognise it.
pub fn prefix(key: &str) -> String {
    key.chars().take(12).collect()
}

/// The start of the minute of an audit time `YYYY-MM-DDTHH:MM:SSZ`, the window
/// in which repeated refusals are counted into one row.
pub fn minute_start(at: &str) -> Option<String> {
    at.get(..17).map(|p| format!("{p}00Z"))
}

/// Target recorded for an aggregated row that counted attempts on different targets.
pub const SEVERAL_TARGETS: &str = "(several targets)";
