//! Reading request JSON the way Docker does: a missing key, `null`, `[]`, `{}` and `""` all
//! mean "not set", and a wrongly typed value reads as not set rather than panicking.

use serde_json::Value;

pub trait Fields {
    /// A list of strings (a lone string counts as a list of one).
    fn list(&self, key: &str) -> Vec<String>;
    /// Like `list`, but tells "not given" (`None`) from "given empty" (`Some([])`); `[""]`
    /// counts as given empty (`--entrypoint ""`).
    fn opt_list(&self, key: &str) -> Option<Vec<String>>;
    fn opt_str(&self, key: &str) -> Option<&str>;
    fn bool(&self, key: &str) -> bool;
    fn u64(&self, key: &str) -> Option<u64>;
    fn i64(&self, key: &str) -> Option<i64>;
    /// The objects of a list.
    fn objects(&self, key: &str) -> Vec<&Value>;
    /// A string → string map.
    fn map(&self, key: &str) -> Vec<(String, String)>;
    /// An object's entries.
    fn map_values(&self, key: &str) -> Vec<(String, Value)>;
    /// This value's own entries, if it is an object.
    fn map_values_owned(&self) -> Vec<(String, Value)>;
}

impl Fields for Value {
    fn list(&self, key: &str) -> Vec<String> {
        self.opt_list(key).unwrap_or_default()
    }

    fn opt_list(&self, key: &str) -> Option<Vec<String>> {
        match self.get(key)? {
            Value::Array(a) => {
                let v: Vec<String> = a
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect();
                if v.len() == 1 && v[0].is_empty() {
                    Some(Vec::new())
                } else {
                    Some(v)
                }
            }
            Value::String(s) if !s.is_empty() => Some(vec![s.clone()]),
            _ => None,
        }
    }

    fn opt_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str().filter(|s| !s.is_empty())
    }

    fn bool(&self, key: &str) -> bool {
        self.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn u64(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    }

    fn i64(&self, key: &str) -> Option<i64> {
        self.get(key)?.as_i64()
    }

    fn objects(&self, key: &str) -> Vec<&Value> {
        self.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|v| v.is_object()).collect())
            .unwrap_or_default()
    }

    fn map(&self, key: &str) -> Vec<(String, String)> {
        self.get(key)
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn map_values_owned(&self) -> Vec<(String, Value)> {
        self.as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn map_values(&self, key: &str) -> Vec<(String, Value)> {
        self.get(key)
            .and_then(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_empty_and_missing_are_the_same() {
        let v =
            json!({"A": null, "B": [], "C": {}, "D": "", "E": ["x"], "F": "y", "G": 3, "H": [""]});
        for k in ["A", "B", "C", "D", "Z"] {
            assert!(v.list(k).is_empty(), "{k}");
            assert_eq!(v.opt_str(k), None, "{k}");
            assert!(v.map(k).is_empty(), "{k}");
        }
        assert_eq!(v.opt_list("A"), None);
        assert_eq!(v.opt_list("B"), Some(vec![]));
        assert_eq!(v.opt_list("H"), Some(vec![]));
        assert_eq!(v.list("E"), ["x"]);
        assert_eq!(v.list("F"), ["y"]);
        assert_eq!(v.u64("G"), Some(3));
        assert!(!v.bool("G"));
        assert!(json!(null).list("x").is_empty());
    }
}
