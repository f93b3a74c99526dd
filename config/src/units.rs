//! Durations (`500ms`, `30s`, `5m`, `1h30m`) and sizes (`512KiB`, `64MiB`, `1GB`).
//!
//! Written by hand rather than with `humantime`/`bytesize` because the contract is Prometheus's
//! strict unit grammar: `humantime` also accepts `5 seconds`, which the contract rejects.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span of time written as in Prometheus: one or more `<integer><unit>` with units
/// `ms`, `s`, `m`, `h`, `d`, `w`, `y` (largest first, each at most once), e.g. `1m30s`. A bare
/// `0` is zero; any other bare number is rejected (is `30` seconds or milliseconds?), as are
/// fractions (`1.5s`), signs and spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Duration).ok_or_else(|| format!("invalid duration {s:?}"))
    }
}

const DURATION_UNITS: [(&str, u64); 7] = [
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("ms", 1),
    ("m", 60 * 1000),
    ("s", 1000),
    ("y", 365 * 24 * 3600 * 1000),
];

fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = s.as_bytes();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    // Units must appear from largest to smallest, each at most once, as in Prometheus.
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        rest = &rest[digits..];
        let (unit, ms) =
            DURATION_UNITS.iter().filter(|(u, _)| rest.starts_with(u.as_bytes())).max_by_key(|(u, _)| u.len())?;
        let rank = rank_of(unit);
        if rank >= last_rank {
            return None;
        }
        last_rank = rank;
        rest = &rest[unit.len()..];
        total_ms = total_ms.checked_add(n.checked_mul(*ms)?)?;
    }
    Some(std::time::Duration::from_millis(total_ms))
}

fn rank_of(unit: &str) -> usize {
    match unit {
        "ms" => 0,
        "s" => 1,
        "m" => 2,
        "h" => 3,
        "d" => 4,
        "w" => 5,
        _ => 6,
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)] {
            if ms >= size {
                write!(f, "{}{}", ms / size, unit)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = StringOrNumber::deserialize(d)?;
        raw.0.parse().map_err(serde::de::Error::custom)
    }
}

/// A size in bytes: `<integer><unit>` with `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000) or
/// `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024); a bare integer is bytes. No spaces, no fractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn from_bytes(b: u64) -> Self {
        ByteSize(b)
    }
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_size(s).map(ByteSize).ok_or_else(|| format!("invalid size {s:?}"))
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match &s[digits..] {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "TB" => 1000 * 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{}", self.0 / size, unit);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = StringOrNumber::deserialize(d)?;
        raw.0.parse().map_err(serde::de::Error::custom)
    }
}

/// YAML writes `0` and `1024` as numbers; units need strings. Accept both.
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string with a unit, e.g. \"30s\" or \"64MiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StringOrNumber, E> {
                Ok(StringOrNumber(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_as_in_prometheus() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1m30s", 90_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
            ("1h2m3s4ms", 3_723_004),
            ("0", 0),
            ("0s", 0),
            ("90s", 90_000),
        ];
        for (text, ms) in ok {
            assert_eq!(text.parse::<Duration>(), Ok(Duration::from_millis(ms)), "{text}");
        }
        let bad = ["5 seconds", "1.5s", "-1s", "s", "30", "", " 30s", "30s ", "1s1m", "1s1s", "1S", "10sec", "+1s"];
        for text in bad {
            assert_eq!(text.parse::<Duration>(), Err(format!("invalid duration {text:?}")), "{text}");
        }
    }

    #[test]
    fn durations_display_in_the_largest_units() {
        for (ms, text) in [(0, "0s"), (500, "500ms"), (90_000, "1m30s"), (3_600_000, "1h"), (90_061_001, "25h1m1s1ms")]
        {
            assert_eq!(Duration::from_millis(ms).to_string(), text);
        }
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        let ok = [
            ("0", 0),
            ("1024", 1024),
            ("10B", 10),
            ("512KiB", 512 << 10),
            ("64MiB", 64 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("1KB", 1000),
            ("1kB", 1000),
            ("5MB", 5_000_000),
            ("1GB", 1_000_000_000),
            ("1TB", 1_000_000_000_000),
        ];
        for (text, bytes) in ok {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize::from_bytes(bytes)), "{text}");
        }
        let bad = ["5 MB", "1.5MiB", "-1", "MiB", "", "64mib", "64M", "64Mi", "20000000000GiB"];
        for text in bad {
            assert_eq!(text.parse::<ByteSize>(), Err(format!("invalid size {text:?}")), "{text}");
        }
    }

    #[test]
    fn yaml_numbers_are_accepted_where_they_are_unambiguous() {
        assert_eq!(serde_yaml::from_str::<Duration>("0").unwrap(), Duration::from_secs(0));
        assert_eq!(serde_yaml::from_str::<ByteSize>("1024").unwrap(), ByteSize::from_bytes(1024));
        let e = serde_yaml::from_str::<Duration>("30").unwrap_err().to_string();
        assert!(e.starts_with("invalid duration \"30\""), "{e}");
        assert!(serde_yaml::from_str::<Duration>("1.5").is_err());
    }

    proptest! {
        #[test]
        fn duration_display_parses_back(ms in 0u64..(100 * 365 * 24 * 3600 * 1000)) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }

        #[test]
        fn size_display_parses_back(bytes in any::<u64>(), unit in 0u32..4) {
            // Round multiples of the units too, or they would almost never be drawn.
            let b = ByteSize::from_bytes(bytes >> (unit * 10) << (unit * 10));
            prop_assert_eq!(b.to_string().parse::<ByteSize>(), Ok(b));
        }
    }
}
