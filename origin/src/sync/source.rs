//! Where the sync reads customers: the CRM's paged list (`GET /customers`
//! without `phone`, docs/design.md §3), or a JSON Lines export of the same
//! records for a CRM without one.

use std::path::Path;
use std::time::Duration;

use failsoft_shared::error_class::Verdict;
use failsoft_shared::sync::ListedCustomer;
use tokio::io::{AsyncBufReadExt, BufReader};

use failsoft_shared::mapping::{ListPage, Mapping, NextPage, NotAList};

use crate::deliver::crm::{Crm, Reply};

/// Bound on one page's request, body included.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// The correlationId the sync's calls carry, so a CRM's logs say what they were.
pub const SYNC_ID: &str = failsoft_shared::mapping::LIST_ID;

/// One page of the list, or one chunk of a file.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records that parsed, each with its place (record index on a
    /// page, or line number in a file).
    pub customers: Vec<(u64, ListedCustomer)>,
    /// Places of records that did not parse at all.
    pub unreadable: Vec<u64>,
    /// The next page's cursor; `None` after the last page (or a file chunk).
    pub next_cursor: Option<String>,
    /// Bytes of the source read so far (a file's progress).
    pub bytes_read: u64,
}

/// Why a page could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The CRM is down, slow, throttling or failing: try again later.
    #[error("the CRM could not answer the list ({0})")]
    Unavailable(String),
    /// The CRM has no list (404, 405, 501): a configuration fault.
    #[error("the CRM has no customer list (HTTP {0}): GET /customers without phone is not offered")]
    NoList(u16),
    /// The CRM refused the request (another 4xx): a contract fault.
    #[error("the CRM refused the list request (HTTP {0})")]
    Refused(u16),
    /// The answer is not the list's shape.
    #[error("the answer is not the list's shape: {0}")]
    NotAList(&'static str),
}

/// The CRM's paged list, through its mapping (`list_customers`).
#[derive(Clone)]
pub struct CrmList {
    crm: Crm,
    page_size: u32,
}

/// How a stored cursor names the next page: the mapping's `next_page` URL
/// or its `next_cursor` value (a cursor stored before either, bare, is a
/// `next_cursor`).
const URL_CURSOR: &str = "url:";
const VALUE_CURSOR: &str = "cursor:";

impl CrmList {
    pub fn new(crm: Crm, page_size: u32) -> Self {
        Self { crm, page_size }
    }

    /// One page: everything changed at or after `since_ms` (all when
    /// `None`), from `cursor`. The reply is handed back too, so the worker's
    /// breaker hears of a CRM that is down.
    pub async fn page(&self, since_ms: Option<u64>, cursor: Option<&str>) -> (Result<Batch, PageError>, Reply) {
        let page = match cursor {
            None => ListPage::First,
            Some(c) => match c.strip_prefix(URL_CURSOR) {
                Some(url) => ListPage::Url(url),
                None => ListPage::Cursor(c.strip_prefix(VALUE_CURSOR).unwrap_or(c)),
            },
        };
        let reply = self.crm.list_page(since_ms, self.page_size, page, PAGE_DEADLINE).await;
        let outcome = match (reply.verdict, reply.status) {
            (Verdict::Success, _) => read_page(self.crm.mapping(), self.crm.base(), &reply.body),
            (_, Some(status @ (404 | 405 | 501))) => Err(PageError::NoList(status)),
            (_, Some(status @ (400..=499))) if status != 408 && status != 429 => Err(PageError::Refused(status)),
            (_, status) => Err(PageError::Unavailable(status.map_or("no answer".to_owned(), |s| format!("HTTP {s}")))),
        };
        (outcome, reply)
    }
}

/// A page's body as the mapping reads it.
pub fn read_page(mapping: &Mapping, base: &str, body: &[u8]) -> Result<Batch, PageError> {
    let page = mapping.read_list(base, body).map_err(|e| match e {
        NotAList::NotJson => PageError::NotAList("not JSON"),
        NotAList::Shape => PageError::NotAList("not the mapping's list (list_customers.answer.items)"),
        NotAList::ForeignNextPage => PageError::NotAList("its next page is on another origin than the CRM's"),
    })?;
    let next_cursor = page.next.map(|next| match next {
        NextPage::Url(url) => format!("{URL_CURSOR}{url}"),
        NextPage::Cursor(value) => format!("{VALUE_CURSOR}{value}"),
    });
    Ok(Batch { customers: page.customers, unreadable: page.unreadable, next_cursor, bytes_read: 0 })
}

/// A JSON Lines export: one customer per line, as the list gives them.
pub struct FileSource {
    lines: tokio::io::Split<BufReader<tokio::fs::File>>,
    line: u64,
    bytes: u64,
    chunk: usize,
    done: bool,
}

/// Longest line read; a longer one is unreadable (and skipped whole).
const MAX_LINE_BYTES: usize = 64 * 1024;

impl FileSource {
    pub async fn open(path: &Path, chunk: usize) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(path).await?;
        Ok(Self { lines: BufReader::new(file).split(b'\n'), line: 0, bytes: 0, chunk, done: false })
    }

    /// The next chunk of lines; `None` at the end of the file. A line that
    /// is not a customer (or not UTF-8) is unreadable, by line number.
    pub async fn next(&mut self) -> std::io::Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Batch::default();
        while batch.customers.len() + batch.unreadable.len() < self.chunk {
            let Some(line) = self.lines.next_segment().await? else {
                self.done = true;
                break;
            };
            self.line += 1;
            self.bytes += line.len() as u64 + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match (line.len() <= MAX_LINE_BYTES).then(|| serde_json::from_slice::<ListedCustomer>(&line)) {
                Some(Ok(listed)) => batch.customers.push((self.line, listed)),
                _ => batch.unreadable.push(self.line),
            }
        }
        batch.bytes_read = self.bytes;
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_page(body: &[u8]) -> Result<Batch, PageError> {
        read_page(crate::deliver::crm::generic(), "http://crm", body)
    }

    #[test]
    fn a_page_is_read_record_by_record() {
        let body = br#"{"customers":[{"phone":"+15550000001","customerId":"C-1","tier":"vip","updatedAt":"2026-01-01T00:00:00Z","deleted":false},7,{"phone":"+15550000002","deleted":true}],"nextCursor":"abc"}"#;
        let batch = parse_page(body).unwrap();
        assert_eq!(batch.customers.len(), 2);
        assert_eq!(batch.unreadable, [1]);
        assert_eq!(batch.next_cursor.as_deref(), Some("cursor:abc"));
        assert!(batch.customers[1].1.deleted);
        let last = parse_page(br#"{"customers":[],"nextCursor":null}"#).unwrap();
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn a_page_that_is_not_the_list_is_refused_whole() {
        assert_eq!(parse_page(b"<html>").unwrap_err(), PageError::NotAList("not JSON"));
        let refused = PageError::NotAList("not the mapping's list (list_customers.answer.items)");
        assert_eq!(parse_page(br#"{"customers":{}}"#).unwrap_err(), refused);
        // A page with no list at all is an empty page (a vendor's last page
        // may leave it out), and a number as a cursor reads as its text.
        assert_eq!(parse_page(br#"{"items":[]}"#).unwrap().customers.len(), 0);
        assert_eq!(parse_page(br#"{"customers":[],"nextCursor":5}"#).unwrap().next_cursor.as_deref(), Some("cursor:5"));
    }

    #[tokio::test]
    async fn a_file_is_read_in_chunks_and_broken_lines_are_numbered() {
        let dir = std::env::temp_dir().join(format!("failsoft-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("export.jsonl");
        let mut text = String::new();
        text.push_str("{\"phone\":\"+15550000001\",\"customerId\":\"C-1\"}\n");
        text.push_str("not json\n\n");
        text.push_str("{\"phone\":\"\u{fffd}\"}\n");
        text.push_str("{\"phone\":\"+15550000002\",\"customerId\":\"C-2\"}\n");
        text.push_str("{\"phone\":\"+15550000003\",\"deleted\":true}\n");
        let mut bytes = text.into_bytes();
        let bad = bytes.windows(3).position(|w| w == "\u{fffd}".as_bytes()).unwrap();
        bytes.splice(bad..bad + 3, [0xff, 0xfe]);
        std::fs::write(&path, bytes).unwrap();
        let mut file = FileSource::open(&path, 2).await.unwrap();
        let first = file.next().await.unwrap().unwrap();
        assert_eq!((first.customers.len(), first.unreadable.clone()), (1, vec![2]));
        let second = file.next().await.unwrap().unwrap();
        assert_eq!(second.unreadable, [4], "not UTF-8: unreadable, and the file goes on");
        assert_eq!(second.customers.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [5]);
        let third = file.next().await.unwrap().unwrap();
        assert_eq!(third.customers.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [6], "blank lines count");
        assert!(file.next().await.unwrap().is_none(), "the end");
        std::fs::remove_dir_all(dir).ok();
    }
}
