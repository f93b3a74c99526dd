//! Resource quantities as kube-state-metrics reports them. The `resource` label is the resource
//! name with every character outside `[a-zA-Z0-9_]` replaced by `_` (`ephemeral-storage` ->
//! `ephemeral_storage`, `nvidia.com/gpu` -> `nvidia_com_gpu`). Which resources appear, their
//! `unit` and their value (kube-state-metrics v2.20, `internal/store/pod.go` and `node.go`):
//!
//! | resource | unit | container requests/limits | node capacity/allocatable |
//! |---|---|---|---|
//! | `cpu` | `core` | milli-precision, rounded up (`100n` -> 0.001) | the same |
//! | `memory`, `storage`, `ephemeral-storage`, `hugepages-*`, `attachable-volumes-*` | `byte` | whole units, rounded up | milli-precision |
//! | `pods` | `integer` | not reported | milli-precision |
//! | extended (`<domain>/<name>`, domain not `kubernetes.io`) | `integer` | whole units, rounded up | milli-precision |
//! | any other | — | not reported | not reported |
//!
//! "Rounded up" is away from zero, as the API machinery's `Quantity.Value()` and
//! `MilliValue()` do; a value beyond what milli-units hold in 64 bits is reported whole.

/// Whose quantities: the rules differ between a Pod's containers and a Node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Container,
    Node,
}

/// The (resource label, unit label, value) of one quantity; `None` when kube-state-metrics does
/// not report that resource for `owner`, or the quantity does not parse.
pub fn resource_sample(owner: Owner, name: &str, quantity: &str) -> Option<(String, &'static str, f64)> {
    let unit = match name {
        "cpu" => "core",
        "memory" | "storage" | "ephemeral-storage" => "byte",
        "pods" if owner == Owner::Node => "integer",
        n if n.starts_with("hugepages-") || n.starts_with("attachable-volumes-") => "byte",
        n if is_extended(n) => "integer",
        _ => return None,
    };
    let q = Quantity::parse(quantity)?;
    let value = if unit == "core" || owner == Owner::Node { q.milli_float() } else { q.whole() };
    Some((sanitize(name), unit, value))
}

/// An extended resource: `<domain>/<name>`, not in the `kubernetes.io` namespace, and a valid
/// qualified name once prefixed with `requests.` (as the API's quota rules require).
fn is_extended(name: &str) -> bool {
    if !name.contains('/') || name.contains("kubernetes.io/") || name.starts_with("requests.") {
        return false;
    }
    let Some((prefix, local)) = name.split_once('/') else { return false };
    let prefix = format!("requests.{prefix}");
    let dns_label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    prefix.len() <= 253
        && prefix.split('.').all(dns_label)
        && !local.is_empty()
        && local.len() <= 63
        && alnum(local.as_bytes()[0])
        && alnum(local.as_bytes()[local.len() - 1])
        && local.bytes().all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// A Kubernetes quantity held exactly: `digits * 1024^binary * 10^exp10`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Quantity {
    digits: i128,
    binary: i32,
    exp10: i32,
}

/// The most milli-units kube-state-metrics reports as milli-units (`resource.MaxMilliValue`).
const MAX_MILLI_VALUE: i128 = (i64::MAX / 1000) as i128;

impl Quantity {
    /// `128Mi`, `250m`, `1.5`, `2e3`, `1G`, `-1`.
    fn parse(q: &str) -> Option<Quantity> {
        let q = q.trim();
        let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
        let (number, suffix) = q.split_at(split);
        let (negative, number) = match number.as_bytes().first() {
            Some(b'-') => (true, &number[1..]),
            Some(b'+') => (false, &number[1..]),
            _ => (false, number),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() || !(int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())) {
            return None;
        }
        // Leading zeros do not count toward the precision kept; 38 digits fit an i128.
        let all = format!("{int}{frac}");
        let all = all.trim_start_matches('0');
        if all.len() > 36 {
            return None;
        }
        let mut digits: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
        if negative {
            digits = -digits;
        }
        let (binary, exp10) = match suffix {
            "" => (0, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (1, 0),
            "Mi" => (2, 0),
            "Gi" => (3, 0),
            "Ti" => (4, 0),
            "Pi" => (5, 0),
            "Ei" => (6, 0),
            s if s.starts_with(['e', 'E']) => (0, s[1..].parse::<i32>().ok()?),
            _ => return None,
        };
        Some(Quantity { digits, binary, exp10: exp10 - frac.len() as i32 })
    }

    /// The value times `10^scale`, rounded up away from zero; `None` when it does not fit.
    fn scaled(&self, scale: i32) -> Option<i128> {
        let mut v = self.digits.checked_mul(1024i128.checked_pow(self.binary as u32)?)?;
        let exp = self.exp10 + scale;
        if exp >= 0 {
            v = v.checked_mul(10i128.checked_pow(exp as u32)?)?;
        } else {
            let Some(div) = 10i128.checked_pow((-exp) as u32) else { return Some(0) };
            let (q, r) = (v / div, v % div);
            v = if r > 0 {
                q + 1
            } else if r < 0 {
                q - 1
            } else {
                q
            };
        }
        Some(v)
    }

    fn approx(&self) -> f64 {
        self.digits as f64 * 1024f64.powi(self.binary) * 10f64.powi(self.exp10)
    }

    /// `Value()`: whole units, rounded up.
    fn whole(&self) -> f64 {
        self.scaled(0).map(|v| v as f64).unwrap_or_else(|| self.approx())
    }

    /// Milli-units, rounded up, over 1000; whole units past what 64-bit milli-units hold.
    fn milli_float(&self) -> f64 {
        match self.scaled(0) {
            Some(v) if v <= MAX_MILLI_VALUE => match self.scaled(3) {
                Some(m) => m as f64 / 1000.0,
                None => v as f64,
            },
            Some(v) => v as f64,
            None => self.approx(),
        }
    }
}

/// A Kubernetes quantity (`128Mi`, `250m`, `1.5`, `2e3`, `1G`) as a number, at milli precision
/// (rounded up).
pub fn parse_quantity(q: &str) -> Option<f64> {
    Quantity::parse(q).map(|q| q.milli_float())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_the_api_server_reads_them() {
        for (q, want) in [
            ("250m", 0.25),
            ("2", 2.0),
            ("1.5", 1.5),
            ("128Mi", 134_217_728.0),
            ("1Gi", 1_073_741_824.0),
            ("1G", 1e9),
            ("500k", 5e5),
            ("2e3", 2000.0),
            ("110", 110.0),
            ("3800m", 3.8),
            ("5e-1", 0.5),
            ("1.5Ki", 1536.0),
            // Milli precision, rounded up away from zero (`MilliValue()`).
            ("100n", 0.001),
            ("1500u", 0.002),
            ("-100n", -0.001),
            ("0", 0.0),
        ] {
            let got = parse_quantity(q).unwrap();
            assert!((got - want).abs() < 1e-12 * want.abs().max(1.0), "{q}: {got} != {want}");
        }
        for bad in ["", "Mi", "1Xi", "abc", "1.2.3", "1+2", "."] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
        // Past what 64-bit milli-units hold: whole units.
        assert_eq!(parse_quantity("10P"), Some(1e16));
        assert_eq!(parse_quantity("9P"), Some(9e15));
    }

    /// One row per resource kind kube-state-metrics distinguishes: (owner, name, quantity,
    /// expected (label, unit, value) or not reported).
    #[test]
    fn resource_labels_units_and_values_follow_kube_state_metrics() {
        use Owner::{Container as C, Node as N};
        type Row = (Owner, &'static str, &'static str, Option<(&'static str, &'static str, f64)>);
        let rows: &[Row] = &[
            (C, "cpu", "100m", Some(("cpu", "core", 0.1))),
            (C, "cpu", "100n", Some(("cpu", "core", 0.001))),
            (C, "memory", "1Ki", Some(("memory", "byte", 1024.0))),
            // Containers: whole units, rounded up (`Value()`).
            (C, "memory", "1500m", Some(("memory", "byte", 2.0))),
            (C, "ephemeral-storage", "1k", Some(("ephemeral_storage", "byte", 1000.0))),
            (C, "storage", "1", Some(("storage", "byte", 1.0))),
            (C, "hugepages-2Mi", "0", Some(("hugepages_2Mi", "byte", 0.0))),
            (C, "attachable-volumes-aws-ebs", "39", Some(("attachable_volumes_aws_ebs", "byte", 39.0))),
            (C, "nvidia.com/gpu", "1", Some(("nvidia_com_gpu", "integer", 1.0))),
            (C, "pods", "1", None),
            (C, "example.kubernetes.io/thing", "1", None),
            (C, "unknown", "1", None),
            // Nodes: `pods` too, and every value at milli precision.
            (N, "pods", "110", Some(("pods", "integer", 110.0))),
            (N, "memory", "1500m", Some(("memory", "byte", 1.5))),
            (N, "cpu", "3800m", Some(("cpu", "core", 3.8))),
            (N, "hugepages-1Gi", "2Gi", Some(("hugepages_1Gi", "byte", 2.0 * 1024f64.powi(3)))),
            (N, "example.com/dongle", "2500m", Some(("example_com_dongle", "integer", 2.5))),
            (N, "kubernetes.io/batch", "1", None),
            (N, "requests.example.com/x", "1", None),
            (N, "example.com/Bad_", "1", None),
            (N, "unknown", "1", None),
        ];
        for (owner, name, q, want) in rows {
            let got = resource_sample(*owner, name, q);
            let want = want.map(|(l, u, v)| (l.to_string(), u, v));
            assert_eq!(got, want, "{owner:?} {name} {q}");
        }
    }
}
