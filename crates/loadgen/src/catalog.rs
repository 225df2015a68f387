//! The fixed reference data the workload draws from: currencies and the regions their customers
//! live in, tax rules, the price list, meters and customer names.
//!
//! Prices are written once in US cents and converted with a rough fixed rate per currency. The
//! rates only have to make amounts look plausible (a JPY invoice in the tens of thousands, a KWD
//! one in the tens), not be current.

/// A tax jurisdiction customers live in, with the tax lines an invoice to them carries.
#[derive(Debug)]
pub(crate) struct TaxRegion {
    /// ISO 3166-1 alpha-2 country of the customer.
    pub(crate) country: &'static str,
    /// `(jurisdiction, rate_bps)` of each tax line; empty where no tax is charged (exports,
    /// states without sales tax, countries without VAT).
    pub(crate) lines: &'static [(&'static str, i32)],
    /// Business customers with a tax id are invoiced under the EU reverse charge: one 0% line.
    pub(crate) reverse_charge: bool,
}

const fn region(country: &'static str, lines: &'static [(&'static str, i32)]) -> TaxRegion {
    TaxRegion {
        country,
        lines,
        reverse_charge: false,
    }
}

/// Every region; currencies refer to them by index.
pub(crate) const REGIONS: &[TaxRegion] = &[
    /* 0 */ region("US", &[("US-CA", 725), ("US-CA-SF", 138)]),
    /* 1 */ region("US", &[("US-NY", 400), ("US-NY-NYC", 488)]),
    /* 2 */ region("US", &[("US-TX", 625), ("US-TX-AUS", 200)]),
    /* 3 */ region("US", &[]), // Oregon: no sales tax
    /* 4 */ region("BR", &[]), // export
    /* 5 */ region("IN", &[]), // export
    /* 6 */ region("DE", &[("DE", 1900)]),
    /* 7 */
    TaxRegion {
        country: "FR",
        lines: &[("FR", 2000)],
        reverse_charge: true,
    },
    /* 8 */
    TaxRegion {
        country: "NL",
        lines: &[("NL", 2100)],
        reverse_charge: true,
    },
    /* 9 */
    TaxRegion {
        country: "IE",
        lines: &[("IE", 2300)],
        reverse_charge: true,
    },
    /* 10 */
    TaxRegion {
        country: "ES",
        lines: &[("ES", 2100)],
        reverse_charge: true,
    },
    /* 11 */ region("GB", &[("GB", 2000)]),
    /* 12 */ region("JP", &[("JP", 1000)]),
    /* 13 */ region("CA", &[("CA-ON", 1300)]),
    /* 14 */ region("CA", &[("CA", 500), ("CA-QC", 998)]),
    /* 15 */ region("AU", &[("AU", 1000)]),
    /* 16 */ region("CH", &[("CH", 810)]),
    /* 17 */ region("KW", &[]),
];

/// A functional currency of the tenant rotation.
#[derive(Debug)]
pub(crate) struct CurrencyProfile {
    /// ISO 4217 code (must be in `ledgerflow_core`'s table).
    pub(crate) code: &'static str,
    /// Rough price of one US dollar in this currency's major units.
    pub(crate) per_usd: f64,
    /// Suffix of the tenant's legal entity name.
    pub(crate) entity_suffix: &'static str,
    /// Indices into [`REGIONS`] where the tenant's customers live (repeats weight a region).
    pub(crate) regions: &'static [usize],
    /// Currency a processor settles in when it differs (v2 `settlement_currency`).
    pub(crate) settles_in: &'static str,
}

/// Tenant `i` (0-based) bills in `CURRENCY_ROTATION[i % len]`. The first four are USD, EUR, GBP
/// and JPY so even a four-tenant run covers exponents 2 and 0; KWD adds exponent 3.
pub(crate) const CURRENCY_ROTATION: &[CurrencyProfile] = &[
    CurrencyProfile {
        code: "USD",
        per_usd: 1.0,
        entity_suffix: "Inc.",
        regions: &[0, 0, 1, 1, 2, 3, 4, 5],
        settles_in: "EUR",
    },
    CurrencyProfile {
        code: "EUR",
        per_usd: 0.92,
        entity_suffix: "GmbH",
        regions: &[6, 6, 6, 7, 8, 9, 10],
        settles_in: "USD",
    },
    CurrencyProfile {
        code: "GBP",
        per_usd: 0.79,
        entity_suffix: "Ltd",
        regions: &[11],
        settles_in: "USD",
    },
    CurrencyProfile {
        code: "JPY",
        per_usd: 150.0,
        entity_suffix: "K.K.",
        regions: &[12],
        settles_in: "USD",
    },
    CurrencyProfile {
        code: "CAD",
        per_usd: 1.36,
        entity_suffix: "Corp.",
        regions: &[13, 13, 14],
        settles_in: "USD",
    },
    CurrencyProfile {
        code: "AUD",
        per_usd: 1.52,
        entity_suffix: "Pty Ltd",
        regions: &[15],
        settles_in: "USD",
    },
    CurrencyProfile {
        code: "CHF",
        per_usd: 0.88,
        entity_suffix: "AG",
        regions: &[16],
        settles_in: "EUR",
    },
    CurrencyProfile {
        code: "KWD",
        per_usd: 0.31,
        entity_suffix: "K.S.C.C.",
        regions: &[17],
        settles_in: "USD",
    },
];

/// A subscription plan.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) product_family: &'static str,
    pub(crate) usd_cents: i64,
    pub(crate) interval: &'static str,
    /// Priced per seat (the plan line's quantity is the seat count).
    pub(crate) per_seat: bool,
    /// Relative popularity.
    pub(crate) weight: u32,
}

/// The plans subscriptions are activated on.
pub(crate) const PLANS: &[Plan] = &[
    Plan {
        id: "plan_starter_monthly",
        name: "Starter",
        product_family: "platform",
        usd_cents: 2_900,
        interval: "month",
        per_seat: false,
        weight: 30,
    },
    Plan {
        id: "plan_team_monthly",
        name: "Team",
        product_family: "platform",
        usd_cents: 1_500,
        interval: "month",
        per_seat: true,
        weight: 30,
    },
    Plan {
        id: "plan_business_monthly",
        name: "Business",
        product_family: "platform",
        usd_cents: 49_900,
        interval: "month",
        per_seat: false,
        weight: 15,
    },
    Plan {
        id: "plan_enterprise_annual",
        name: "Enterprise",
        product_family: "platform",
        usd_cents: 2_400_000,
        interval: "year",
        per_seat: false,
        weight: 5,
    },
    Plan {
        id: "plan_support_premium",
        name: "Premium Support",
        product_family: "support",
        usd_cents: 9_900,
        interval: "month",
        per_seat: false,
        weight: 10,
    },
    Plan {
        id: "plan_analytics_addon",
        name: "Analytics Add-on",
        product_family: "addons",
        usd_cents: 4_900,
        interval: "month",
        per_seat: false,
        weight: 10,
    },
];

/// Sum of the plan weights.
pub(crate) const PLAN_WEIGHT_TOTAL: u32 = {
    let mut total = 0;
    let mut i = 0;
    while i < PLANS.len() {
        total += PLANS[i].weight;
        i += 1;
    }
    total
};

/// A usage meter; usage is billed on the `usage` product family.
#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) usd_cents: i64,
    /// Largest quantity one `usage_aggregated` event reports, times 1,000,000.
    pub(crate) max_quantity_micros: i64,
}

/// Number of meters; a subscription accumulates usage per meter until its next invoice.
pub(crate) const METER_COUNT: usize = 3;

/// The meters.
pub(crate) const METERS: [Meter; METER_COUNT] = [
    Meter {
        name: "api_calls_1k",
        description: "API calls (per 1,000)",
        usd_cents: 40,
        max_quantity_micros: 250_000_000,
    },
    Meter {
        name: "storage_gb_hours",
        description: "Storage (GB-hours)",
        usd_cents: 1,
        max_quantity_micros: 10_000_000_000,
    },
    Meter {
        name: "compute_minutes",
        description: "Compute (minutes)",
        usd_cents: 2,
        max_quantity_micros: 5_000_000_000,
    },
];

/// A one-off charge (invoices without a subscription, or extras on a subscription invoice).
#[derive(Debug)]
pub(crate) struct Charge {
    pub(crate) description: &'static str,
    pub(crate) product_family: &'static str,
    pub(crate) usd_cents: i64,
    /// Quantity is a whole multiple of this step (micros): 250,000 is quarter hours.
    pub(crate) step_micros: i64,
    /// Largest number of steps.
    pub(crate) max_steps: i64,
}

/// The one-off charges.
pub(crate) const CHARGES: &[Charge] = &[
    Charge {
        description: "Onboarding services (hours)",
        product_family: "support",
        usd_cents: 15_000,
        step_micros: 250_000,
        max_steps: 80,
    },
    Charge {
        description: "Priority incident response",
        product_family: "support",
        usd_cents: 50_000,
        step_micros: 1_000_000,
        max_steps: 1,
    },
    Charge {
        description: "Additional sandbox environment",
        product_family: "addons",
        usd_cents: 9_900,
        step_micros: 1_000_000,
        max_steps: 3,
    },
    Charge {
        description: "Data export bundle",
        product_family: "addons",
        usd_cents: 2_500,
        step_micros: 1_000_000,
        max_steps: 10,
    },
];

/// Payment methods: `(method, weight, lowest fee bps, highest fee bps)`. Fees stay within 3%.
pub(crate) const PAYMENT_METHODS: &[(&str, u32, u32, u32)] = &[
    ("card", 55, 150, 300),
    ("ach_debit", 15, 0, 100),
    ("bank_transfer", 20, 0, 0),
    ("wallet", 10, 200, 300),
];

/// Sum of the payment method weights.
pub(crate) const PAYMENT_METHOD_WEIGHT_TOTAL: u32 = 100;

/// Why subscriptions end.
pub(crate) const CANCEL_REASONS: &[&str] = &[
    "customer_request",
    "non_payment",
    "downgrade",
    "switched_to_competitor",
];

/// Why credit memos are issued.
pub(crate) const CREDIT_REASONS: &[&str] = &[
    "service_outage",
    "billing_error",
    "goodwill",
    "plan_downgrade",
    "duplicate_charge",
];

/// First word of a customer's name.
pub(crate) const NAME_STEMS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Vandelay",
    "Pied Piper",
    "Massive Dynamic",
    "Aperture",
    "Oscorp",
    "Gringotts",
    "Monarch",
    "Nakatomi",
    "Sirius",
];

/// Second word of a customer's name.
pub(crate) const NAME_KINDS: &[&str] = &[
    "Labs",
    "Systems",
    "Holdings",
    "Analytics",
    "Logistics",
    "Media",
    "Health",
    "Foods",
];

/// Mailbox of a customer's billing contact; updates move it around.
pub(crate) const MAILBOXES: &[&str] = &["billing", "accounts-payable", "finance", "ap"];

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerflow_core::Currency;

    #[test]
    fn reference_data_is_consistent() {
        for c in CURRENCY_ROTATION {
            Currency::parse(c.code).unwrap();
            Currency::parse(c.settles_in).unwrap();
            assert_ne!(c.code, c.settles_in);
            assert!(c.regions.iter().all(|r| *r < REGIONS.len()));
        }
        let codes: Vec<_> = CURRENCY_ROTATION.iter().map(|c| c.code).collect();
        assert_eq!(&codes[..4], ["USD", "EUR", "GBP", "JPY"]);
        let weight: u32 = PAYMENT_METHODS.iter().map(|m| m.1).sum();
        assert_eq!(weight, PAYMENT_METHOD_WEIGHT_TOTAL);
        assert!(PAYMENT_METHODS.iter().all(|m| m.2 <= m.3 && m.3 <= 300));
        assert_eq!(
            PLAN_WEIGHT_TOTAL,
            PLANS.iter().map(|p| p.weight).sum::<u32>()
        );
        for r in REGIONS {
            assert!(r.country.len() == 2 && r.country.bytes().all(|b| b.is_ascii_uppercase()));
        }
    }
}
