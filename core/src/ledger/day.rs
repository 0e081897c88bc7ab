//! A UTC calendar day, as days since 1970-01-01, written `YYYY-MM-DD`.
//! Hand-written (Howard Hinnant's `days_from_civil`): the core has no clock
//! and needs only this one conversion, not a date-time crate's features.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

const MS_PER_DAY: u64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(u32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayParseError;

impl fmt::Display for DayParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("must be a date as YYYY-MM-DD, from 1970-01-01")
    }
}

impl Day {
    /// The UTC day of a wall-clock time in ms since the Unix epoch.
    pub fn of_ms(now_ms: u64) -> Day {
        Day(u32::try_from(now_ms / MS_PER_DAY).unwrap_or(u32::MAX))
    }

    pub fn from_number(days: u32) -> Day {
        Day(days)
    }

    /// Days since 1970-01-01.
    pub fn number(self) -> u32 {
        self.0
    }

    /// `n` days earlier (not before 1970-01-01).
    pub fn minus(self, n: u32) -> Day {
        Day(self.0.saturating_sub(n))
    }

    /// Its UTC calendar month, as months since 1970-01.
    pub fn month(self) -> u32 {
        let (y, m, _) = self.civil();
        u32::try_from((y - 1970) * 12 + m - 1).unwrap_or(0)
    }

    /// The first day of the month after its own.
    pub fn next_month(self) -> Day {
        let (y, m, _) = self.civil();
        let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Day(u32::try_from(days_from_civil(y, m, 1)).unwrap_or(u32::MAX))
    }

    pub fn parse(text: &str) -> Result<Day, DayParseError> {
        let mut parts = text.splitn(3, '-');
        let mut number = |digits: usize| {
            parts
                .next()
                .filter(|p| p.len() == digits && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or(DayParseError)
        };
        let (y, m, d) = (number(4)?, number(2)?, number(2)?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return Err(DayParseError);
        }
        let days = days_from_civil(y, m, d);
        u32::try_from(days).map(Day).map_err(|_| DayParseError)
    }

    fn civil(self) -> (i64, i64, i64) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        (y, m, d)
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Day, D::Error> {
        let text = String::deserialize(d)?;
        Day::parse(&text).map_err(serde::de::Error::custom)
    }
}
