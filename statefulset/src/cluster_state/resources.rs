//! Resource quantities as kube-state-metrics reports them: the `resource` label is the resource
//! name with every character outside `[a-zA-Z0-9_]` replaced by `_` (`ephemeral-storage` ->
//! `ephemeral_storage`, `nvidia.com/gpu` -> `nvidia_com_gpu`), the `unit` label is `core` for CPU,
//! `byte` for memory, storage, hugepages and attachable volumes, `integer` for pods and
//! extended resources; the value is in that unit (CPU in cores: `250m` -> 0.25).

/// The (resource label, unit label, value) of one quantity; `None` when it does not parse.
pub fn resource_sample(name: &str, quantity: &str) -> Option<(String, &'static str, f64)> {
    let value = parse_quantity(quantity)?;
    let unit = match name {
        "cpu" => "core",
        "memory" | "storage" | "ephemeral-storage" => "byte",
        "pods" => "integer",
        n if n.starts_with("hugepages-") || n.starts_with("attachable-volumes-") => "byte",
        _ => "integer",
    };
    Some((sanitize(name), unit, value))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// A Kubernetes quantity (`128Mi`, `250m`, `1.5`, `2e3`, `1G`) as a number.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    // Fractions divide (as `MilliValue() / 1000` does): 3800m is exactly 3.8.
    let (mul, div) = match suffix {
        "" => (1.0, 1.0),
        "n" => (1.0, 1e9),
        "u" => (1.0, 1e6),
        "m" => (1.0, 1e3),
        "k" => (1e3, 1.0),
        "M" => (1e6, 1.0),
        "G" => (1e9, 1.0),
        "T" => (1e12, 1.0),
        "P" => (1e15, 1.0),
        "E" => (1e18, 1.0),
        "Ki" => (1024.0, 1.0),
        "Mi" => (1024f64.powi(2), 1.0),
        "Gi" => (1024f64.powi(3), 1.0),
        "Ti" => (1024f64.powi(4), 1.0),
        "Pi" => (1024f64.powi(5), 1.0),
        "Ei" => (1024f64.powi(6), 1.0),
        s if s.starts_with(['e', 'E']) => {
            let exp = s[1..].parse::<i32>().ok()?;
            if exp >= 0 {
                (10f64.powi(exp), 1.0)
            } else {
                (1.0, 10f64.powi(-exp))
            }
        }
        _ => return None,
    };
    let v = number * mul / div;
    v.is_finite().then_some(v)
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
            ("100n", 1e-7),
            ("2e3", 2000.0),
            ("110", 110.0),
            ("3800m", 3.8),
            ("5e-1", 0.5),
        ] {
            let got = parse_quantity(q).unwrap();
            assert!((got - want).abs() < 1e-12 * want.max(1.0), "{q}: {got} != {want}");
        }
        for bad in ["", "Mi", "1Xi", "abc"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn resource_labels_and_units_follow_kube_state_metrics() {
        let r = |n, q| resource_sample(n, q).unwrap();
        assert_eq!(r("cpu", "100m"), ("cpu".into(), "core", 0.1));
        assert_eq!(r("memory", "1Ki"), ("memory".into(), "byte", 1024.0));
        assert_eq!(r("ephemeral-storage", "1k"), ("ephemeral_storage".into(), "byte", 1000.0));
        assert_eq!(r("pods", "110"), ("pods".into(), "integer", 110.0));
        assert_eq!(r("hugepages-2Mi", "0"), ("hugepages_2Mi".into(), "byte", 0.0));
        assert_eq!(r("nvidia.com/gpu", "1"), ("nvidia_com_gpu".into(), "integer", 1.0));
    }
}
