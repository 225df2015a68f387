//! The generator: tenant selection, per-tenant billing lifecycles, schema versions, duplicates
//! and out-of-order delivery.
//!
//! One ChaCha8 stream drives every decision, and every decision draws from it in a fixed order,
//! so the sequence is a pure function of the config (on one platform: the Zipf weights use
//! `powf`). Per-tenant state stays small (the last [`OPEN_INVOICES_PER_TENANT`] invoices, the
//! active subscriptions, counters), customer details are derived from a hash of the customer's
//! number instead of being stored, and only events picked for a re-send are cloned, which keeps
//! a million-event run cheap.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use ledgerflow_core::{
    CreditMemoIssued, Currency, CustomerUpserted, Event, EventType, InvoiceFinalized, InvoiceLine,
    PaymentCaptured, SubscriptionActivated, SubscriptionCanceled, TaxLine, TenantId,
    UsageAggregated,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use crate::catalog::{
    CANCEL_REASONS, CHARGES, CREDIT_REASONS, CURRENCY_ROTATION, CurrencyProfile, MAILBOXES,
    METER_COUNT, METERS, NAME_KINDS, NAME_STEMS, PAYMENT_METHOD_WEIGHT_TOTAL, PAYMENT_METHODS,
    PLAN_WEIGHT_TOTAL, PLANS, REGIONS, TaxRegion,
};
use crate::{LoadgenError, WorkloadConfig};

/// 2026-01-01T00:00:00Z in microseconds: every tenant's clock starts here.
const BASE_TIME_MICROS: i64 = 1_767_225_600_000_000;
/// Largest step of a tenant's clock between two of its events (90 s).
const MAX_STEP_MICROS: i64 = 90_000_000;
const HOUR_MICROS: i64 = 3_600_000_000;
const DAY_MICROS: i64 = 24 * HOUR_MICROS;
/// A duplicate is re-sent at most this many items after its original.
const RESEND_WINDOW: u64 = 1_000;
/// Invoices a tenant remembers as targets for payments and credit memos; older ones are only
/// paid or credited in the real world after a long time, which a load test need not model.
const OPEN_INVOICES_PER_TENANT: usize = 64;

/// The event mix in percent. The chosen type falls back to its prerequisite when the tenant
/// cannot have it yet (no invoice to pay -> an invoice, no customer -> a customer, ...).
const MIX: [(EventType, u32); 7] = [
    (EventType::CustomerUpserted, 5),
    (EventType::SubscriptionActivated, 5),
    (EventType::SubscriptionCanceled, 2),
    (EventType::UsageAggregated, 35),
    (EventType::InvoiceFinalized, 25),
    (EventType::PaymentCaptured, 23),
    (EventType::CreditMemoIssued, 5),
];

/// A simulated tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantProfile {
    /// `t001`, `t002`, ... (more digits when there are more than 999 tenants).
    pub tenant_id: TenantId,
    /// Legal entity name, e.g. `Tenant 001 Inc.`.
    pub legal_entity: String,
    /// Functional currency; every money event of the tenant uses it.
    pub currency: Currency,
    /// Probability that an event belongs to this tenant (Zipf; the weights sum to 1 and
    /// decrease with the tenant number, so `t001` is the busiest).
    pub weight: f64,
}

/// One item of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedEvent {
    /// The event; a duplicate is an exact copy of an earlier distinct one.
    pub event: Event,
    /// Owning tenant (also the Kafka key).
    pub tenant_id: TenantId,
    /// Schema version to encode with: 1 or 2. Only `invoice_finalized` and `payment_captured`
    /// have a v2; a v1 event never sets the v2-only field.
    pub writer_version: u8,
    /// An exact re-send of an earlier item of the stream.
    pub duplicate: bool,
}

/// The deterministic workload; iterate it to get exactly `cfg.events` items.
///
/// Duplicates are decided when a distinct event is emitted: it is scheduled for `F / (1 - F)`
/// re-sends on average, each at a random later item at most 1,000 items on, so about a
/// fraction `F` of the stream are duplicates and none precedes its original.
///
/// Business time (`occurred_at`) starts at 2026-01-01T00:00:00Z and increases with every event
/// of a tenant. With `out_of_order > 0` a payment may be emitted just before the invoice it pays;
/// its `occurred_at` is still after the invoice's (the invoice happened first, it was delivered
/// late), so that pair is the only place where a tenant's times go backwards in stream order.
#[derive(Debug)]
pub struct Workload {
    cfg: WorkloadConfig,
    rng: ChaCha8Rng,
    tenants: Vec<TenantProfile>,
    /// Cumulative tenant weights, for sampling by binary search.
    cumulative: Vec<f64>,
    states: Vec<TenantState>,
    /// Items yielded so far.
    emitted: u64,
    /// The invoice of an out-of-order payment, yielded right after it.
    pending: Option<GeneratedEvent>,
    /// Re-sends per distinct event, on average: `F / (1 - F)`, so that a fraction `F` of all
    /// items are duplicates.
    resends_per_event: f64,
    /// Re-sends scheduled when their original was emitted, earliest due first.
    resends: BinaryHeap<Reverse<Resend>>,
    resends_scheduled: u64,
}

/// A copy of a distinct event, to be re-sent once the stream reaches item `due`.
///
/// Deciding at emission time which events will be re-sent means only those (about `F` of them)
/// are cloned, instead of keeping a copy of every recent event around for a later draw.
#[derive(Debug)]
struct Resend {
    due: u64,
    /// Tie-breaker that keeps the order deterministic.
    seq: u64,
    event: GeneratedEvent,
}

impl PartialEq for Resend {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Resend {}

impl PartialOrd for Resend {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Resend {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl Workload {
    /// Validates the config and sets up the tenants.
    pub fn new(cfg: WorkloadConfig) -> Result<Self, LoadgenError> {
        cfg.validate()?;
        let count = cfg.tenants as usize;
        let width = count.to_string().len().max(3);
        let raw: Vec<f64> = (1..=count)
            .map(|k| (k as f64).powf(-cfg.zipf_exponent))
            .collect();
        let sum: f64 = raw.iter().sum();
        let mut tenants = Vec::with_capacity(count);
        let mut cumulative = Vec::with_capacity(count);
        let mut states = Vec::with_capacity(count);
        let mut running = 0.0;
        for (i, w) in raw.iter().enumerate() {
            let rotation = i % CURRENCY_ROTATION.len();
            let profile = &CURRENCY_ROTATION[rotation];
            let number = format!("{:0width$}", i + 1);
            let weight = w / sum;
            running += weight;
            cumulative.push(running);
            tenants.push(TenantProfile {
                // `t` + digits is always within the tenant id alphabet and length.
                tenant_id: TenantId::parse(&format!("t{number}"))
                    .expect("generated tenant ids are valid"),
                legal_entity: format!("Tenant {number} {}", profile.entity_suffix),
                // The catalogue test pins that every rotation code is a supported currency.
                currency: Currency::parse(profile.code).expect("rotation currencies are valid"),
                weight,
            });
            states.push(TenantState::new(rotation));
        }
        let resends_per_event = cfg.duplicates / (1.0 - cfg.duplicates);
        Ok(Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            tenants,
            cumulative,
            states,
            emitted: 0,
            pending: None,
            resends_per_event,
            resends: BinaryHeap::new(),
            resends_scheduled: 0,
        })
    }

    /// The tenants, `t001` first.
    pub fn tenants(&self) -> &[TenantProfile] {
        &self.tenants
    }

    fn pick_tenant(&mut self) -> usize {
        let u: f64 = self.rng.random();
        self.cumulative
            .partition_point(|c| *c <= u)
            .min(self.tenants.len() - 1)
    }

    fn pick_kind(&mut self) -> EventType {
        let mut r = self.rng.random_range(0..100u32);
        for (kind, pct) in MIX {
            if r < pct {
                return kind;
            }
            r -= pct;
        }
        EventType::UsageAggregated
    }

    /// Schedules the re-sends of a distinct event just emitted: `floor(r)` plus one more with
    /// probability `frac(r)`, where `r` is the mean number of re-sends per event, each at a
    /// random later item within [`RESEND_WINDOW`] (and within the stream).
    fn schedule_resends(&mut self, ev: &GeneratedEvent) {
        if self.resends_per_event <= 0.0 {
            return;
        }
        let whole = self.resends_per_event.floor();
        let extra = self.rng.random_bool(self.resends_per_event - whole);
        let count = whole as u64 + u64::from(extra);
        let window = RESEND_WINDOW.min(self.cfg.events - self.emitted);
        if window == 0 {
            return;
        }
        for _ in 0..count {
            let due = self.emitted + self.rng.random_range(1..=window);
            self.resends_scheduled += 1;
            let mut event = ev.clone();
            event.duplicate = true;
            self.resends.push(Reverse(Resend {
                due,
                seq: self.resends_scheduled,
                event,
            }));
        }
    }

    /// Generates the next distinct event. `room_for_pair` says whether an out-of-order payment
    /// (two items: the payment, then its invoice) still fits in the stream.
    fn generate(&mut self, room_for_pair: bool) -> GeneratedEvent {
        let t = self.pick_tenant();
        let wanted = self.pick_kind();
        let Self {
            cfg,
            rng,
            tenants,
            states,
            pending,
            ..
        } = self;
        let profile = &tenants[t];
        let mut ctx = TenantCtx {
            rng,
            state: &mut states[t],
            profile,
            seed: cfg.seed,
            index: t,
        };
        let (event, writer_version) = match ctx.plan(wanted) {
            Step::Customer => (ctx.customer_upserted(), 1),
            Step::Activate => (ctx.subscription_activated(), 1),
            Step::Cancel(i) => (ctx.subscription_canceled(i), 1),
            Step::Usage(i) => (ctx.usage_aggregated(i), 1),
            Step::Invoice => ctx.invoice_finalized(),
            Step::Payment(i) => {
                if cfg.out_of_order > 0.0 && room_for_pair && ctx.rng.random_bool(cfg.out_of_order)
                {
                    // The invoice is created first (its business time is earlier) but held
                    // back, so the consumer sees a payment for an invoice it does not know yet.
                    let (invoice, invoice_version) = ctx.invoice_finalized();
                    let newest = ctx.state.invoices.len() - 1;
                    let payment = ctx.payment_captured(newest);
                    *pending = Some(GeneratedEvent {
                        event: invoice,
                        tenant_id: profile.tenant_id.clone(),
                        writer_version: invoice_version,
                        duplicate: false,
                    });
                    payment
                } else {
                    ctx.payment_captured(i)
                }
            }
            Step::CreditMemo(i) => (ctx.credit_memo_issued(i), 1),
        };
        GeneratedEvent {
            event,
            tenant_id: profile.tenant_id.clone(),
            writer_version,
            duplicate: false,
        }
    }
}

impl Iterator for Workload {
    type Item = GeneratedEvent;

    fn next(&mut self) -> Option<GeneratedEvent> {
        if self.emitted >= self.cfg.events {
            return None;
        }
        self.emitted += 1;
        if let Some(invoice) = self.pending.take() {
            // The invoice must follow its out-of-order payment directly; a re-send due now
            // waits one item.
            self.schedule_resends(&invoice);
            return Some(invoice);
        }
        if self.resends.peek().is_some_and(|r| r.0.due <= self.emitted) {
            return self.resends.pop().map(|r| r.0.event);
        }
        let room_for_pair = self.emitted < self.cfg.events;
        let ev = self.generate(room_for_pair);
        self.schedule_resends(&ev);
        Some(ev)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.cfg.events - self.emitted).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// What a tenant does next, after prerequisites are resolved; indices point into the tenant's
/// active subscriptions or remembered invoices.
#[derive(Debug, Clone, Copy)]
enum Step {
    Customer,
    Activate,
    Cancel(usize),
    Usage(usize),
    Invoice,
    Payment(usize),
    CreditMemo(usize),
}

#[derive(Debug)]
struct TenantState {
    /// Index into [`CURRENCY_ROTATION`].
    rotation: usize,
    /// Minor units per US cent, for converting the price list.
    minor_per_usd_cent: f64,
    /// Business time of the tenant's latest event.
    clock: i64,
    /// Customers upserted so far; customer `n` is `cus_<tenant>_<n>` for `n < customers`.
    customers: u32,
    subscriptions_started: u32,
    active: Vec<Subscription>,
    invoices: VecDeque<InvoiceRef>,
    invoices_issued: u32,
    payments_captured: u32,
    credit_memos_issued: u32,
}

impl TenantState {
    fn new(rotation: usize) -> Self {
        let profile = &CURRENCY_ROTATION[rotation];
        let exponent = Currency::parse(profile.code).map_or(2, |c| c.exponent());
        Self {
            rotation,
            minor_per_usd_cent: profile.per_usd * 10f64.powi(i32::from(exponent)) / 100.0,
            clock: BASE_TIME_MICROS,
            customers: 0,
            subscriptions_started: 0,
            active: Vec::new(),
            invoices: VecDeque::with_capacity(OPEN_INVOICES_PER_TENANT + 1),
            invoices_issued: 0,
            payments_captured: 0,
            credit_memos_issued: 0,
        }
    }

    fn currency(&self) -> &'static CurrencyProfile {
        &CURRENCY_ROTATION[self.rotation]
    }

    /// Converts a US-cent list price into the tenant's minor units (at least 1).
    fn price(&self, usd_cents: i64) -> i64 {
        ((usd_cents as f64) * self.minor_per_usd_cent)
            .round()
            .max(1.0) as i64
    }
}

#[derive(Debug)]
struct Subscription {
    id: String,
    customer: u32,
    plan: usize,
    seats: u32,
    /// Usage metered since the last invoice, per meter, times 1,000,000.
    usage: [i64; METER_COUNT],
    correlation_id: String,
    activation_event_id: String,
}

/// What payments and credit memos need to know about an earlier invoice.
#[derive(Debug)]
struct InvoiceRef {
    invoice_id: String,
    event_id: String,
    correlation_id: String,
    customer: u32,
    product_family: &'static str,
    subtotal: i64,
    tax: i64,
    /// Total minus payments and credits; negative after an over-payment.
    open: i64,
    credited: i64,
    tax_credited: i64,
}

/// Stable facts about a customer, derived from a hash rather than stored.
#[derive(Debug)]
struct CustomerFacts {
    hash: u64,
    region: &'static TaxRegion,
    /// Business customers have a tax id.
    business: bool,
}

/// SplitMix64 finaliser: a cheap, well-mixed hash of the customer's coordinates.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n / d` rounded half away from zero, for `n >= 0` and `d > 0`.
fn div_round(n: i128, d: i128) -> i128 {
    (2 * n + d) / (2 * d)
}

/// The line amount rule of `Event::validate`: quantity x unit price, rounded half away from zero.
fn line_amount(quantity_micros: i64, unit_minor: i64) -> i64 {
    let amount = div_round(
        i128::from(quantity_micros) * i128::from(unit_minor),
        1_000_000,
    );
    i64::try_from(amount).unwrap_or(i64::MAX)
}

fn uuid_text(rng: &mut ChaCha8Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    id.hyphenated()
        .encode_lower(&mut Uuid::encode_buffer())
        .to_owned()
}

/// The common envelope of a new event.
#[derive(Debug)]
struct Envelope {
    event_id: String,
    tenant_id: String,
    occurred_at: i64,
}

/// One tenant's view of the generator while it produces an event.
#[derive(Debug)]
struct TenantCtx<'a> {
    rng: &'a mut ChaCha8Rng,
    state: &'a mut TenantState,
    profile: &'a TenantProfile,
    seed: u64,
    index: usize,
}

impl TenantCtx<'_> {
    /// Resolves the wanted type to something the tenant can emit now.
    fn plan(&mut self, wanted: EventType) -> Step {
        let mut kind = wanted;
        loop {
            kind = match kind {
                EventType::CustomerUpserted => return Step::Customer,
                EventType::SubscriptionActivated | EventType::InvoiceFinalized
                    if self.state.customers == 0 =>
                {
                    EventType::CustomerUpserted
                }
                EventType::SubscriptionActivated => return Step::Activate,
                EventType::InvoiceFinalized => return Step::Invoice,
                EventType::SubscriptionCanceled | EventType::UsageAggregated
                    if self.state.active.is_empty() =>
                {
                    EventType::SubscriptionActivated
                }
                EventType::SubscriptionCanceled => {
                    return Step::Cancel(self.rng.random_range(0..self.state.active.len()));
                }
                EventType::UsageAggregated => {
                    return Step::Usage(self.rng.random_range(0..self.state.active.len()));
                }
                EventType::PaymentCaptured => match self.pick_invoice(|i| i.open > 0) {
                    Some(i) => return Step::Payment(i),
                    None => EventType::InvoiceFinalized,
                },
                EventType::CreditMemoIssued => match self.pick_invoice(|i| i.credited < i.subtotal)
                {
                    Some(i) => return Step::CreditMemo(i),
                    None => EventType::InvoiceFinalized,
                },
                // Not in the default mix (corrections would change the manifest's figures);
                // asked for anyway, the tenant emits an invoice.
                EventType::InvoiceVoided | EventType::PaymentRefunded => {
                    EventType::InvoiceFinalized
                }
            };
        }
    }

    /// A remembered invoice matching `pred`, scanning from a random start.
    fn pick_invoice(&mut self, pred: impl Fn(&InvoiceRef) -> bool) -> Option<usize> {
        let len = self.state.invoices.len();
        if len == 0 {
            return None;
        }
        let start = self.rng.random_range(0..len);
        (0..len)
            .map(|k| (start + k) % len)
            .find(|i| pred(&self.state.invoices[*i]))
    }

    fn envelope(&mut self) -> Envelope {
        self.state.clock += self.rng.random_range(1..=MAX_STEP_MICROS);
        Envelope {
            event_id: uuid_text(self.rng),
            tenant_id: self.profile.tenant_id.as_str().to_owned(),
            occurred_at: self.state.clock,
        }
    }

    fn customer_id(&self, n: u32) -> String {
        format!("cus_{}_{:06}", self.profile.tenant_id, n + 1)
    }

    fn customer(&self, n: u32) -> CustomerFacts {
        let hash = mix64(self.seed ^ ((self.index as u64) << 32) ^ u64::from(n));
        let regions = self.state.currency().regions;
        CustomerFacts {
            hash,
            region: &REGIONS[regions[(hash >> 40) as usize % regions.len()]],
            business: (hash >> 8) & 3 != 0,
        }
    }

    fn random_customer(&mut self) -> u32 {
        self.rng.random_range(0..self.state.customers)
    }

    fn customer_upserted(&mut self) -> Event {
        let is_new = self.state.customers == 0 || self.rng.random_bool(0.75);
        let n = if is_new {
            self.state.customers += 1;
            self.state.customers - 1
        } else {
            self.random_customer()
        };
        let facts = self.customer(n);
        let stem = NAME_STEMS[(facts.hash % NAME_STEMS.len() as u64) as usize];
        let kind = NAME_KINDS[((facts.hash >> 16) % NAME_KINDS.len() as u64) as usize];
        let name = format!("{stem} {kind}");
        let domain: String = name
            .chars()
            .map(|c| {
                if c == ' ' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        // New customers start with a billing mailbox; updates move it (or drop it).
        let email = if is_new {
            Some(format!("billing@{domain}-{}.example", n + 1))
        } else if self.rng.random_bool(0.9) {
            let mailbox = MAILBOXES[self.rng.random_range(0..MAILBOXES.len())];
            Some(format!("{mailbox}@{domain}-{}.example", n + 1))
        } else {
            None
        };
        let tax_id = facts.business.then(|| {
            format!(
                "{}{:09}",
                facts.region.country,
                (facts.hash >> 24) % 1_000_000_000
            )
        });
        let env = self.envelope();
        Event::CustomerUpserted(CustomerUpserted {
            event_id: env.event_id,
            tenant_id: env.tenant_id,
            occurred_at: env.occurred_at,
            correlation_id: uuid_text(self.rng),
            causation_id: None,
            source: "billing-api".to_owned(),
            customer_id: self.customer_id(n),
            name,
            email,
            country: facts.region.country.to_owned(),
            currency: self.state.currency().code.to_owned(),
            tax_id,
        })
    }

    fn subscription_activated(&mut self) -> Event {
        let customer = self.random_customer();
        let mut r = self.rng.random_range(0..PLAN_WEIGHT_TOTAL);
        let plan = PLANS
            .iter()
            .position(|p| {
                let hit = r < p.weight;
                r = r.saturating_sub(p.weight);
                hit
            })
            .unwrap_or(0);
        let seats = if PLANS[plan].per_seat {
            self.rng.random_range(1..=120)
        } else {
            1
        };
        self.state.subscriptions_started += 1;
        let id = format!(
            "sub_{}_{:06}",
            self.profile.tenant_id, self.state.subscriptions_started
        );
        let env = self.envelope();
        let correlation_id = uuid_text(self.rng);
        self.state.active.push(Subscription {
            id: id.clone(),
            customer,
            plan,
            seats,
            usage: [0; METER_COUNT],
            correlation_id: correlation_id.clone(),
            activation_event_id: env.event_id.clone(),
        });
        let p = &PLANS[plan];
        Event::SubscriptionActivated(SubscriptionActivated {
            event_id: env.event_id,
            tenant_id: env.tenant_id,
            occurred_at: env.occurred_at,
            correlation_id,
            causation_id: None,
            source: "billing-api".to_owned(),
            subscription_id: id,
            customer_id: self.customer_id(customer),
            plan_id: p.id.to_owned(),
            product_family: p.product_family.to_owned(),
            currency: self.state.currency().code.to_owned(),
            unit_amount_minor: self.state.price(p.usd_cents),
            billing_interval: p.interval.to_owned(),
            started_at: env.occurred_at,
        })
    }

    fn subscription_canceled(&mut self, index: usize) -> Event {
        let sub = self.state.active.swap_remove(index);
        let env = self.envelope();
        let reason = self
            .rng
            .random_bool(0.8)
            .then(|| CANCEL_REASONS[self.rng.random_range(0..CANCEL_REASONS.len())].to_owned());
        let effective_at = env.occurred_at + self.rng.random_range(0..=30) * DAY_MICROS;
        Event::SubscriptionCanceled(SubscriptionCanceled {
            event_id: env.event_id,
            tenant_id: env.tenant_id,
            occurred_at: env.occurred_at,
            correlation_id: sub.correlation_id,
            causation_id: Some(sub.activation_event_id),
            source: "billing-api".to_owned(),
            subscription_id: sub.id,
            customer_id: self.customer_id(sub.customer),
            reason,
            effective_at,
        })
    }

    fn usage_aggregated(&mut self, index: usize) -> Event {
        let m = self.rng.random_range(0..METER_COUNT);
        let quantity = self.rng.random_range(1..=METERS[m].max_quantity_micros);
        let env = self.envelope();
        let sub = &mut self.state.active[index];
        sub.usage[m] = sub.usage[m].saturating_add(quantity);
        let period_end = env.occurred_at - env.occurred_at % HOUR_MICROS;
        let (subscription_id, correlation_id, customer) =
            (sub.id.clone(), sub.correlation_id.clone(), sub.customer);
        Event::UsageAggregated(UsageAggregated {
            event_id: env.event_id,
            tenant_id: env.tenant_id,
            occurred_at: env.occurred_at,
            correlation_id,
            causation_id: None,
            source: "metering".to_owned(),
            subscription_id,
            customer_id: self.customer_id(customer),
            meter: METERS[m].name.to_owned(),
            quantity_micros: quantity,
            period_start: period_end - HOUR_MICROS,
            period_end,
        })
    }

    /// Appends a one-off charge line and returns its product family.
    fn charge_line(&mut self, lines: &mut Vec<InvoiceLine>) -> &'static str {
        let c = &CHARGES[self.rng.random_range(0..CHARGES.len())];
        let quantity = c.step_micros * self.rng.random_range(1..=c.max_steps);
        let unit = self.state.price(c.usd_cents);
        lines.push(InvoiceLine {
            line_id: format!("L{}", lines.len() + 1),
            description: c.description.to_owned(),
            product_family: c.product_family.to_owned(),
            quantity_micros: quantity,
            unit_amount_minor: unit,
            amount_minor: line_amount(quantity, unit),
        });
        c.product_family
    }

    /// A new invoice (remembered for later payments and credit memos) and its writer version.
    fn invoice_finalized(&mut self) -> (Event, u8) {
        let mut lines = Vec::with_capacity(METER_COUNT + 2);
        let mut subscription_id = None;
        let customer;
        // Family of the first line: what a credit memo against this invoice reverses.
        let family;
        if !self.state.active.is_empty() && self.rng.random_bool(0.85) {
            // A subscription invoice: the plan line, then the usage metered since the last one.
            let index = self.rng.random_range(0..self.state.active.len());
            let prorated_days = self
                .rng
                .random_bool(0.15)
                .then(|| self.rng.random_range(1..=29));
            let sub = &self.state.active[index];
            let plan = &PLANS[sub.plan];
            let base = i64::from(sub.seats) * 1_000_000;
            let quantity = prorated_days.map_or(base, |days| base * days / 30);
            let unit = self.state.price(plan.usd_cents);
            let description = match (plan.per_seat, prorated_days) {
                (true, None) => format!("{} plan, per seat ({}ly)", plan.name, plan.interval),
                (true, Some(_)) => format!("{} plan, per seat (prorated)", plan.name),
                (false, None) => format!("{} plan ({}ly)", plan.name, plan.interval),
                (false, Some(_)) => format!("{} plan (prorated)", plan.name),
            };
            lines.push(InvoiceLine {
                line_id: "L1".to_owned(),
                description,
                product_family: plan.product_family.to_owned(),
                quantity_micros: quantity,
                unit_amount_minor: unit,
                amount_minor: line_amount(quantity, unit),
            });
            for (m, meter) in METERS.iter().enumerate() {
                let used = sub.usage[m];
                if used > 0 {
                    let unit = self.state.price(meter.usd_cents);
                    lines.push(InvoiceLine {
                        line_id: format!("L{}", lines.len() + 1),
                        description: meter.description.to_owned(),
                        product_family: "usage".to_owned(),
                        quantity_micros: used,
                        unit_amount_minor: unit,
                        amount_minor: line_amount(used, unit),
                    });
                }
            }
            customer = sub.customer;
            family = plan.product_family;
            subscription_id = Some(sub.id.clone());
            self.state.active[index].usage = [0; METER_COUNT];
            if self.rng.random_bool(0.1) {
                self.charge_line(&mut lines);
            }
        } else {
            // A one-off invoice for services and add-ons.
            customer = self.random_customer();
            family = self.charge_line(&mut lines);
            for _ in 1..self.rng.random_range(1..=3) {
                self.charge_line(&mut lines);
            }
        }
        let subtotal: i64 = lines.iter().map(|l| l.amount_minor).sum();
        let facts = self.customer(customer);
        let tax_lines: Vec<TaxLine> = if facts.region.reverse_charge && facts.business {
            vec![TaxLine {
                jurisdiction: facts.region.country.to_owned(),
                rate_bps: 0,
                taxable_amount_minor: subtotal,
                amount_minor: 0,
            }]
        } else {
            facts
                .region
                .lines
                .iter()
                .map(|(jurisdiction, rate_bps)| TaxLine {
                    jurisdiction: (*jurisdiction).to_owned(),
                    rate_bps: *rate_bps,
                    taxable_amount_minor: subtotal,
                    amount_minor: div_round(i128::from(subtotal) * i128::from(*rate_bps), 10_000)
                        as i64,
                })
                .collect()
        };
        let tax: i64 = tax_lines.iter().map(|t| t.amount_minor).sum();
        let writer_version = if self.rng.random_bool(0.5) { 2 } else { 1 };
        let purchase_order = (writer_version == 2 && self.rng.random_bool(0.4))
            .then(|| format!("PO-{}", self.rng.random_range(100_000..1_000_000)));
        let due_days = [0, 14, 30, 30, 45][self.rng.random_range(0..5)];
        self.state.invoices_issued += 1;
        let seq = self.state.invoices_issued;
        let invoice_id = format!("in_{}_{seq:07}", self.profile.tenant_id);
        let env = self.envelope();
        let correlation_id = uuid_text(self.rng);
        self.state.invoices.push_back(InvoiceRef {
            invoice_id: invoice_id.clone(),
            event_id: env.event_id.clone(),
            correlation_id: correlation_id.clone(),
            customer,
            product_family: family,
            subtotal,
            tax,
            open: subtotal + tax,
            credited: 0,
            tax_credited: 0,
        });
        if self.state.invoices.len() > OPEN_INVOICES_PER_TENANT {
            self.state.invoices.pop_front();
        }
        let event = Event::InvoiceFinalized(InvoiceFinalized {
            event_id: env.event_id,
            tenant_id: env.tenant_id,
            occurred_at: env.occurred_at,
            correlation_id,
            causation_id: None,
            source: "billing-api".to_owned(),
            invoice_id,
            invoice_number: format!("INV-{seq:06}"),
            customer_id: self.customer_id(customer),
            subscription_id,
            currency: self.state.currency().code.to_owned(),
            issued_at: env.occurred_at,
            due_at: env.occurred_at + due_days * DAY_MICROS,
            lines,
            tax_lines,
            subtotal_minor: subtotal,
            tax_minor: tax,
            total_minor: subtotal + tax,
            purchase_order,
        });
        (event, writer_version)
    }

    /// A payment of the remembered invoice at `index` (which has an open amount) and its
    /// writer version.
    fn payment_captured(&mut self, index: usize) -> (Event, u8) {
        let open = self.state.invoices[index].open;
        // Most customers pay the open amount; some pay in part, a few pay too much.
        let amount = match self.rng.random_range(0..100) {
            0..80 => open,
            80..92 => (open * self.rng.random_range(10..=90) / 100).max(1),
            _ => open + (open * self.rng.random_range(1..=50) / 1000).max(1),
        };
        let mut r = self.rng.random_range(0..PAYMENT_METHOD_WEIGHT_TOTAL);
        let (method, _, fee_low, fee_high) = *PAYMENT_METHODS
            .iter()
            .find(|m| {
                let hit = r < m.1;
                r = r.saturating_sub(m.1);
                hit
            })
            .unwrap_or(&PAYMENT_METHODS[0]);
        let fee_bps = self.rng.random_range(fee_low..=fee_high);
        let fee = (i128::from(amount) * i128::from(fee_bps) / 10_000) as i64;
        let writer_version = if self.rng.random_bool(0.5) { 2 } else { 1 };
        let settlement_currency = (writer_version == 2 && self.rng.random_bool(0.3))
            .then(|| self.state.currency().settles_in.to_owned());
        let processor_reference =
            format!("ch_{:016x}{:08x}", self.rng.next_u64(), self.rng.next_u32());
        self.state.payments_captured += 1;
        let payment_id = format!(
            "pay_{}_{:07}",
            self.profile.tenant_id, self.state.payments_captured
        );
        let env = self.envelope();
        let invoice = &mut self.state.invoices[index];
        invoice.open -= amount;
        let (invoice_id, correlation_id, causation, customer) = (
            invoice.invoice_id.clone(),
            invoice.correlation_id.clone(),
            invoice.event_id.clone(),
            invoice.customer,
        );
        let event = Event::PaymentCaptured(PaymentCaptured {
            event_id: env.event_id,
            tenant_id: env.tenant_id,
            occurred_at: env.occurred_at,
            correlation_id,
            causation_id: Some(causation),
            source: "payments-service".to_owned(),
            payment_id,
            invoice_id,
            customer_id: self.customer_id(customer),
            currency: self.state.currency().code.to_owned(),
            amount_minor: amount,
            fee_minor: fee,
            method: method.to_owned(),
            processor_reference,
            captured_at: env.occurred_at,
            settlement_currency,
        });
        (event, writer_version)
    }

    /// A credit memo against the remembered invoice at `index` (which has net left to credit).
    fn credit_memo_issued(&mut self, index: usize) -> Event {
        let full = self.rng.random_bool(0.3);
        let percent = self.rng.random_range(5..=50);
        let reason = CREDIT_REASONS[self.rng.random_range(0..CREDIT_REASONS.len())];
        self.state.credit_memos_issued += 1;
        let seq = self.state.credit_memos_issued;
        let env = self.envelope();
        let invoice = &mut self.state.invoices[index];
        let creditable = invoice.subtotal - invoice.credited;
        let amount = if full {
            creditable
        } else {
            (creditable * percent / 100).max(1)
        };
        // Tax is credited in proportion; the last credit takes exactly what is left so the
        // credited tax never exceeds the invoiced tax through rounding.
        let tax_left = invoice.tax - invoice.tax_credited;
        let tax = if amount == creditable {
            tax_left
        } else {
            let share = div_round(
                i128::from(amount) * i128::from(invoice.tax),
                i128::from(invoice.subtotal),
            );
            (share as i64).min(tax_left)
        };
        invoice.credited += amount;
        invoice.tax_credited += tax;
        invoice.open -= amount + tax;
        let (invoice_id, correlation_id, causation, customer, family) = (
            invoice.invoice_id.clone(),
            invoice.correlation_id.clone(),
            invoice.event_id.clone(),
            invoice.customer,
            invoice.product_family,
        );
        Event::CreditMemoIssued(CreditMemoIssued {
            event_id: env.event_id,
            tenant_id: env.tenant_id,
            occurred_at: env.occurred_at,
            correlation_id,
            causation_id: Some(causation),
            source: "billing-api".to_owned(),
            credit_memo_id: format!("cm_{}_{seq:07}", self.profile.tenant_id),
            credit_memo_number: format!("CM-{seq:06}"),
            invoice_id,
            customer_id: self.customer_id(customer),
            currency: self.state.currency().code.to_owned(),
            product_family: family.to_owned(),
            amount_minor: amount,
            tax_minor: tax,
            total_minor: amount + tax,
            reason: reason.to_owned(),
            issued_at: env.occurred_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    fn generate(cfg: WorkloadConfig) -> Vec<GeneratedEvent> {
        Workload::new(cfg).unwrap().collect()
    }

    fn cfg(tenants: u32, events: u64) -> WorkloadConfig {
        WorkloadConfig {
            tenants,
            events,
            ..Default::default()
        }
    }

    fn invoice_id(ev: &Event) -> Option<&str> {
        match ev {
            Event::InvoiceFinalized(e) => Some(&e.invoice_id),
            _ => None,
        }
    }

    fn currency_of(ev: &Event) -> Option<&str> {
        match ev {
            Event::CustomerUpserted(e) => Some(&e.currency),
            Event::SubscriptionActivated(e) => Some(&e.currency),
            Event::InvoiceFinalized(e) => Some(&e.currency),
            Event::PaymentCaptured(e) => Some(&e.currency),
            Event::CreditMemoIssued(e) => Some(&e.currency),
            Event::PaymentRefunded(e) => Some(&e.currency),
            Event::SubscriptionCanceled(_)
            | Event::UsageAggregated(_)
            | Event::InvoiceVoided(_) => None,
        }
    }

    /// Checks the invariants every stream must keep; shared by the unit tests and the proptest.
    fn assert_well_formed(
        cfg: &WorkloadConfig,
        tenants: &[TenantProfile],
        events: &[GeneratedEvent],
    ) {
        assert_eq!(events.len() as u64, cfg.events);
        let by_id: HashMap<&str, &TenantProfile> =
            tenants.iter().map(|t| (t.tenant_id.as_str(), t)).collect();
        let mut distinct: HashMap<&str, &GeneratedEvent> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            let meta = ev
                .event
                .validate()
                .unwrap_or_else(|e| panic!("item {i}: {e}: {ev:?}"));
            assert_eq!(meta.tenant_id, ev.tenant_id);
            let profile = by_id[ev.tenant_id.as_str()];
            if let Some(currency) = currency_of(&ev.event) {
                assert_eq!(currency, profile.currency.code(), "item {i}");
            }
            assert_v2_fields_only_in_v2(ev);
            let id = ev.event.event_id_raw();
            if ev.duplicate {
                assert!(i > 0, "a duplicate came first");
                let original = distinct
                    .get(id)
                    .unwrap_or_else(|| panic!("duplicate {i} of nothing"));
                assert_eq!(
                    original.event, ev.event,
                    "duplicate {i} is not an exact re-send"
                );
                assert_eq!(original.writer_version, ev.writer_version);
                assert_eq!(original.tenant_id, ev.tenant_id);
            } else {
                assert!(distinct.insert(id, ev).is_none(), "event id {id} reused");
            }
        }
    }

    fn assert_v2_fields_only_in_v2(ev: &GeneratedEvent) {
        match &ev.event {
            Event::InvoiceFinalized(e) => {
                assert!(matches!(ev.writer_version, 1 | 2));
                if ev.writer_version == 1 {
                    assert_eq!(e.purchase_order, None);
                }
            }
            Event::PaymentCaptured(e) => {
                assert!(matches!(ev.writer_version, 1 | 2));
                if ev.writer_version == 1 {
                    assert_eq!(e.settlement_currency, None);
                }
            }
            _ => assert_eq!(
                ev.writer_version,
                1,
                "{:?} has no v2",
                ev.event.event_type()
            ),
        }
    }

    #[test]
    fn the_same_seed_yields_the_same_sequence() {
        let base = WorkloadConfig {
            duplicates: 0.05,
            out_of_order: 0.2,
            seed: 99,
            ..cfg(20, 5_000)
        };
        let a = generate(base.clone());
        let b = generate(base.clone());
        assert_eq!(a, b);
        let c = generate(WorkloadConfig { seed: 100, ..base });
        assert_ne!(a, c);
        assert_ne!(a[0].event.event_id_raw(), c[0].event.event_id_raw());
    }

    #[test]
    fn yields_exactly_the_configured_number_of_items() {
        for events in [0, 1, 2, 3, 7, 1_000] {
            for (duplicates, out_of_order) in [(0.0, 0.0), (0.5, 1.0), (0.9, 0.5)] {
                let c = WorkloadConfig {
                    duplicates,
                    out_of_order,
                    ..cfg(3, events)
                };
                let mut w = Workload::new(c).unwrap();
                assert_eq!(w.size_hint(), (events as usize, Some(events as usize)));
                assert_eq!(w.by_ref().count() as u64, events);
                assert!(w.next().is_none());
            }
        }
    }

    #[test]
    fn duplicate_fraction_follows_the_config() {
        let items = generate(WorkloadConfig {
            duplicates: 0.05,
            ..cfg(10, 20_000)
        });
        let dups = items.iter().filter(|e| e.duplicate).count();
        let fraction = dups as f64 / items.len() as f64;
        assert!((0.04..=0.06).contains(&fraction), "{fraction}");
        assert!(!items[0].duplicate);

        // Out-of-order pairs must not eat into the fraction.
        let items = generate(WorkloadConfig {
            duplicates: 0.05,
            out_of_order: 1.0,
            ..cfg(10, 20_000)
        });
        let fraction = items.iter().filter(|e| e.duplicate).count() as f64 / 20_000.0;
        assert!((0.04..=0.06).contains(&fraction), "{fraction}");

        let items = generate(cfg(10, 20_000));
        assert_eq!(items.iter().filter(|e| e.duplicate).count(), 0);
    }

    #[test]
    fn every_event_validates_and_belongs_to_its_tenant() {
        let c = WorkloadConfig {
            duplicates: 0.05,
            out_of_order: 0.2,
            seed: 3,
            ..cfg(16, 20_000)
        };
        let w = Workload::new(c.clone()).unwrap();
        let tenants = w.tenants().to_vec();
        let items: Vec<_> = w.collect();
        assert_well_formed(&c, &tenants, &items);
    }

    #[test]
    fn tenants_are_numbered_named_and_zipf_weighted() {
        let w = Workload::new(cfg(4, 0)).unwrap();
        let ids: Vec<_> = w.tenants().iter().map(|t| t.tenant_id.as_str()).collect();
        assert_eq!(ids, ["t001", "t002", "t003", "t004"]);
        let codes: Vec<_> = w.tenants().iter().map(|t| t.currency.code()).collect();
        assert_eq!(codes, ["USD", "EUR", "GBP", "JPY"]);
        assert_eq!(w.tenants()[0].legal_entity, "Tenant 001 Inc.");
        let sum: f64 = w.tenants().iter().map(|t| t.weight).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        assert!(w.tenants().windows(2).all(|p| p[0].weight > p[1].weight));

        let w = Workload::new(cfg(1_000, 0)).unwrap();
        assert_eq!(w.tenants()[0].tenant_id.as_str(), "t0001");
        assert_eq!(w.tenants()[999].tenant_id.as_str(), "t1000");
        assert_eq!(w.tenants()[0].legal_entity, "Tenant 0001 Inc.");
    }

    #[test]
    fn a_few_tenants_dominate() {
        let counts = |zipf_exponent| {
            let items = generate(WorkloadConfig {
                zipf_exponent,
                ..cfg(50, 20_000)
            });
            let mut per: HashMap<String, u64> = HashMap::new();
            for ev in &items {
                *per.entry(ev.tenant_id.to_string()).or_default() += 1;
            }
            let mut sorted: Vec<u64> = (1..=50)
                .map(|i| per.get(&format!("t{i:03}")).copied().unwrap_or(0))
                .collect();
            let top = sorted[0];
            sorted.sort_unstable();
            (top, sorted[25])
        };
        let (top, median) = counts(1.1);
        assert!(top > 10 * median, "top {top}, median {median}");
        let (top, median) = counts(0.0);
        assert!(top < 2 * median, "uniform: top {top}, median {median}");
    }

    #[test]
    fn the_event_mix_is_roughly_as_designed() {
        let items = generate(WorkloadConfig {
            seed: 11,
            ..cfg(20, 100_000)
        });
        let mut per: HashMap<EventType, f64> = HashMap::new();
        for ev in &items {
            *per.entry(ev.event.event_type()).or_default() += 1.0 / items.len() as f64;
        }
        for (kind, pct) in MIX {
            let got = per.get(&kind).copied().unwrap_or(0.0) * 100.0;
            assert!(
                (got - f64::from(pct)).abs() < 3.0,
                "{kind}: {got:.1}% vs {pct}%"
            );
        }
    }

    /// Replays the stream and checks every reference against what came before it.
    fn assert_lifecycles(items: &[GeneratedEvent], out_of_order: bool) -> usize {
        let mut customers: HashSet<(&str, &str)> = HashSet::new();
        let mut subs: HashMap<(&str, &str), bool> = HashMap::new(); // active?
        let mut invoices: HashMap<(&str, &str), (&InvoiceFinalized, i64)> = HashMap::new();
        let mut early_payments = 0;
        let distinct: Vec<&GeneratedEvent> = items.iter().filter(|e| !e.duplicate).collect();
        for (i, ev) in distinct.iter().enumerate() {
            let t = ev.tenant_id.as_str();
            match &ev.event {
                Event::CustomerUpserted(e) => {
                    customers.insert((t, &e.customer_id));
                }
                Event::SubscriptionActivated(e) => {
                    assert!(customers.contains(&(t, e.customer_id.as_str())));
                    assert!(subs.insert((t, &e.subscription_id), true).is_none());
                }
                Event::SubscriptionCanceled(e) => {
                    assert!(customers.contains(&(t, e.customer_id.as_str())));
                    let active = subs.get_mut(&(t, e.subscription_id.as_str())).unwrap();
                    assert!(*active, "canceled twice");
                    *active = false;
                }
                Event::UsageAggregated(e) => {
                    assert!(customers.contains(&(t, e.customer_id.as_str())));
                    assert_eq!(subs.get(&(t, e.subscription_id.as_str())), Some(&true));
                }
                Event::InvoiceFinalized(e) => {
                    assert!(customers.contains(&(t, e.customer_id.as_str())));
                    if let Some(sub) = &e.subscription_id {
                        assert_eq!(subs.get(&(t, sub.as_str())), Some(&true));
                    }
                    invoices.insert((t, &e.invoice_id), (e, 0));
                }
                Event::PaymentCaptured(e) => {
                    assert!(customers.contains(&(t, e.customer_id.as_str())));
                    assert!(e.fee_minor * 10_000 <= e.amount_minor * 300, "fee above 3%");
                    let invoice = match invoices.get(&(t, e.invoice_id.as_str())) {
                        Some((inv, _)) => *inv,
                        None => {
                            assert!(out_of_order, "payment {i} for an unknown invoice");
                            // The very next item of the stream is that invoice, same tenant.
                            let pos = items.iter().position(|x| std::ptr::eq(x, *ev)).unwrap();
                            let next = &items[pos + 1];
                            assert!(!next.duplicate);
                            assert_eq!(next.tenant_id, ev.tenant_id);
                            assert_eq!(invoice_id(&next.event), Some(e.invoice_id.as_str()));
                            early_payments += 1;
                            let Event::InvoiceFinalized(inv) = &next.event else {
                                unreachable!()
                            };
                            assert!(inv.occurred_at < e.occurred_at);
                            inv
                        }
                    };
                    assert_eq!(e.causation_id.as_deref(), Some(invoice.event_id.as_str()));
                    assert_eq!(e.correlation_id, invoice.correlation_id);
                    assert_eq!(e.customer_id, invoice.customer_id);
                    assert_eq!(e.currency, invoice.currency);
                }
                Event::CreditMemoIssued(e) => {
                    let (inv, credited) = invoices
                        .get_mut(&(t, e.invoice_id.as_str()))
                        .unwrap_or_else(|| panic!("credit memo {i} for an unknown invoice"));
                    *credited += e.amount_minor;
                    assert!(
                        *credited <= inv.subtotal_minor,
                        "credited more than the subtotal"
                    );
                    assert_eq!(e.causation_id.as_deref(), Some(inv.event_id.as_str()));
                    assert_eq!(e.correlation_id, inv.correlation_id);
                    // Proportional tax, give or take rounding; the memo that credits the rest
                    // of the subtotal takes the rest of the tax, absorbing the earlier memos'
                    // rounding, so it is exempt from the per-memo tolerance.
                    let expected =
                        e.amount_minor as f64 * inv.tax_minor as f64 / inv.subtotal_minor as f64;
                    assert!(
                        *credited == inv.subtotal_minor
                            || (e.tax_minor as f64 - expected).abs() <= 1.0,
                        "{e:?} vs {inv:?}"
                    );
                    assert!(
                        e.tax_minor <= inv.tax_minor,
                        "credited more tax than invoiced"
                    );
                }
                Event::InvoiceVoided(_) | Event::PaymentRefunded(_) => {
                    panic!("event {i}: the workload emits no corrections")
                }
            }
        }
        early_payments
    }

    #[test]
    fn references_point_to_earlier_events_of_the_same_tenant() {
        let items = generate(WorkloadConfig {
            duplicates: 0.05,
            seed: 5,
            ..cfg(8, 20_000)
        });
        assert_eq!(assert_lifecycles(&items, false), 0);
    }

    #[test]
    fn out_of_order_payments_precede_their_invoice() {
        let items = generate(WorkloadConfig {
            duplicates: 0.05,
            out_of_order: 0.3,
            seed: 5,
            ..cfg(8, 20_000)
        });
        let early = assert_lifecycles(&items, true);
        let payments = items
            .iter()
            .filter(|e| !e.duplicate && e.event.event_type() == EventType::PaymentCaptured)
            .count();
        let fraction = early as f64 / payments as f64;
        assert!((0.25..=0.35).contains(&fraction), "{fraction}");
    }

    #[test]
    fn business_time_increases_per_tenant() {
        let items = generate(cfg(5, 10_000));
        let mut last: HashMap<&str, i64> = HashMap::new();
        for ev in &items {
            let meta = ev.event.meta().unwrap();
            let prev = last.insert(ev.tenant_id.as_str(), meta.occurred_at);
            assert!(prev.is_none_or(|p| p < meta.occurred_at));
            assert!(meta.occurred_at > BASE_TIME_MICROS);
        }
    }

    #[test]
    fn v2_fields_only_appear_in_v2_events() {
        let items = generate(WorkloadConfig {
            seed: 8,
            ..cfg(10, 20_000)
        });
        let (mut v1, mut v2, mut po, mut settlement) = (0, 0, 0, 0);
        for ev in &items {
            assert_v2_fields_only_in_v2(ev);
            match &ev.event {
                Event::InvoiceFinalized(e) => {
                    po += usize::from(e.purchase_order.is_some());
                }
                Event::PaymentCaptured(e) => {
                    settlement += usize::from(e.settlement_currency.is_some());
                }
                _ => continue,
            }
            if ev.writer_version == 2 {
                v2 += 1
            } else {
                v1 += 1
            }
        }
        let share = v2 as f64 / (v1 + v2) as f64;
        assert!((0.45..=0.55).contains(&share), "{share}");
        assert!(po > 0 && settlement > 0);
    }

    #[test]
    fn invoices_carry_plan_usage_and_tax_lines() {
        let items = generate(WorkloadConfig {
            seed: 2,
            ..cfg(8, 20_000)
        });
        let invoices: Vec<&InvoiceFinalized> = items
            .iter()
            .filter_map(|e| match &e.event {
                Event::InvoiceFinalized(i) => Some(i),
                _ => None,
            })
            .collect();
        let families: HashSet<&str> = invoices
            .iter()
            .flat_map(|i| &i.lines)
            .map(|l| l.product_family.as_str())
            .collect();
        assert_eq!(
            families,
            HashSet::from(["platform", "usage", "support", "addons"])
        );
        let fractional = invoices
            .iter()
            .flat_map(|i| &i.lines)
            .filter(|l| l.product_family == "usage" && l.quantity_micros % 1_000_000 != 0)
            .count();
        assert!(fractional > 100, "{fractional}");
        assert!(invoices.iter().any(|i| i.tax_lines.len() == 2));
        assert!(invoices.iter().any(|i| i.tax_lines.is_empty()));
        assert!(
            invoices
                .iter()
                .any(|i| i.tax_lines.iter().any(|t| t.rate_bps == 0))
        );
        assert!(invoices.iter().all(|i| i.total_minor > 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn small_workloads_never_panic_and_always_validate(
            tenants in 1u32..30,
            events in 0u64..400,
            duplicates in 0.0f64..0.9,
            seed in any::<u64>(),
            zipf_exponent in 0.0f64..4.0,
            out_of_order in 0.0f64..=1.0,
        ) {
            let c = WorkloadConfig { tenants, events, duplicates, seed, zipf_exponent, out_of_order };
            let w = Workload::new(c.clone()).unwrap();
            let profiles = w.tenants().to_vec();
            let items: Vec<_> = w.collect();
            assert_well_formed(&c, &profiles, &items);
            assert_lifecycles(&items, out_of_order > 0.0);
        }
    }
}
