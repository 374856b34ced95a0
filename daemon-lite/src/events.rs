//! The event stream (`/events`): what happened to which object, kept for `since` replays and
//! broadcast to followers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How many past events `since` can reach.
const KEPT: usize = 1024;

#[derive(Clone, Debug)]
pub struct Event {
    pub typ: &'static str,
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    pub time_nano: u128,
}

impl Event {
    /// Docker's JSON shape, with the legacy `status`/`id`/`from` fields the CLI still reads.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.typ,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attributes},
            "scope": "local",
            "time": (self.time_nano / 1_000_000_000) as u64,
            "timeNano": self.time_nano as u64,
        });
        if self.typ == "container" {
            v["status"] = json!(self.action);
            v["id"] = json!(self.id);
            if let Some(image) = self.attributes.get("image") {
                v["from"] = json!(image);
            }
        }
        v
    }
}

pub struct Events {
    past: Mutex<VecDeque<Event>>,
    live: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            past: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(256).0,
        }
    }
}

impl Events {
    pub fn publish(
        &self,
        typ: &'static str,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let time_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = Event {
            typ,
            action: action.to_string(),
            id: id.to_string(),
            attributes,
            time_nano,
        };
        let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        if past.len() == KEPT {
            past.pop_front();
        }
        past.push_back(event.clone());
        let _ = self.live.send(event);
    }

    /// Past events at or after `since_nano`, and a receiver for what comes next (subscribed
    /// under the same lock, so nothing falls between the two).
    pub fn subscribe(&self, since_nano: Option<u128>) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.live.subscribe();
        let replay = match since_nano {
            Some(t) => past.iter().filter(|e| e.time_nano >= t).cloned().collect(),
            None => Vec::new(),
        };
        (replay, rx)
    }
}

/// Event filters: `type`, `event`/`action`, `container`, `image`, `label` (Docker's names).
pub struct Filter(pub BTreeMap<String, Vec<String>>);

impl Filter {
    pub fn matches(&self, e: &Event) -> bool {
        self.0.iter().all(|(key, wanted)| {
            wanted.is_empty()
                || wanted.iter().any(|w| match key.as_str() {
                    "type" => e.typ == w,
                    "event" | "action" => e.action == *w || e.action.starts_with(&format!("{w}:")),
                    "container" => {
                        e.typ == "container"
                            && (e.id.starts_with(w.as_str()) || e.attributes.get("name") == Some(w))
                    }
                    "image" => e.attributes.get("image") == Some(w) || e.id == *w,
                    "label" => match w.split_once('=') {
                        Some((k, v)) => e.attributes.get(k).is_some_and(|x| x == v),
                        None => e.attributes.contains_key(w),
                    },
                    _ => true,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_then_live_and_filters() {
        let events = Events::default();
        let attrs = BTreeMap::from([("name".to_string(), "web".to_string())]);
        events.publish("container", "create", "abc", attrs.clone());
        let (past, mut rx) = events.subscribe(Some(0));
        assert_eq!(past.len(), 1);
        events.publish("container", "start", "abc", attrs);
        let next = rx.try_recv().unwrap();
        assert_eq!(next.action, "start");
        let v = next.to_json();
        assert_eq!(v["Actor"]["Attributes"]["name"], "web");
        assert_eq!(v["status"], "start");
        let f = Filter(BTreeMap::from([
            ("container".to_string(), vec!["web".to_string()]),
            ("event".to_string(), vec!["start".to_string()]),
        ]));
        assert!(f.matches(&next));
        assert!(!f.matches(&past[0]));
    }
}
