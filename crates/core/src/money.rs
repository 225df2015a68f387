use std::fmt;

use serde::{Deserialize, Serialize};

/// ISO 4217 currencies ledgerflow accepts, with their number of minor-unit digits.
///
/// The table is deliberately explicit: an amount in minor units means nothing without the
/// exponent, and guessing 2 for JPY (0) or KWD (3) would post amounts off by a factor of 100.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// An ISO 4217 currency from the supported table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

impl Currency {
    /// Looks up an upper-case ISO 4217 code.
    pub fn parse(code: &str) -> Result<Self, String> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, e)| {
                let b = c.as_bytes();
                Self {
                    code: [b[0], b[1], b[2]],
                    exponent: *e,
                }
            })
            .ok_or_else(|| format!("currency {code:?} is not a supported ISO 4217 code"))
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The code bytes come from the ASCII table above, so this cannot fail.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Number of digits after the decimal point (2 for USD, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.code().to_owned()
    }
}

/// An exact amount: integer minor units of a currency. Sums use `i128` so they cannot overflow
/// for any realistic ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units (cents for USD).
    pub minor: i128,
    /// Currency of the amount.
    pub currency: Currency,
}

impl Money {
    /// Wraps an amount in minor units.
    pub fn new(minor: i128, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// The amount as a decimal string with the currency's exponent, e.g. `"12.30"`.
    pub fn to_decimal_string(&self) -> String {
        format_minor(self.minor, self.currency.exponent())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

/// Formats integer minor units as an exact decimal string with `exponent` fractional digits.
pub fn format_minor(minor: i128, exponent: u8) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u128.pow(u32::from(exponent));
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = usize::from(exponent)
    )
}

/// Parses an exact decimal string into integer minor units with `exponent` fractional digits
/// (at most that many; fewer are padded): the inverse of [`format_minor`].
pub fn parse_minor(text: &str, exponent: u8) -> Result<i128, String> {
    let bad = || format!("{text:?} is not a decimal with at most {exponent} fraction digits");
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > usize::from(exponent)
    {
        return Err(bad());
    }
    let padded = format!("{whole}{fraction:0<width$}", width = usize::from(exponent));
    let magnitude: i128 = padded.parse().map_err(|_| bad())?;
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimals_parse_exactly_with_the_currency_exponent() {
        assert_eq!(parse_minor("1234.56", 2).unwrap(), 123_456);
        assert_eq!(parse_minor("1500", 0).unwrap(), 1500);
        assert_eq!(parse_minor("1.25", 3).unwrap(), 1250);
        assert_eq!(parse_minor("-0.05", 2).unwrap(), -5);
        for bad in ["", "1.234", "1e5", "12a", ".5", "1,00"] {
            assert!(parse_minor(bad, 2).is_err(), "{bad}");
        }
        for (minor, exponent) in [(123_456, 2), (-5, 2), (1500, 0), (7, 3)] {
            assert_eq!(
                parse_minor(&format_minor(minor, exponent), exponent),
                Ok(minor)
            );
        }
    }

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::parse("USD").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("XXX").is_err());
    }

    #[test]
    fn formats_minor_units_exactly() {
        assert_eq!(format_minor(1230, 2), "12.30");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(1500, 0), "1500");
        assert_eq!(format_minor(1, 3), "0.001");
        assert_eq!(
            format_minor(i128::from(i64::MAX), 2),
            "92233720368547758.07"
        );
    }

    proptest! {
        #[test]
        fn decimal_string_parses_back_to_the_same_minor_units(minor in any::<i64>(), exp in 0u8..4) {
            let text = format_minor(i128::from(minor), exp);
            let digits: String = text.chars().filter(|c| *c != '.').collect();
            prop_assert_eq!(digits.parse::<i128>().unwrap(), i128::from(minor));
            let frac = text.split('.').nth(1).map_or(0, str::len);
            prop_assert_eq!(frac, usize::from(exp));
        }
    }
}
