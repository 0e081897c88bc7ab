//! Usage reports: a query's parameters, parsed with every error naming its
//! parameter, and the report summed from the ledger rows a host read for
//! it, as JSON or CSV (the same rows and columns).

use super::sql::COUNT_COLUMNS;
use super::{Day, LedgerCounts, LedgerEntry};
use crate::error::GatewayError;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The longest range a report covers, in days.
const MAX_DAYS: u32 = 366;
/// Without `from`, a report covers this many days up to `to`.
const DEFAULT_DAYS: u32 = 31;

/// What a report's rows are summed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupBy {
    Tenant,
    Key,
    /// The model and version that answered.
    Model,
    Day,
}

impl GroupBy {
    fn parse(name: &str) -> Option<GroupBy> {
        Some(match name {
            "tenant" => GroupBy::Tenant,
            "key" => GroupBy::Key,
            "model" => GroupBy::Model,
            "day" => GroupBy::Day,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            GroupBy::Tenant => "tenant",
            GroupBy::Key => "key",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFormat {
    Json,
    Csv,
}

impl UsageFormat {
    /// CSV when the client's `Accept` asks for `text/csv`.
    pub fn from_accept(accept: Option<&str>) -> UsageFormat {
        match accept {
            Some(a) if a.to_ascii_lowercase().contains("text/csv") => UsageFormat::Csv,
            _ => UsageFormat::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            UsageFormat::Json => "application/json",
            UsageFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A usage report's parameters: whose usage (a tenant, a key, or all),
/// which UTC days (inclusive), summed by what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub tenant: Option<String>,
    pub key: Option<String>,
    pub from: Day,
    pub to: Day,
    /// Sorted, without repeats; never empty.
    pub group_by: Vec<GroupBy>,
}

fn bad(param: &str, message: String) -> GatewayError {
    GatewayError::invalid(message, Some(param))
}

/// A report's query string: each parameter once, none unknown.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn parse(query: &str, known: &[&str]) -> Result<Params, GatewayError> {
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if !known.contains(&&*name) {
                let name: String = name.chars().take(64).collect();
                return Err(bad(&name, format!("Unknown query parameter `{name}`.")));
            }
            if params
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(bad(&name, format!("`{name}` is given more than once.")));
            }
        }
        Ok(Params(params))
    }

    pub(super) fn get(&self, name: &str) -> Option<&String> {
        self.0.get(name)
    }

    /// A text parameter, if given; given empty is an error.
    pub(crate) fn text(&self, name: &str) -> Result<Option<String>, GatewayError> {
        match self.0.get(name) {
            Some(v) if v.is_empty() => Err(bad(name, format!("`{name}` is empty."))),
            v => Ok(v.cloned()),
        }
    }

    /// `from` and `to` (`YYYY-MM-DD`, UTC, inclusive): `to` defaults to
    /// `today`, `from` to `default_days` ending at `to`; at most `max_days`.
    pub(super) fn days(
        &self,
        today: Day,
        default_days: u32,
        max_days: u32,
    ) -> Result<(Day, Day), GatewayError> {
        let day = |name: &str| -> Result<Option<Day>, GatewayError> {
            self.0
                .get(name)
                .map(|v| Day::parse(v).map_err(|e| bad(name, format!("`{name}` {e}."))))
                .transpose()
        };
        let to = day("to")?.unwrap_or(today);
        let from = day("from")?.unwrap_or_else(|| to.minus(default_days - 1));
        if from > to {
            return Err(bad(
                "from",
                format!("`from` ({from}) is after `to` ({to})."),
            ));
        }
        if to.number() - from.number() >= max_days {
            return Err(bad(
                "from",
                format!("A report covers at most {max_days} days."),
            ));
        }
        Ok((from, to))
    }
}

impl UsageQuery {
    /// Parses `tenant`, `key`, `from`, `to` (`YYYY-MM-DD`, UTC; `to`
    /// defaults to `today`, `from` to 31 days ending at `to`) and
    /// `group_by` (a comma-separated list of `tenant`, `key`, `model`,
    /// `day`; all four by default) from a URL's query string.
    pub fn parse(query: &str, today: Day) -> Result<UsageQuery, GatewayError> {
        let params = Params::parse(query, &["tenant", "key", "from", "to", "group_by"])?;
        let (from, to) = params.days(today, DEFAULT_DAYS, MAX_DAYS)?;
        let mut group_by = match params.get("group_by") {
            None => vec![GroupBy::Tenant, GroupBy::Key, GroupBy::Model, GroupBy::Day],
            Some(list) => list
                .split(',')
                .map(|g| {
                    GroupBy::parse(g.trim()).ok_or_else(|| {
                        bad(
                            "group_by",
                            "`group_by` is a comma-separated list of tenant, key, model and day."
                                .into(),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        group_by.sort();
        group_by.dedup();
        Ok(UsageQuery {
            tenant: params.text("tenant")?,
            key: params.text("key")?,
            from,
            to,
            group_by,
        })
    }

    /// Whether a row belongs in the report (hosts read by tenant, key and
    /// days already; this is the definition they follow).
    pub fn selects(&self, entry: &LedgerEntry) -> bool {
        let k = &entry.key;
        self.tenant.as_ref().is_none_or(|t| *t == k.tenant)
            && self
                .key
                .as_ref()
                .is_none_or(|key| k.key.as_ref() == Some(key))
            && (self.from..=self.to).contains(&k.day)
    }

    fn groups(&self, by: GroupBy) -> bool {
        self.group_by.contains(&by)
    }
}

/// One row of a report: the dimensions it is grouped by (`None` where it
/// is not), and its sums.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    tenant: Option<String>,
    key: Option<Option<String>>,
    model: Option<(String, Option<String>)>,
    day: Option<Day>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    group: Group,
    pub counts: LedgerCounts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub query: UsageQuery,
    pub rows: Vec<UsageRow>,
    pub total: LedgerCounts,
}

impl UsageReport {
    /// Sums the rows `query` selects by its groups, in the order of their
    /// dimensions.
    pub fn build(query: UsageQuery, entries: impl IntoIterator<Item = LedgerEntry>) -> Self {
        let mut groups: BTreeMap<Group, LedgerCounts> = BTreeMap::new();
        let mut total = LedgerCounts::default();
        for entry in entries.into_iter().filter(|e| query.selects(e)) {
            let k = entry.key;
            let group = Group {
                tenant: query.groups(GroupBy::Tenant).then_some(k.tenant),
                key: query.groups(GroupBy::Key).then_some(k.key),
                model: query.groups(GroupBy::Model).then_some((k.model, k.version)),
                day: query.groups(GroupBy::Day).then_some(k.day),
            };
            groups.entry(group).or_default().add(&entry.counts);
            total.add(&entry.counts);
        }
        let rows = groups
            .into_iter()
            .map(|(group, counts)| UsageRow { group, counts })
            .collect();
        UsageReport { query, rows, total }
    }

    /// The column names of the report's dimensions.
    fn dimension_columns(&self) -> Vec<&'static str> {
        let mut columns = Vec::new();
        for by in &self.query.group_by {
            match by {
                GroupBy::Model => columns.extend(["model", "version"]),
                other => columns.push(other.name()),
            }
        }
        columns
    }

    fn dimension_values(row: &UsageRow) -> Vec<Option<String>> {
        let g = &row.group;
        let mut values = Vec::new();
        if let Some(t) = &g.tenant {
            values.push(Some(t.clone()));
        }
        if let Some(k) = &g.key {
            values.push(k.clone());
        }
        if let Some((m, v)) = &g.model {
            values.push(Some(m.clone()));
            values.push(v.clone());
        }
        if let Some(d) = g.day {
            values.push(Some(d.to_string()));
        }
        values
    }

    fn counts_json(c: &LedgerCounts, into: &mut Map<String, Value>) {
        for (name, value) in COUNT_COLUMNS.iter().zip(c.count_columns()) {
            into.insert((*name).into(), json!(value));
        }
        into.insert("cost_usd".into(), json!(c.cost_micros as f64 / 1e6));
    }

    pub fn to_json(&self) -> String {
        self.to_json_value().to_string()
    }

    pub fn to_json_value(&self) -> Value {
        let columns = self.dimension_columns();
        let data: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut object = Map::new();
                for (name, value) in columns.iter().zip(Self::dimension_values(row)) {
                    object.insert((*name).into(), json!(value));
                }
                Self::counts_json(&row.counts, &mut object);
                Value::Object(object)
            })
            .collect();
        let mut total = Map::new();
        Self::counts_json(&self.total, &mut total);
        let group_by: Vec<&str> = self.query.group_by.iter().map(|g| g.name()).collect();
        json!({
            "object": "usage_report",
            "from": self.query.from,
            "to": self.query.to,
            "tenant": self.query.tenant,
            "key": self.query.key,
            "group_by": group_by,
            "data": data,
            "total": total,
        })
    }

    /// A header line, then one line per row: the dimensions (empty where
    /// none, as a token's key or a cache hit's version), then the counts.
    pub fn to_csv(&self) -> String {
        let mut out = csv::Writer::from_writer(Vec::new());
        let header = self.dimension_columns().into_iter().chain(COUNT_COLUMNS);
        let mut written = out.write_record(header);
        for row in &self.rows {
            let dims = Self::dimension_values(row)
                .into_iter()
                .map(Option::unwrap_or_default);
            let counts = row.counts.count_columns().map(|n| n.to_string());
            written = written.and_then(|()| out.write_record(dims.chain(counts)));
        }
        // Writing to memory cannot fail; a failure would show as a short body.
        let bytes = written
            .ok()
            .and_then(|()| out.into_inner().ok())
            .unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    pub fn render(&self, format: UsageFormat) -> String {
        match format {
            UsageFormat::Json => self.to_json(),
            UsageFormat::Csv => self.to_csv(),
        }
    }
}
