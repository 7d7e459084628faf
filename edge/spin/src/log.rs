//! The facade's `tracing` events as JSON lines on stderr, which Spin keeps
//! as the component's log. A dozen lines instead of `tracing-subscriber`,
//! whose filter and formatter would be most of the component's size.
//! `FAILSOFT_LOG` is one level (`error` … `trace`, or `off`); default `info`.

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

struct StderrJson(LevelFilter);

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

impl Subscriber for StderrJson {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0 >= *metadata.level()
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.0)
    }
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Map::new());
        fields.0.insert("level".to_owned(), event.metadata().level().as_str().into());
        fields.0.insert("target".to_owned(), event.metadata().target().into());
        event.record(&mut fields);
        eprintln!("{}", Value::Object(fields.0));
    }
    // The facade opens no spans.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Installs the logger once per instance (an instance serves one request).
pub fn init(setting: Option<String>) {
    let level = setting.and_then(|s| s.trim().parse::<LevelFilter>().ok()).unwrap_or(LevelFilter::INFO);
    tracing::subscriber::set_global_default(StderrJson(level)).ok();
}
