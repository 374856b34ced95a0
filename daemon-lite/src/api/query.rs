//! Query strings and Docker's `filters` parameter.

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::{ApiError, ApiResult};

/// A request's query parameters, percent-decoded.
#[derive(Debug, Default)]
pub struct Query(BTreeMap<String, String>);

fn decode(s: &str) -> String {
    decode_with(s, true)
}

/// A path segment, percent-decoded (`+` stays a plus).
pub fn decode_segment(s: &str) -> String {
    decode_with(s, false)
}

fn decode_with(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = BTreeMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(decode(k), decode(v));
        }
        Query(map)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Docker's booleans: `1`, `true`, `True` (and a bare `?flag`) are true.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True" | "TRUE" | ""))
    }

    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// `filters={"status":["running"],"label":["a=b"]}` (or the older `{"status":{"running":true}}`).
    pub fn filters(&self) -> ApiResult<BTreeMap<String, Vec<String>>> {
        let Some(raw) = self.get("filters").filter(|f| !f.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        let value: Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
        let mut out = BTreeMap::new();
        for (k, v) in value.as_object().into_iter().flatten() {
            let values: Vec<String> = match v {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                Value::Object(o) => o
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => return Err(ApiError::bad_request(format!("invalid filter {k:?}"))),
            };
            out.insert(k.clone(), values);
        }
        Ok(out)
    }
}

/// A time as `since`/`until` take it: Unix seconds (with a fraction), or RFC 3339; as
/// nanoseconds since the epoch.
pub fn parse_time(s: &str) -> ApiResult<u128> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e9) as u128);
    }
    humantime::parse_rfc3339_weak(s)
        .or_else(|_| humantime::parse_rfc3339(s))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        })
        .map_err(|_| ApiError::bad_request(format!("invalid time {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_filters_take_both_shapes() {
        let q = Query::parse(Some(
            "a=1&name=%2Fweb+1&all=true&filters=%7B%22status%22%3A%5B%22running%22%5D%7D&bad=%zz",
        ));
        assert_eq!(q.get("name"), Some("/web 1"));
        assert!(q.flag("all"));
        assert!(!q.flag("missing"));
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.filters().unwrap()["status"], ["running"]);
        let old = Query::parse(Some(
            "filters=%7B%22status%22%3A%7B%22exited%22%3Atrue%7D%7D",
        ));
        assert_eq!(old.filters().unwrap()["status"], ["exited"]);
        assert!(Query::parse(Some("filters=%7B")).filters().is_err());
        assert!(Query::parse(Some("t=x")).int("t").is_err());
    }

    #[test]
    fn times_as_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:02Z").unwrap(), 2_000_000_000);
        assert!(parse_time("yesterday").is_err());
    }
}
