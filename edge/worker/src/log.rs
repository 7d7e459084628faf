//! The core's `tracing` events on the Workers console (`wrangler tail`,
//! Workers Logs), one line per event, at the console's matching level.
//! `FAILSOFT_LOG` is a level (`info` by default).

use std::io;

use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

pub fn init(filter: Option<&str>) {
    let level = filter.and_then(|f| f.trim().parse::<LevelFilter>().ok()).unwrap_or(LevelFilter::INFO);
    // The runtime's clock is the request's, not the log's: no timestamps
    // (the console adds its own), and `SystemTime` does not exist here.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_writer(Console)
        .try_init();
}

struct Console;

/// One event's text, written to the console when dropped.
struct Line {
    level: Level,
    text: Vec<u8>,
}

impl io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        let text = text.trim_end();
        match self.level {
            Level::ERROR => worker::console_error!("{text}"),
            Level::WARN => worker::console_warn!("{text}"),
            _ => worker::console_log!("{text}"),
        }
    }
}

impl<'a> MakeWriter<'a> for Console {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { level: Level::INFO, text: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line { level: *meta.level(), text: Vec::new() }
    }
}
