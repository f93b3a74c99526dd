//! RFC 3339 timestamps with nanoseconds (`2024-01-02T03:04:05.123456789Z`, `...+02:00`), parsed
//! from bytes without allocating.

/// Unix nanoseconds of an RFC 3339 timestamp; `None` if malformed or out of `i64` range.
pub fn parse_rfc3339_nanos(s: &[u8]) -> Option<i64> {
    if s.len() < 20
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let year = digits(&s[0..4])? as i64;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let hour = digits(&s[11..13])? as i64;
    let minute = digits(&s[14..16])? as i64;
    let second = digits(&s[17..19])? as i64;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if s[i] == b'.' {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + (s[i] - b'0') as i64;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match s.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])? as i64;
            let m = digits(&[*m1, *m2])? as i64;
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn digits(s: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as u32;
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let rows: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:00.000000001Z", Some(1)),
            ("2000-02-29T00:00:00Z", Some(951_782_400_000_000_000)),
            ("2024-01-02T03:04:05.123456789Z", Some(1_704_164_645_123_456_789)),
            ("2024-01-02T03:04:05.1234567891234Z", Some(1_704_164_645_123_456_789)),
            ("2024-01-02T04:04:05.123456789+01:00", Some(1_704_164_645_123_456_789)),
            ("2024-01-02T02:04:05.123456789-01:00", Some(1_704_164_645_123_456_789)),
            ("1969-12-31T23:59:59Z", Some(-1_000_000_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2024-01-02T03:04:05.Z", None),
            ("2024-01-02T03:04:05", None),
            ("2024-01-02T03:04:05+0100", None),
            ("2024-01-02 03:04:05Z", Some(1_704_164_645_000_000_000)),
        ];
        for (s, want) in rows {
            assert_eq!(parse_rfc3339_nanos(s.as_bytes()), *want, "{s}");
        }
    }
}
