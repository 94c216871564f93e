//! Durations, byte sizes and transfer rates as operators write them: `30s`, `1h30m`,
//! `4MiB`, `50MiB/s`, `400Mbit/s`.
//!
//! A number without a unit is refused for durations and rates (is `30` seconds or
//! minutes? bytes or bits?), and accepted as bytes for sizes. Errors say what was
//! expected, so the loader can put them next to the key that held the value.

use crate::config::diagnostic::Invalid;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` and sums like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, Invalid> {
    let expected =
        || format!("`{text}` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)");
    let s = text.trim();
    if s.is_empty() {
        return Err(expected().into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(expected().into());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(expected().into()),
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it: `1h30m`, `45s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

/// A transfer rate in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Rate(pub u64);

/// Splits `12.5MiB` into (12.5, "MiB").
fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let n: f64 = s[..end].parse().ok()?;
    Some((n, s[end..].trim_start()))
}

/// Bytes per unit: decimal (`kB`, `MB`, `GB`, `TB`) and binary (`KiB`, `MiB`, `GiB`, `TiB`)
/// byte units, and bit units (`kbit`, `Mbit`, `Gbit`), which are decimal as on network gear.
fn unit_bytes(unit: &str) -> Option<f64> {
    Some(match unit {
        "" | "B" => 1.0,
        "k" | "kB" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "KiB" | "Ki" => 1024.0,
        "MiB" | "Mi" => 1024.0 * 1024.0,
        "GiB" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        "TiB" | "Ti" => 1024.0f64.powi(4),
        "bit" | "b" => 1.0 / 8.0,
        "kbit" | "Kbit" | "kb" => 1e3 / 8.0,
        "Mbit" | "Mb" => 1e6 / 8.0,
        "Gbit" | "Gb" => 1e9 / 8.0,
        _ => return None,
    })
}

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, Invalid> {
        let err = || {
            Invalid(format!(
                "`{text}` is not a size (expected e.g. `4MiB`, `512KiB`, `2GB`)"
            ))
        };
        let (n, unit) = split_number(text.trim()).ok_or_else(err)?;
        if unit.contains("bit") || unit.ends_with('b') {
            return Err(err());
        }
        let bytes = n * unit_bytes(unit).ok_or_else(err)?;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl Rate {
    pub fn parse(text: &str) -> Result<Rate, Invalid> {
        let err = || {
            Invalid(format!(
                "`{text}` is not a rate (expected e.g. `50MiB/s`, `400Mbit/s`, `1Gbit/s`)"
            ))
        };
        let s = text.trim();
        let per_second = s
            .strip_suffix("/s")
            .or_else(|| s.strip_suffix("ps"))
            .ok_or_else(err)?;
        let (n, unit) = split_number(per_second).ok_or_else(err)?;
        if unit.is_empty() {
            return Err(err());
        }
        let bytes = n * unit_bytes(unit).ok_or_else(err)?;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(err());
        }
        Ok(Rate(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut i = 0;
        let mut v = b;
        while v >= 1024.0 && i + 1 < UNITS.len() {
            v /= 1024.0;
            i += 1;
        }
        if i == 0 {
            write!(f, "{} B", self.0)
        } else if v.fract() == 0.0 {
            write!(f, "{v:.0} {}", UNITS[i])
        } else {
            write!(f, "{v:.1} {}", UNITS[i])
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", ByteSize(self.0))
    }
}

/// Serializes a `Duration` as the text [`parse_duration`] reads (`"30s"`), for JSON plans.
pub mod serde_duration {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in ["30", "", "s", "5 minutes", "1.5h", "-3s", "5x"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            parse_duration("30").unwrap_err(),
            "`30` is not a duration (expected e.g. `30s`, `5m`, `1h30m`, `500ms`)"
        );
    }

    #[test]
    fn durations_round_trip() {
        for s in ["0s", "250ms", "45s", "5m", "1h30m", "1d2h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("4MiB").unwrap(), ByteSize(4 << 20));
        assert_eq!(ByteSize::parse("1GB").unwrap(), ByteSize(1_000_000_000));
        assert_eq!(ByteSize::parse("1.5KiB").unwrap(), ByteSize(1536));
        assert_eq!(ByteSize::parse("1024").unwrap(), ByteSize(1024));
        for bad in ["", "MiB", "4 parsecs", "4Mbit", "-1MiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(Rate::parse("50MiB/s").unwrap(), Rate(50 << 20));
        assert_eq!(Rate::parse("400Mbit/s").unwrap(), Rate(50_000_000));
        assert_eq!(Rate::parse("1Gbit/s").unwrap(), Rate(125_000_000));
        assert_eq!(Rate::parse("10MB/s").unwrap(), Rate(10_000_000));
        assert_eq!(Rate::parse("1Gbps").unwrap(), Rate(125_000_000));
        for bad in ["50MiB", "50/s", "fast", "0MiB/s", "50 furlongs/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn display() {
        assert_eq!(ByteSize(512 << 20).to_string(), "512 MiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize(12).to_string(), "12 B");
        assert_eq!(Rate(50 << 20).to_string(), "50 MiB/s");
    }
}
