//! Durations as written in runbooks: `90s`, `10m`, `1h30m`, `500ms`, `2d`.

use std::time::Duration;

/// Why a duration did not parse, in words meant for the person who wrote it.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("the duration is empty".into());
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{s}` does not start with a number"));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}` has a number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{s}` has no unit after {n}")),
            other => return Err(format!("`{s}` has an unknown unit `{other}`")),
        };
        total = total.saturating_add(n.saturating_mul(ms));
        rest = &rest[unit_len..];
    }
    // A year is far beyond any step; the cap keeps arithmetic on durations overflow-free.
    if total > 366 * 86_400_000 {
        return Err(format!("`{s}` is longer than a year"));
    }
    Ok(Duration::from_millis(total as u64))
}

/// The shortest spelling `parse` reads back to the same value.
pub fn format(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_spellings() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn rejects_with_a_reason() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("10x").unwrap_err().contains("unknown unit `x`"));
        assert!(
            parse("m")
                .unwrap_err()
                .contains("does not start with a number")
        );
        assert!(parse("").is_err());
        assert!(parse("99999999999999999999999999999999999999999d").is_err());
        assert!(parse("400d").unwrap_err().contains("year"));
    }

    #[test]
    fn format_round_trips() {
        for s in ["90s", "10m", "1h30m", "250ms", "2d", "1h0m5s"] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)).unwrap(), d);
        }
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
    }
}
